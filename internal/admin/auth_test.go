package admin

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/prefork/prefork/internal/admin/admintest"
	"github.com/prefork/prefork/internal/control"
)

const testToken = "0123456789abcdef0123456789abcdef"

func writeAuth(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "auth")
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return p
}

func basicUsers(t *testing.T, userPass ...string) string {
	t.Helper()
	b, err := os.ReadFile(admintest.WriteUsers(t, t.TempDir(), userPass...))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestLoadAuth(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
		want          string // in the error; "" for none
		scheme        string
	}{
		{"token", testToken + "\n", 0o600, "", "Bearer"},
		{"read-only token", "# comment\n" + testToken, 0o400, "", "Bearer"},
		{"users", basicUsers(t, "ops", "pw1", "dev", "pw2"), 0o600, "", "Basic"},
		{"world-readable", testToken, 0o644, "mode 0644", ""},
		{"group-readable", testToken, 0o640, "mode 0640", ""},
		{"short token", "secret", 0o600, "at least 32", ""},
		{"empty", "\n# nothing\n", 0o600, "no token", ""},
		{"not bcrypt", "ops:$2y$nothash\n" + "dev:x", 0o600, "not a bcrypt hash", ""},
		{"two tokens", testToken + "\n" + testToken, 0o600, "want NAME:BCRYPT-HASH", ""},
		{"duplicate user", basicUsers(t, "ops", "a", "ops", "b"), 0o600, "given twice", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := LoadAuth(writeAuth(t, tc.content, tc.mode))
			if tc.want == "" {
				if err != nil || a.Scheme() != tc.scheme {
					t.Fatalf("LoadAuth: %v, %v", a, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadAuth: %v, want an error with %q", err, tc.want)
			}
		})
	}
	if _, err := LoadAuth(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("LoadAuth of a missing file: no error")
	}
}

// protected is every path on the admin listener that needs a credential,
// including ones that do not exist.
var protected = []struct{ method, path string }{
	{"GET", "/api/status"}, {"GET", "/api/history"}, {"GET", "/api/events"},
	{"POST", "/api/reload"}, {"POST", "/api/scale"}, {"GET", "/api/nothing"}, {"GET", "/api/"},
	{"GET", "/metrics"}, {"GET", "/metrics/x"}, {"POST", "/metrics"},
}

func (f *fixture) do(t *testing.T, method, path string, header ...string) (int, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, f.base+path, strings.NewReader(`{"n":2}`))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

func TestAuthRequired(t *testing.T) {
	for _, tc := range []struct {
		name, file, good, bad, scheme string
	}{
		{"bearer", testToken, "Bearer " + testToken, "Bearer " + strings.Repeat("f", 32), "Bearer"},
		{"basic", basicUsers(t, "ops", "right horse"), "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:right horse")),
			"Basic " + base64.StdEncoding.EncodeToString([]byte("ops:wrong horse")), "Basic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := start(t, Options{Actions: true, AuthFile: writeAuth(t, tc.file, 0o600)})
			for _, p := range protected {
				code, h := f.do(t, p.method, p.path)
				if code != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), tc.scheme+" ") {
					t.Errorf("%s %s without a credential: %d %q, want 401 with a %s challenge", p.method, p.path, code, h.Get("WWW-Authenticate"), tc.scheme)
				}
			}
			// The page and its assets hold no secret: the page asks for
			// the credential.
			if code, body := get(t, f.base+"/"); code != http.StatusOK || !strings.Contains(body, `name="prefork-auth" content="`+tc.scheme+`"`) {
				t.Fatalf("GET /: %d\n%s", code, body)
			}
			if m := tokenRE.FindStringSubmatch(mustGet(t, f.base+"/")); m == nil || m[1] != "" {
				t.Fatalf("page with -admin-auth embeds a token: %v", m)
			}
			if code, h := f.do(t, "GET", "/api/status", PageHeader, "1"); code != http.StatusUnauthorized || h.Get("WWW-Authenticate") != "" {
				t.Fatalf("the page's own request: %d, challenge %q: want 401 without a challenge", code, h.Get("WWW-Authenticate"))
			}
			for _, path := range []string{"/api/status", "/api/history", "/metrics"} {
				if code, _ := f.do(t, "GET", path, "Authorization", tc.good); code != http.StatusOK {
					t.Errorf("GET %s with the credential: %d", path, code)
				}
			}
			// Actions need only the credential: no page token.
			for _, path := range []string{"/api/reload", "/api/scale"} {
				if code, _ := f.do(t, "POST", path, "Authorization", tc.good, "Sec-Fetch-Site", "same-origin"); code != http.StatusOK {
					t.Errorf("POST %s with the credential: %d", path, code)
				}
				if code, _ := f.do(t, "POST", path, "Authorization", tc.good, "Sec-Fetch-Site", "cross-site"); code != http.StatusForbidden {
					t.Errorf("POST %s cross-site with the credential: %d, want 403", path, code)
				}
			}
			if code, _ := f.do(t, "GET", "/api/status", "Authorization", tc.bad); code != http.StatusUnauthorized {
				t.Fatalf("wrong credential: %d, want 401", code)
			}
			if have := f.srv.api.refused.Load(); have != 1 {
				t.Fatalf("failures counted %d, want 1", have)
			}
		})
	}
}

