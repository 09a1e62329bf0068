package admin

import (
	"go.uber.org/zap"

	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/prefork/prefork/internal/control"
)

// PageHeader marks the dashboard's own requests: a 401 answer to them
// has no challenge, which would open the browser's login dialog over the
// page's.
const PageHeader = "X-Prefork-Page"

// hosts are the names the listener answers to; see allowedHosts.
type hosts map[string]bool

// allowedHosts are the Host header names a request may carry: an IP
// literal, localhost, the name in -admin, or this machine's hostname.
// Anything else is DNS rebinding — an attacker's name made to resolve to
// this address, which the browser then treats as the attacker's own origin
// and lets its script read the page and its token.
func allowedHosts(addr, hostname string) hosts {
	h := hosts{"localhost": true}
	if name, _, err := net.SplitHostPort(addr); err == nil && name != "" {
		h[strings.ToLower(name)] = true
	}
	if hostname != "" {
		h[strings.ToLower(hostname)] = true
	}
	return h
}

func (h hosts) allow(host string) bool {
	if name, _, err := net.SplitHostPort(host); err == nil {
		host = name
	}
	host = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	if host == "" {
		return false
	}
	if net.ParseIP(host) != nil || strings.HasSuffix(host, ".localhost") {
		return true // names under .localhost resolve to loopback only (RFC 6761)
	}
	return h[host]
}

func (h hosts) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !h.allow(r.Host) {
			http.Error(w, "admin: unknown host name "+strconv.Quote(r.Host)+": use the address given to -admin, an IP address, localhost or this machine's hostname", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func hostname() string {
	name, _ := os.Hostname() // none: only the other names are allowed
	return name
}

// secureHeaders keeps the page to its own assets and out of frames.
func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

// guard refuses actions unless they are enabled, come from the
// dashboard's own origin and carry its token (without -admin-auth, from
// loopback) or the credential (with it).
func (a *api) guard(next http.Handler) http.Handler {
	// CrossOriginProtection refuses a request whose Sec-Fetch-Site is not
	// same-origin (or none), or, from browsers that do not send it, whose
	// Origin is not the Host; requests with neither (curl) pass, and need
	// the token.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusForbidden, control.Response{Error: "admin: cross-origin request refused"})
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.Actions {
			writeJSON(w, http.StatusForbidden, control.Response{Error: "admin: actions are off; start the supervisor with -admin-actions"})
			return
		}
		if a.auth.Load() == nil && !loopback(r.RemoteAddr) {
			// Without -admin-auth the listener is bound to loopback only;
			// this holds even if something forwards to it.
			writeJSON(w, http.StatusForbidden, control.Response{Error: "admin: actions without -admin-auth only from a loopback address"})
			return
		}
		// With -admin-auth, authenticate has checked the credential, which
		// the page sends in a header a cross-site form cannot set.
		if a.auth.Load() == nil && subtle.ConstantTimeCompare([]byte(r.Header.Get(TokenHeader)), []byte(a.token)) != 1 {
			writeJSON(w, http.StatusForbidden, control.Response{Error: "admin: missing or wrong " + TokenHeader + " header"})
			return
		}
		cop.Handler(next).ServeHTTP(w, r)
	})
}

// credentialParams are query parameters that carry a credential by
// convention. A credential in a URL ends up in logs, browser history and
// Referer headers: a request with one is refused outright.
var credentialParams = []string{"access_token", "token", "auth", "authorization", "password", "api_key", "apikey"}

// authenticate lets through requests that carry the -admin-auth
// credential; others get 401, or 429 while their address is over its
// failures.
func (a *api) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		for _, p := range credentialParams {
			if q.Has(p) {
				writeJSON(w, http.StatusBadRequest, control.Response{Error: "admin: credentials in the URL are refused (query parameter " + p + "): send them in the Authorization header"})
				return
			}
		}
		auth := a.auth.Load()
		if auth == nil {
			next.ServeHTTP(w, r)
			return
		}
		key := clientKey(r.RemoteAddr)
		if ok, wait := a.limit.allowed(key); !ok {
			a.limited.Add(1)
			w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
			writeJSON(w, http.StatusTooManyRequests, control.Response{Error: "admin: too many failed attempts from this address; try again later"})
			return
		}
		switch auth.valid(r) {
		case right:
			next.ServeHTTP(w, r)
			return
		case busy:
			a.limited.Add(1)
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusTooManyRequests, control.Response{Error: "admin: too many password checks lately; try again in a second"})
			return
		}
		if r.Header.Get("Authorization") != "" {
			a.limit.fail(key) // only a credential sent counts as a guess
			a.refused.Add(1)
			a.Log.Info("admin: wrong credential", zap.String("remote", r.RemoteAddr), zap.String("path", r.URL.Path))
		}
		// A Basic challenge makes a browser open its own login dialog:
		// the page asks by itself, and says so with PageHeader.
		if r.Header.Get(PageHeader) == "" {
			w.Header().Set("WWW-Authenticate", auth.Scheme()+` realm="prefork admin", charset="UTF-8"`)
		}
		writeJSON(w, http.StatusUnauthorized, control.Response{Error: "admin: authentication required (" + auth.Scheme() + ")"})
	})
}

// loopback reports whether a remote address is a loopback one.
func loopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
