package admin

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
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
	// AuthFile is the -admin-auth file (see Auth); "" for none, when the
	// listener must be bound to a loopback address (the caller checks).
	AuthFile string
	// TLSCert and TLSKey are PEM files (-admin-tls-cert, -admin-tls-key);
	// "" for plain HTTP. Reload reads them again.
	TLSCert, TLSKey string
	// Registry gets the listener's own metrics; nil for none.
	Registry prometheus.Registerer
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
	auth    atomic.Pointer[Auth] // nil without AuthFile
	token   string               // the page's action token, without AuthFile
	limit   *limiter
	hub     *hub
	ring    ring
	refused atomic.Int64 // wrong credentials
	limited atomic.Int64 // requests refused while over the failure limit
	dropped atomic.Int64 // event stream clients disconnected for being slow
}

func newAPI(addr string, o Options) (http.Handler, *api, error) {
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	a := &api{Options: o, token: newToken(), limit: newLimiter(time.Now)}
	a.hub = newHub(o.Log, a.countDropped)
	if o.AuthFile != "" {
		auth, err := LoadAuth(o.AuthFile)
		if err != nil {
			return nil, nil, err
		}
		a.auth.Store(auth)
	}
	if err := a.register(o.Registry); err != nil {
		return nil, nil, err
	}
	assets, _ := fs.Sub(uiFS, "ui") // a constant directory: cannot fail
	r := chi.NewRouter()
	r.Use(allowedHosts(addr, hostname()).guard, secureHeaders)
	r.Get("/", a.index)
	r.Handle("/assets/*", http.StripPrefix("/assets/", http.FileServerFS(assets)))
	// Everything under /api and /metrics needs the credential, even a path
	// that does not exist: which do is nobody else's business.
	r.Route("/api", func(r chi.Router) {
		r.Use(a.authenticate)
		r.Get("/status", a.status)
		r.Get("/history", a.history)
		r.Get("/events", a.events)
		r.Group(func(r chi.Router) {
			r.Use(a.guard)
			r.Post("/reload", a.reload)
			r.Post("/scale", a.scale)
		})
	})
	metrics := o.Metrics
	if metrics == nil {
		metrics = http.NotFoundHandler()
	}
	r.With(a.authenticate).Handle("/metrics*", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		metrics.ServeHTTP(w, r)
	}))
	return r, a, nil
}

// register adds the listener's counters to reg.
func (a *api) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range []struct {
		name, help string
		n          *atomic.Int64
	}{
		{"admin_auth_failures_total", "Requests to the admin listener with a wrong credential.", &a.refused},
		{"admin_auth_limited_total", "Requests to the admin listener refused (429) while their address was over its failed attempts.", &a.limited},
		{"admin_event_clients_dropped_total", "Dashboard event stream clients disconnected for not keeping up.", &a.dropped},
	} {
		n := c.n
		err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "prefork", Name: c.name, Help: c.help},
			func() float64 { return float64(n.Load()) }))
		if err != nil {
			return fmt.Errorf("admin: metrics: %w", err)
		}
	}
	return nil
}

func (a *api) countDropped() { a.dropped.Add(1) }

func newToken() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

func (a *api) index(w http.ResponseWriter, r *http.Request) {
	data := struct {
		Actions bool
		Auth    string // "", "Bearer" or "Basic"
		Token   string
	}{Actions: a.Actions}
	if auth := a.auth.Load(); auth != nil {
		data.Auth = auth.Scheme()
	} else if a.Actions {
		data.Token = a.token // the listener is on loopback only
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

// reload takes an optional body: {"canary": N, "bake_ms": MS,
// "canary_insufficient": "continue"|"rollback", "force": true}, the
// options of ctl reload; none is the supervisor's -canary and -bake.
func (a *api) reload(w http.ResponseWriter, r *http.Request) {
	req := control.Request{Cmd: control.CmdReload}
	var body struct {
		Canary       *int   `json:"canary"`
		BakeMS       int64  `json:"bake_ms"`
		Insufficient string `json:"canary_insufficient"`
		Force        bool   `json:"force"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<10))
	if err := dec.Decode(&body); err != nil && err != io.EOF {
		writeJSON(w, http.StatusBadRequest, control.Response{Error: fmt.Sprintf("admin: reload: want {\"canary\": N, \"bake_ms\": MS} or nothing: %v", err)})
		return
	}
	req.Canary, req.BakeMS, req.Insufficient, req.Force = body.Canary, body.BakeMS, body.Insufficient, body.Force
	a.act(w, r, req)
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
	ctx, cancel := context.WithTimeout(r.Context(), actionTimeout+req.Bake()) // a canary answers after its bake
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