func mustGet(t *testing.T, url string) string {
	t.Helper()
	_, body := get(t, url)
	return body
}

// A credential in the URL is refused, even the right one, with or without
// -admin-auth.
func TestQueryTokenRefused(t *testing.T) {
	for _, auth := range []bool{true, false} {
		o := Options{}
		if auth {
			o.AuthFile = writeAuth(t, testToken, 0o600)
		}
		f := start(t, o)
		for _, q := range []string{"access_token=" + testToken, "token=" + testToken, "x=1&auth=" + testToken} {
			if code, _ := f.do(t, "GET", "/api/status?"+q, "Authorization", "Bearer "+testToken); code != http.StatusBadRequest {
				t.Errorf("auth %v: GET /api/status?%s: %d, want 400", auth, q, code)
			}
		}
	}
}

// Wrong credentials from one address are limited: after failBurst, even
// the right one gets 429 without being checked, and both are counted.
func TestFailuresLimited(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := start(t, Options{AuthFile: writeAuth(t, basicUsers(t, "ops", "pw"), 0o600), Registry: reg})
	frozen := time.Now() // no failure is forgiven while the test runs
	f.srv.api.limit.now = func() time.Time { return frozen }
	wrong := "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:guess"))
	for i := range failBurst {
		if code, _ := f.do(t, "GET", "/api/status", "Authorization", wrong); code != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d, want 401", i+1, code)
		}
	}
	right := "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:pw"))
	code, h := f.do(t, "GET", "/api/status", "Authorization", right)
	if code != http.StatusTooManyRequests || h.Get("Retry-After") == "" {
		t.Fatalf("after %d wrong guesses: %d (Retry-After %q), want 429 with Retry-After", failBurst, code, h.Get("Retry-After"))
	}
	for name, want := range map[string]float64{"prefork_admin_auth_failures_total": failBurst, "prefork_admin_auth_limited_total": 1} {
		if have := counter(t, reg, name); have != want {
			t.Errorf("%s = %v, want %v", name, have, want)
		}
	}
}

// counter is the value of a registered counter.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLimiter(func() time.Time { return now })
	a, b := clientKey("10.0.0.1:5000"), clientKey("10.0.0.2:5000")
	for range failBurst {
		l.fail(a)
	}
	if ok, wait := l.allowed(a); ok || wait <= 0 || wait > failEvery {
		t.Fatalf("after %d failures: allowed %v, wait %v", failBurst, ok, wait)
	}
	if ok, _ := l.allowed(b); !ok {
		t.Fatal("another address is limited too")
	}
	now = now.Add(failEvery)
	if ok, _ := l.allowed(a); !ok {
		t.Fatalf("not allowed again after %v", failEvery)
	}
	// IPv6 addresses of one /64 are one client.
	if x, y := clientKey("[2001:db8::1]:1"), clientKey("[2001:db8::ffff]:2"); x != y {
		t.Fatalf("keys %v and %v differ", x, y)
	}
	if x, y := clientKey("[::ffff:10.0.0.1]:1"), a; x != y {
		t.Fatalf("a v4-mapped address is %v, not %v", x, y)
	}
}

