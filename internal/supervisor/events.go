package supervisor

import (
	"os"
	"syscall"
	"time"

	"github.com/prefork/prefork/internal/control"
)

// emit publishes an operator event (Node's cluster events: fork, ready,
// exit, ...) to `supervisor ctl events` subscribers. kv are field pairs.
func (s *Supervisor) emit(kind string, p *process, kv ...any) {
	e := control.Event{"time": time.Now().Format(time.RFC3339Nano), "event": kind}
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
	kv := []any{"reason", reason}
	if reason == "" {
		kv[1] = "crash"
	}
	if st == nil {
		return kv
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return append(kv, "signal", ws.Signal().String())
	}
	return append(kv, "code", st.ExitCode())
}
