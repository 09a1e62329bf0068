package control

import (
	"context"
	"errors"
	"fmt"
)

// Request is the one line a client sends.
type Request struct {
	Cmd Command `json:"cmd"`
	N   int     `json:"n,omitempty"` // scale target, at least 1
	// Path is the binary an upgrade re-executes, absolute; "" for the
	// running one.
	Path string `json:"path,omitempty"`
	// Reload's rollout: Canary slots replaced first and judged for BakeMS
	// before the rest (nil: the supervisor's -canary; 0: a plain rolling
	// reload), what too little traffic means (Insufficient: "continue" or
	// "rollback"; "": its -canary-insufficient), and Force, a reload of
	// the release a canary rolled back.
	Canary       *int   `json:"canary,omitempty"`
	BakeMS       int64  `json:"bake_ms,omitempty"`
	Insufficient string `json:"canary_insufficient,omitempty"`
	Force        bool   `json:"force,omitempty"`
}

// Validate returns the error the server answers with for a request it does
// not pass to the Handler: an unknown command, or scale without n >= 1.
func (r Request) Validate() error {
	switch r.Cmd {
	case CmdStatus, CmdStop, CmdEvents, CmdUpgrade:
		return nil
	case CmdReload:
		return r.validateReload()
	case CmdScale:
		if r.N < 1 {
			return fmt.Errorf("control: scale needs n >= 1, got %d", r.N)
		}
		return nil
	case "":
		return errors.New(`control: request has no "cmd"`)
	}
	return fmt.Errorf("control: unknown command %q (want status, reload, scale, stop, upgrade or events)", r.Cmd)
}

// Response is the one line the server answers a Request with (except
// events). OK false comes with Error; a Response that could not be produced
// at all (the supervisor is gone) is an error from Call instead.
type Response struct {
	OK      bool    `json:"ok"`
	Error   string  `json:"error,omitempty"`
	Message string  `json:"message,omitempty"` // e.g. "reloaded 2 workers in 85ms"
	Status  *Status `json:"status,omitempty"`  // set for status
	// Canary is a canary reload's outcome, with its verdict; set for a
	// reload that had one.
	Canary *CanaryStatus `json:"canary,omitempty"`
}

// Status describes the supervisor and its workers.
type Status struct {
	PID    int    `json:"pid"`
	Listen string `json:"listen"`
	// Listeners are every listener, "NAME=ADDRESS" in order, when there
	// are several; Listen is the first's address.
	Listeners  []string `json:"listeners,omitempty"`
	Mode       string   `json:"mode"`
	Generation int      `json:"generation"`
	UptimeS    float64  `json:"uptime_s"`
	Version    string   `json:"version,omitempty"` // the supervisor's build (-version)
	Upgrades   int      `json:"upgrades"`          // in-place upgrades since it started
	// AcceptGapMS is how long the last upgrade stopped the supervisor's
	// own accepting (rr); 0 before any.
	AcceptGapMS float64        `json:"accept_gap_ms,omitempty"`
	Workers     []WorkerStatus `json:"workers"`
	Sticky      *StickyStatus  `json:"sticky,omitempty"` // -sticky or -proxy-protocol (rr); nil without
	// Canary is the canary reload baking now, or the last one and its
	// verdict; nil before any.
	Canary *CanaryStatus `json:"canary,omitempty"`
}

// WorkerStatus describes one worker process. A slot may show two workers
// during a reload: the draining one and its replacement.
type WorkerStatus struct {
	Slot          int     `json:"slot"`
	PID           int     `json:"pid"`
	Generation    int     `json:"generation"`
	State         State   `json:"state"` // StateStarting, StateReady or StateDraining
	UptimeS       float64 `json:"uptime_s"`
	Restarts      int     `json:"restarts"` // of the slot
	OpenConns     int64   `json:"open_conns"`
	Requests      uint64  `json:"requests"`
	RSSBytes      uint64  `json:"rss_bytes"` // 0 until first measured
	CPUPercent    float64 `json:"cpu_percent"`
	HeartbeatAgeS float64 `json:"heartbeat_age_s"`    // seconds since the last heartbeat; -1 if none yet
	Features      string  `json:"features,omitempty"` // worker-protocol features it announced when ready, e.g. "peers,pause"
	// Over its last few heartbeats (about 5s): requests served a second,
	// and the median and 99th percentile of their latency, 0 when it
	// served none or does not report latency (cluster.CountRequests and
	// cluster.RequestServed do).
	RequestsPerS float64 `json:"requests_per_s"`
	P50S         float64 `json:"p50_s"`
	P99S         float64 `json:"p99_s"`
	// StatusClasses counts the requests it served since it started by
	// how they ended: "2xx", "3xx", "4xx", "5xx" and "panic"; nil from a
	// worker that does not report them (only cluster.CountRequests does).
	StatusClasses map[string]uint64 `json:"status_classes,omitempty"`
	// With -sticky: the keys its slot claimed (cluster.Claim) and the
	// connections sent to its slot by key.
	StickyKeys  int    `json:"sticky_keys,omitempty"`
	StickyConns uint64 `json:"sticky_conns,omitempty"`
}

// Handler carries out requests; the supervisor implements it. Do is called
// on its own goroutine per connection, only with requests that pass
// Validate, never with events. It may block until the action is done;
// ctx is cancelled when the client disconnects or the server closes, and Do
// should then return promptly (Serve waits for it).
type Handler interface {
	Do(ctx context.Context, req Request) Response
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, req Request) Response

// Do calls f(ctx, req).
func (f HandlerFunc) Do(ctx context.Context, req Request) Response { return f(ctx, req) }
