package admin

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
)

// TokenHeader is the header an action request carries the page's token in.
const TokenHeader = "X-Prefork-Token"

// DefaultWriteTimeout is how long an event stream client may take to
// accept one write before it is disconnected.
const DefaultWriteTimeout = 5 * time.Second

// pingEvery keeps an idle event stream alive through proxies, and finds
// clients that went away without closing.
const pingEvery = 15 * time.Second

// actionTimeout bounds a reload or scale started from the dashboard, as
// `ctl` bounds its own.
const actionTimeout = 10 * time.Minute

// Options say what the admin listener serves.
type Options struct {
	// Control answers status, reload and scale; the supervisor's control
	// handler, as for the control socket.
	Control control.Handler
	// Events is the supervisor's event stream.
	Events *control.Broadcaster
	// Metrics serves /metrics; nil for none.
	Metrics http.Handler
	// Actions enables POST /api/reload and /api/scale (-admin-actions).
	Actions bool
	// WriteTimeout: see DefaultWriteTimeout, used when it is 0.
	WriteTimeout time.Duration
	// Log gets the server's errors; nil discards them.
	Log *zap.Logger
}

//go:embed ui
var uiFS embed.FS

var page = template.Must(template.ParseFS(uiFS, "ui/index.html"))

// api is the handlers' shared state.
type api struct {
	Options
	token   string
	clients atomic.Int64 // event stream clients connected now
	dropped atomic.Int64 // event stream clients disconnected for being slow
}

func newAPI(addr string, o Options) (http.Handler, *api) {
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	a := &api{Options: o, token: newToken()}
	assets, _ := fs.Sub(uiFS, "ui") // a constant directory: cannot fail
	r := chi.NewRouter()
	r.Use(allowedHosts(addr, hostname()).guard, secureHeaders)
	r.Get("/", a.index)
	r.Handle("/assets/*", http.StripPrefix("/assets/", http.FileServerFS(assets)))
	r.Get("/api/status", a.status)
	r.Get("/api/events", a.events)
	if o.Metrics != nil {
		r.Handle("/metrics", o.Metrics)
	}
	r.Group(func(r chi.Router) {
		r.Use(a.guard)
		r.Post("/api/reload", a.reload)
		r.Post("/api/scale", a.scale)
	})
	return r, a
}

func newToken() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

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

func (a *api) index(w http.ResponseWriter, r *http.Request) {
	data := struct {
		Actions bool
		Token   string
	}{a.Actions, ""}
	if a.Actions {
		data.Token = a.token
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store") // the token changes with every start
	if err := page.Execute(w, data); err != nil {
		a.Log.Debug("admin: page", zap.Error(err))
	}
}

func (a *api) status(w http.ResponseWriter, r *http.Request) {
	resp := a.Control.Do(r.Context(), control.Request{Cmd: control.CmdStatus})
	if !resp.OK || resp.Status == nil {
		writeJSON(w, http.StatusServiceUnavailable, control.Response{Error: "admin: status: " + resp.Error})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, resp.Status)
}

// guard refuses actions unless they are enabled, come from the
// dashboard's own origin and carry its token.
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
		if subtle.ConstantTimeCompare([]byte(r.Header.Get(TokenHeader)), []byte(a.token)) != 1 {
			writeJSON(w, http.StatusForbidden, control.Response{Error: "admin: missing or wrong " + TokenHeader + " header"})
			return
		}
		cop.Handler(next).ServeHTTP(w, r)
	})
}

func (a *api) reload(w http.ResponseWriter, r *http.Request) {
	a.act(w, r, control.Request{Cmd: control.CmdReload})
}

func (a *api) scale(w http.ResponseWriter, r *http.Request) {
	var body struct {
		N int `json:"n"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		writeJSON(w, http.StatusBadRequest, control.Response{Error: fmt.Sprintf("admin: scale: want {\"n\": N}: %v", err)})
		return
	}
	a.act(w, r, control.Request{Cmd: control.CmdScale, N: body.N})
}

// act passes req to the supervisor and answers with its Response: 200 if
// it was carried out, 409 if the supervisor refused (a reload already
// running, say), 400 if req is malformed.
func (a *api) act(w http.ResponseWriter, r *http.Request, req control.Request) {
	if err := req.Validate(); err != nil {
		writeJSON(w, http.StatusBadRequest, control.Response{Error: err.Error()})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), actionTimeout)
	defer cancel()
	a.Log.Info("action requested on the admin listener", zap.String("cmd", string(req.Cmd)), zap.Int("n", req.N), zap.String("remote", r.RemoteAddr))
	resp := a.Control.Do(ctx, req)
	code := http.StatusOK
	if !resp.OK {
		code = http.StatusConflict
	}
	writeJSON(w, code, resp)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // a client that left: nothing to do
}

// errSlow is why a slow event stream client is disconnected.
var errSlow = errors.New("admin: event stream client fell behind")