// The limiter remembers at most maxTracked addresses however many fail;
// past that they share one bucket, so a flood from many is still limited.
func TestLimiterBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLimiter(func() time.Time { return now })
	for i := range 3 * maxTracked {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.fail(netip.PrefixFrom(ip, 32))
	}
	if n := l.tracked(); n != maxTracked {
		t.Fatalf("tracked %d addresses, want %d", n, maxTracked)
	}
	newcomer := clientKey("192.0.2.1:1")
	if ok, _ := l.allowed(newcomer); ok {
		t.Fatal("the shared bucket of a flood lets a new address in")
	}
	// Once they are forgiven, their room is given back.
	now = now.Add(failBurst * failEvery)
	l.fail(newcomer)
	if n := l.tracked(); n != 1 {
		t.Fatalf("tracked %d addresses after the flood, want 1", n)
	}
}

// Guesses from many addresses together run at most checksBurst bcrypt
// checks, then checksPerS a second; a password already found right needs
// none.
func TestBcryptChecksBounded(t *testing.T) {
	a, err := LoadAuth(writeAuth(t, basicUsers(t, "ops", "pw"), 0o600))
	if err != nil {
		t.Fatal(err)
	}
	req := func(pass, remote string) *http.Request {
		r, _ := http.NewRequest("GET", "/api/status", nil)
		r.SetBasicAuth("ops", pass)
		r.RemoteAddr = remote
		return r
	}
	frozen := time.Now() // no check is given back while the test runs
	a.verify.now = func() time.Time { return frozen }
	a.verify.checks.at = frozen
	if v := a.valid(req("pw", "10.0.0.1:1")); v != right {
		t.Fatalf("right password: %v", v)
	}
	busyAt := -1
	for i := range 3 * checksBurst {
		if v := a.valid(req("guess", "10.0.1."+strconv.Itoa(i)+":1")); v == busy {
			busyAt = i
			break
		}
	}
	if busyAt != checksBurst-1 { // the right password took one
		t.Fatalf("checks refused from guess %d, want about %d", busyAt, checksBurst)
	}
	if v := a.valid(req("pw", "10.0.0.1:1")); v != right {
		t.Fatalf("a known password while checks are refused: %v", v)
	}
}

func TestDummyHash(t *testing.T) {
	if cost, err := bcrypt.Cost(dummyHash); err != nil || cost != bcrypt.DefaultCost {
		t.Fatalf("dummy hash: cost %d, %v; want %d, like a real one", cost, err, bcrypt.DefaultCost)
	}
}

// Without -admin-auth, actions come from loopback only, even with the
// page's token (something forwarding to the listener).
func TestActionsLoopbackOnly(t *testing.T) {
	sup := &fakeSupervisor{}
	h, a, err := newAPI("127.0.0.1:9090", Options{Control: sup, Events: &control.Broadcaster{}, Actions: true})
	if err != nil {
		t.Fatal(err)
	}
	for remote, want := range map[string]int{"10.0.0.5:1234": http.StatusForbidden, "[::1]:1234": http.StatusOK, "127.0.0.1:1": http.StatusOK} {
		r := httptest.NewRequest("POST", "http://127.0.0.1:9090/api/reload", strings.NewReader("{}"))
		r.RemoteAddr = remote
		r.Header.Set(TokenHeader, a.token)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("reload from %s: %d %s, want %d", remote, w.Code, w.Body, want)
		}
	}
	if n := len(sup.actions()); n != 2 {
		t.Fatalf("%d actions done, want 2", n)
	}
}
