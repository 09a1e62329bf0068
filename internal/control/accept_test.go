package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// helperEMFILE serves on path, then uses up its fds: it lowers its
// RLIMIT_NOFILE and opens /dev/null until EMFILE, says "full", and closes
// them again when told "free" on stdin. It exits when stdin closes, 0 if
// Serve then returns nil. Its log goes to stderr.
func helperEMFILE(path string) int {
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.Lock(os.Stderr), zap.DebugLevel))
	s, err := Listen(path, log)
	if err != nil {
		fmt.Println(err)
		return 3
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(statusHandler(testStatus), nil) }()

	lim := syscall.Rlimit{Cur: 64, Max: 64}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Println("setrlimit:", err)
		return 3
	}
	var held []*os.File
	for range lim.Cur {
		f, err := os.Open(os.DevNull)
		if errors.Is(err, syscall.EMFILE) {
			break
		}
		if err != nil {
			fmt.Println(err)
			return 3
		}
		held = append(held, f)
	}
	fmt.Println("full")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() && in.Text() != "free" {
	}
	for _, f := range held {
		f.Close()
	}
	fmt.Println("freed")
	for in.Scan() { // until stdin closes
	}
	s.Close()
	select {
	case err := <-served:
		fmt.Println("served:", err)
		if err != nil {
			return 1
		}
	case <-time.After(10 * time.Second):
		fmt.Println("Serve did not return")
		return 1
	}
	return 0
}

// TestServeSurvivesEMFILE: a server out of fds keeps its socket and
// accepts the waiting client once fds are free again.
func TestServeSurvivesEMFILE(t *testing.T) {
	checkLeaks(t)
	path := filepath.Join(t.TempDir(), "ctl.sock")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logs := &lineWriter{lines: make(chan string, 1000)}
	h := startHelper(t, exe, emfileEnv+"="+path, -1, logs)
	defer h.stop(t, "served: <nil>")
	h.expect(t, "full")

	answered := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		r, err := Call(cctx, path, Request{Cmd: CmdStatus})
		if err == nil && !r.OK {
			err = errors.New(r.Error)
		}
		answered <- err
	}()
	for retries := 0; retries < 2; { // the backoff doubles: wait for two
		line := recv(t, logs.lines, "log line of a failed accept")
		if strings.Contains(line, "accept failed; retrying") && strings.Contains(line, "too many open files") {
			retries++
		}
	}
	select {
	case err := <-answered:
		t.Fatalf("answered while out of fds: %v", err)
	default:
	}
	io.WriteString(h.stdin, "free\n")
	h.expect(t, "freed")
	if err := recv(t, answered, "answer once fds are free"); err != nil {
		t.Errorf("status after EMFILE: %v", err)
	}
}
