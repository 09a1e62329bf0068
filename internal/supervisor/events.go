package supervisor

import (
	"os"

	"github.com/prefork/prefork/internal/control"
)

// emit publishes an operator event (Node's cluster events: fork, ready,
// exit, ...) to `supervisor ctl events` subscribers. kv are field pairs.
func (s *Supervisor) emit(kind string, p *process, kv ...any) {
	e := control.Event{"event": kind} // Publish stamps the time
	if p != nil {
		e["slot"], e["pid"], e["generation"] = p.slot.id, p.pid, p.gen
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if k, ok := kv[i].(string); ok {
			e[k] = kv[i+1]
		}
	}
	s.bus.Publish(e)
}

// exitEventFields describes an exit for the event stream.
func exitEventFields(st *os.ProcessState, reason string) []any {
	if reason == "" {
		reason = "crash"
	}
	kv := []any{"reason", reason}
	sig, code, ok := exitStatus(st)
	switch {
	case !ok:
		return kv
	case sig != "":
		return append(kv, "signal", sig)
	}
	return append(kv, "code", code)
}
