package control

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCtlUpgrade: ctl upgrade sends an absolute path (the supervisor runs
// elsewhere), and takes the answer written on the connection's duplicate,
// as the re-executed supervisor writes it.
func TestCtlUpgrade(t *testing.T) {
	checkLeaks(t)
	paths := make(chan string, 2)
	_, path := serve(t, HandlerFunc(func(ctx context.Context, req Request) Response {
		paths <- req.Path
		f, err := ConnFile(ctx)
		if err != nil {
			return Response{Error: err.Error()}
		}
		if err := Answer(f, Response{OK: true, Message: "upgraded from v1 to v2"}); err != nil {
			return Response{Error: err.Error()}
		}
		<-ctx.Done() // the client hangs up once answered
		return Response{Error: "answered twice"}
	}), nil)
	wd, _ := os.Getwd()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"upgrade", "bin/supervisor"}, filepath.Join(wd, "bin/supervisor")},
		{[]string{"upgrade"}, ""},
	} {
		code, out, errOut := ctlRun(t, t.Context(), append([]string{"-control", path}, tc.args...)...)
		if code != 0 || out != "upgraded from v1 to v2\n" || errOut != "" {
			t.Errorf("ctl %v: exit %d, stdout %q, stderr %q", tc.args, code, out, errOut)
		}
		if have := <-paths; have != tc.want {
			t.Errorf("ctl %v: path %q, want %q", tc.args, have, tc.want)
		}
	}
	code, _, errOut := ctlRun(t, t.Context(), "-control", path, "upgrade", "a", "b")
	if code != 2 || !strings.Contains(errOut, `"b"`) {
		t.Errorf("upgrade a b: exit %d, stderr %q", code, errOut)
	}
}

func TestConnFileOutsideARequest(t *testing.T) {
	if _, err := ConnFile(t.Context()); err == nil {
		t.Fatal("ConnFile without a connection: no error")
	}
}

// TestInherit: a server made from the listening socket of another (as a
// re-executed supervisor inherits it) serves on the same path.
func TestInherit(t *testing.T) {
	checkLeaks(t)
	path := filepath.Join(t.TempDir(), "ctl.sock")
	first, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	f, err := first.Listener().File()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Inherit(path, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(statusHandler(testStatus), nil) }()
	resp, err := Call(t.Context(), path, Request{Cmd: CmdStatus})
	if err != nil || !resp.OK || resp.Status.PID != testStatus.PID {
		t.Fatalf("status through the inherited socket: %v %+v", err, resp)
	}
	srv.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket file left after Close: %v", err)
	}
}

func TestInheritNotASocket(t *testing.T) {
	checkLeaks(t)
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Inherit(filepath.Join(t.TempDir(), "ctl.sock"), f, nil); err == nil {
		t.Fatal("Inherit of /dev/null: no error")
	}
}

func TestStatusShowsVersion(t *testing.T) {
	st := *testStatus
	st.Version, st.Upgrades, st.AcceptGapMS = "v2", 1, 6.2
	var b bytes.Buffer
	if err := WriteStatus(&b, &st); err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(b.String(), "\n")
	if want := "workers=2 version=v2 upgrades=1 accept_gap=6.20ms"; !strings.HasSuffix(first, want) {
		t.Errorf("header %q, want it to end with %q", first, want)
	}
}
