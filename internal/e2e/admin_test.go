package e2e

import (
	"crypto/tls"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/admin/admintest"
	"github.com/prefork/prefork/internal/proctest"
)

// The admin listener is refused at start, exit 2 naming the flag, where it
// would be open to the network or its secrets to other users.
func TestAdminBadFlags(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open-token")
	if err := os.WriteFile(open, []byte(strings.Repeat("a", 40)), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o644) // past the umask
	good := filepath.Join(dir, "token")
	if err := os.WriteFile(good, []byte(strings.Repeat("a", 40)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		flag string
		says string
	}{
		{[]string{"-admin", "0.0.0.0:0"}, "-admin", "loopback"},
		{[]string{"-admin", ":0"}, "-admin", "loopback"},
		{[]string{"-admin", "[::]:0"}, "-admin", "loopback"},
		{[]string{"-admin", "example.com:9000", "-admin-actions"}, "-admin", "loopback"},
		{[]string{"-admin", "127.0.0.1:0", "-admin-auth", open}, "-admin-auth", "mode 0644"},
		{[]string{"-admin", "0.0.0.0:0", "-admin-auth", open}, "-admin-auth", "mode 0644"},
		{[]string{"-admin", "127.0.0.1:0", "-admin-auth", filepath.Join(dir, "missing")}, "-admin-auth", "no such file"},
		{[]string{"-admin-auth", good}, "-admin-auth", "needs -admin"},
		{[]string{"-admin", "127.0.0.1:0", "-admin-tls-cert", good}, "-admin-tls-cert", "needs -admin-tls-key"},
		{[]string{"-admin", "127.0.0.1:0", "-admin-tls-cert", good, "-admin-tls-key", good}, "-admin-tls-cert", "tls"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := append(tc.args, "-listen", "127.0.0.1:0", "-control", "none", "-workers", "1")
			out, err := osexec.Command(supervisorBin, args...).CombinedOutput()
			if code := exitCode(err); code != 2 {
				t.Fatalf("exit %d, want 2: %s", code, out)
			}
			// A certificate is read once the supervisor starts, after it
			// logged its listener: the error is the last line.
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			last := lines[len(lines)-1]
			if !strings.HasPrefix(last, "supervisor: ") || !strings.Contains(last, tc.flag) || !strings.Contains(last, tc.says) {
				t.Fatalf("want a last line naming %s and saying %q, have %q", tc.flag, tc.says, out)
			}
		})
	}
}

// With -admin-auth on a non-loopback address and TLS, the real supervisor
// answers 401 on every /api and /metrics path without the credential,
// refuses a token in the URL, and a SIGHUP makes it serve a renewed
// certificate while its workers reload.
func TestAdminAuthTLS(t *testing.T) {
	dir := t.TempDir()
	token := strings.Repeat("7f", 20)
	auth := filepath.Join(dir, "token")
	if err := os.WriteFile(auth, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := admintest.WriteCert(t, dir, 1)
	// All addresses, as a dashboard meant for other hosts listens; the
	// test still connects over loopback only.
	port := strings.Split(proctest.FreeAddr(t), ":")[1]
	s := startReady(t, "-workers", "1", "-admin", "0.0.0.0:"+port, "-admin-auth", auth,
		"-admin-tls-cert", certFile, "-admin-tls-key", keyFile, "-admin-actions")
	base := "https://127.0.0.1:" + port
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // the serial is checked below
		DisableKeepAlives: true,
	}}
	do := func(method, path, bearer string) int {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(`{"n":1}`))
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, p := range []struct{ method, path string }{
		{"GET", "/api/status"}, {"GET", "/api/history"}, {"GET", "/api/events"}, {"POST", "/api/reload"},
		{"POST", "/api/scale"}, {"GET", "/api/anything"}, {"GET", "/metrics"}, {"GET", "/metrics/"},
	} {
		if code := do(p.method, p.path, ""); code != http.StatusUnauthorized {
			t.Errorf("%s %s without the token: %d, want 401", p.method, p.path, code)
		}
	}
	if code := do("GET", "/api/status?access_token="+token, ""); code != http.StatusBadRequest {
		t.Errorf("token in the query string: %d, want 400", code)
	}
	for _, path := range []string{"/api/status", "/api/history", "/metrics", "/"} {
		if code := do("GET", path, token); code != http.StatusOK {
			t.Errorf("GET %s with the token: %d, want 200", path, code)
		}
	}
	serial := func() int64 {
		c, err := tls.Dial("tcp", "127.0.0.1:"+port, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if have := serial(); have != 1 {
		t.Fatalf("serial %d, want 1", have)
	}
	admintest.WriteCert(t, dir, 2)
	s.Signal(syscall.SIGHUP)
	proctest.Eventually(t, 10*time.Second, "the renewed certificate to be served", func() bool { return serial() == 2 })
	if code := do("GET", "/api/status", token); code != http.StatusOK {
		t.Fatalf("GET /api/status after SIGHUP: %d", code)
	}
}
