package listener

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A Unix listener replaces only a stale socket file, refuses a live one
// and anything that is not a socket, and Remove leaves a file that took
// its place alone.
func TestBindUnix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.sock")
	spec, err := ParseSpec("web=unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	fo := FileOptions{Mode: 0o660, UID: -1, GID: -1}

	// A stale file: a socket nobody listens on.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	sock, err := Bind(spec, fo)
	if err != nil {
		t.Fatalf("stale socket file: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket file %v (%v), want mode 0660", fi.Mode(), err)
	}
	// It answers now: a second bind is refused, and the file stays.
	if _, err := Bind(spec, fo); err == nil || !strings.Contains(err.Error(), `listener "web" (unix:`+path+`): `+path+`: another server is listening on it`) {
		t.Errorf("live socket file: %v", err)
	}
	if _, err := net.Dial("unix", path); err != nil {
		t.Errorf("the live file was touched: %v", err)
	}
	sock.Close()
	sock.Remove()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket file still there after Remove: %v", err)
	}

	// Not a socket.
	os.WriteFile(path, []byte("x"), 0o600)
	if _, err := Bind(spec, fo); err == nil || !strings.Contains(err.Error(), "exists and is not a socket") {
		t.Errorf("regular file: %v", err)
	}
	os.Remove(path)

	// Another server's file in its place after ours: Remove keeps it.
	sock, err = Bind(spec, fo)
	if err != nil {
		t.Fatal(err)
	}
	sock.Close()
	os.Remove(path)
	other, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	sock.Remove()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("Remove took another server's socket file: %v", err)
	}

	missing, _ := ParseSpec("unix:" + filepath.Join(dir, "no", "such.sock"))
	if _, err := Bind(missing, fo); err == nil || !strings.Contains(err.Error(), "listener unix:"+dir+"/no/such.sock: ") {
		t.Errorf("missing directory: %v", err)
	}
}

// fd:N takes an inherited listening socket and refuses anything else.
func TestBindFD(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	spec := Spec{Name: "fd", Network: FD, FD: int(f.Fd())}
	if _, err := Bind(spec, FileOptions{UID: -1, GID: -1}); err == nil || !strings.Contains(err.Error(), "is not a listening socket") {
		t.Errorf("regular file as fd: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lf, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	spec.FD = int(lf.Fd())
	sock, err := Bind(spec, FileOptions{UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	if sock.Addr().Network() != "tcp" {
		t.Errorf("inherited socket's address %v", sock.Addr())
	}
}
