package cluster

import (
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// TestServeStopsGracefullyOnSIGTERM: run standalone, Serve takes SIGTERM
// as the stop signal and lets a request in progress finish before it
// returns nil.
func TestServeStopsGracefullyOnSIGTERM(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		io.WriteString(w, "done")
	})
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- Serve(&http.Server{Handler: mux}, ln) }()
	// Serving means Serve has caught SIGTERM: it does so before it serves.
	client := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get(url + "/ok")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	slow := make(chan string, 1)
	go func() {
		resp, err := client.Get(url + "/slow")
		if err != nil {
			slow <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		slow <- string(b)
	}()
	<-started
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The stop has begun once the listener is closed: only then let the
	// request in progress finish.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting 10s after SIGTERM")
		}
	}
	close(release)
	if got := <-slow; got != "done" {
		t.Errorf("request in progress at SIGTERM got %q, want done", got)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after SIGTERM")
	}
}
