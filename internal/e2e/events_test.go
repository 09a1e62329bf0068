package e2e

import (
	"context"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/proctest"
)

// waitEvent waits up to d for an event of kind that matches (a nil match
// takes any) and returns it. Events recorded before the call count: to
// wait for one caused by an action, match on what only it can have (a new
// pid, or Pos >= the count taken before the action).
func (s *sup) waitEvent(d time.Duration, kind control.EventKind, match func(proctest.Event) bool) proctest.Event {
	s.t.Helper()
	e, ok := s.events.Wait(d, func(e proctest.Event) bool { return e.Kind == kind && (match == nil || match(e)) })
	if !ok {
		s.t.Fatalf("no %q event within %s; recorded:\n%s", kind, d, s.events)
	}
	return e
}

// subscribed waits until the harness follows the supervisor's events: from
// then on, none is missed.
func (s *sup) subscribed() {
	s.t.Helper()
	s.waitEvent(10*time.Second, "subscribed", nil)
}

// waitReady waits up to d until every worker of the starting supervisor is
// ready: at once if its status says so once the subscription is in place,
// else the running event, which then surely comes after the subscription.
func (s *sup) waitReady(d time.Duration) {
	s.t.Helper()
	s.subscribed()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	resp, err := control.Call(ctx, s.ctlPath, control.Request{Cmd: control.CmdStatus})
	if err != nil || !resp.OK {
		s.t.Fatalf("status: %v %s", err, resp.Error)
	}
	for _, w := range resp.Status.Workers {
		if w.State != control.StateReady {
			s.waitEvent(d, control.EventRunning, nil)
			return
		}
	}
	if len(resp.Status.Workers) == 0 {
		s.t.Fatal("status lists no workers")
	}
}
