package control

import "encoding/json"

// Event is one event of the stream that `ctl events` and the admin API's
// /api/events show: Kind says what happened, and the fields it uses say
// the rest. The worker an event is about is Slot, PID and Generation;
// they are zero for the supervisor's own events (respawn has only Slot,
// reap only PID, a rollout's start and end only Generation).
//
// On the wire an event is a JSON object with the fields that are set, and
// those a kind always carries even when zero: an exit's code (unless it
// has a signal or an error), a respawn's delay_ms, a ready worker's boot_ms
// and features, running's workers and startup_ms, a message's msg, a
// deferred scale's by and queued, a finished rollout's replaced, and a
// scale's from and to.
type Event struct {
	Time string    `json:"time"`  // RFC 3339 with nanoseconds; Publish sets it
	Kind EventKind `json:"event"` // which event: the list is in vocab.go

	Slot       int `json:"slot"`
	PID        int `json:"pid"`
	Generation int `json:"generation"`

	Cause  Cause  `json:"cause"`  // fork, respawn: why the worker starts
	Reason Cause  `json:"reason"` // drain, exit: why it leaves
	Code   int    `json:"code"`   // exit: the exit code, when neither Signal nor Error is set
	Signal string `json:"signal"` // exit: the signal that killed it, such as "killed"
	Error  string `json:"error"`  // exit: why its status is unknown; protocol; a failed step
	Count  int    `json:"count"`  // protocol: errors so far; dropped: events lost

	BootMS    float64 `json:"boot_ms"`    // ready: from start to ready
	Features  string  `json:"features"`   // ready: worker-protocol features, e.g. "peers,pause"
	Workers   int     `json:"workers"`    // running: slots
	StartupMS int64   `json:"startup_ms"` // running: from start to every slot ready
	DelayMS   int64   `json:"delay_ms"`   // respawn: the crash backoff
	Msg       string  `json:"msg"`        // message: what the worker sent (cut to MaxEventMsg for subscribers)
	MsgBytes  int     `json:"msg_bytes"`  // message: the size of what the worker sent, when Msg was cut
	Seq       uint64  `json:"seq"`        // message: its number, from 1, for the primary's window
	SilentS   float64 `json:"silent_s"`   // hang: since its last healthy heartbeat
	GapS      float64 `json:"gap_s"`      // freeze: how long the supervisor did not run
	Why       string  `json:"why"`        // recycle: the limit it passed

	Step     Step `json:"step"`     // reload, recycle, scale: how far it is
	Replaced int  `json:"replaced"` // reload, recycle done: workers replaced
	From     int  `json:"from"`     // scale start
	To       int  `json:"to"`       // scale start and done

	// canary: the slots it replaces first and its bake; verdict: the
	// verdict, what it decided (Decision: continue or rollback), why
	// (Why), and the numbers both generations showed over the window.
	Canary       int     `json:"canary"`
	BakeS        float64 `json:"bake_s"`
	Verdict      string  `json:"verdict"`
	Decision     string  `json:"decision"`
	OldRequests  int     `json:"old_requests"`
	NewRequests  int     `json:"new_requests"`
	OldErrorRate float64 `json:"old_error_rate"`
	NewErrorRate float64 `json:"new_error_rate"`
	OldP99S      float64 `json:"old_p99_s"`
	NewP99S      float64 `json:"new_p99_s"`
	Crashes      int     `json:"crashes"`

	Request string `json:"request"` // deferred: "reload" or "scale"
	Until   string `json:"until"`   // deferred reload: "running" or "idle"
	By      int    `json:"by"`      // deferred scale: this signal's step
	Queued  int    `json:"queued"`  // deferred scale: the steps queued so far
}

// Fields is e as the wire carries it: the fields that are set, and those
// e's kind always carries.
func (e Event) Fields() map[string]any {
	m := map[string]any{"event": string(e.Kind)}
	for k, v := range map[string]string{
		"time": e.Time, "cause": string(e.Cause), "reason": string(e.Reason), "signal": e.Signal,
		"error": e.Error, "features": e.Features, "msg": e.Msg, "why": e.Why, "step": string(e.Step),
		"request": e.Request, "until": e.Until, "verdict": e.Verdict, "decision": e.Decision,
	} {
		if v != "" {
			m[k] = v
		}
	}
	for k, v := range map[string]int{
		"slot": e.Slot, "pid": e.PID, "generation": e.Generation, "code": e.Code, "count": e.Count,
		"workers": e.Workers, "msg_bytes": e.MsgBytes, "replaced": e.Replaced, "from": e.From, "to": e.To, "by": e.By, "queued": e.Queued,
		"canary": e.Canary, "old_requests": e.OldRequests, "new_requests": e.NewRequests, "crashes": e.Crashes,
	} {
		if v != 0 {
			m[k] = v
		}
	}
	for k, v := range map[string]float64{"boot_ms": e.BootMS, "silent_s": e.SilentS, "gap_s": e.GapS, "bake_s": e.BakeS} {
		if v != 0 {
			m[k] = v
		}
	}
	for k, v := range map[string]int64{"startup_ms": e.StartupMS, "delay_ms": e.DelayMS} {
		if v != 0 {
			m[k] = v
		}
	}
	if e.Seq != 0 {
		m["seq"] = e.Seq
	}
	// What a kind carries even when it is zero.
	switch e.Kind {
	case EventExit:
		if e.Signal == "" && e.Error == "" {
			m["code"] = e.Code
		}
	case EventRespawn:
		m["delay_ms"] = e.DelayMS
	case EventReady:
		m["boot_ms"], m["features"] = e.BootMS, e.Features
	case EventRunning:
		m["workers"], m["startup_ms"] = e.Workers, e.StartupMS
	case EventMessage:
		m["msg"] = e.Msg
	case EventDeferred:
		if e.Request == string(CmdScale) {
			m["by"], m["queued"] = e.By, e.Queued
		}
	case EventReload, EventRecycle:
		if e.Step == StepDone {
			m["replaced"] = e.Replaced
		}
	case EventVerdict:
		m["old_requests"], m["new_requests"], m["crashes"] = e.OldRequests, e.NewRequests, e.Crashes
		m["old_error_rate"], m["new_error_rate"] = e.OldErrorRate, e.NewErrorRate
		m["old_p99_s"], m["new_p99_s"] = e.OldP99S, e.NewP99S
	case EventScale:
		switch e.Step {
		case StepStart:
			m["from"], m["to"] = e.From, e.To
		case StepDone:
			m["to"] = e.To
		}
	}
	return m
}

// MarshalJSON encodes e's Fields with their keys sorted, as the admin
// API sends it. `ctl events` puts event and time first (marshalEvent).
func (e Event) MarshalJSON() ([]byte, error) { return json.Marshal(e.Fields()) }
