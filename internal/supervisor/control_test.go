package supervisor

import (
	"context"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
)

// TestQuestionsBeforeEvents: the owner answers a ctl request before the
// events already waiting for it. Behind a flood of worker messages, which
// can fill the events queue, `ctl status` took hundreds of milliseconds.
func TestQuestionsBeforeEvents(t *testing.T) {
	h := newHarness(t, nil)
	const queued = 200
	var ran atomic.Int32
	for range queued {
		h.s.events <- evCall{fn: func(*Supervisor) { time.Sleep(time.Millisecond); ran.Add(1) }} // a slow event
	}
	h.s.events <- evCall{fn: func(s *Supervisor) { s.beginStop(nil) }} // then the loop ends
	answered := make(chan int32, 1)
	go func() {
		r := handler{h.s}.Do(context.Background(), control.Request{Cmd: control.CmdStatus})
		if !r.OK {
			t.Errorf("status: %+v", r)
		}
		answered <- ran.Load()
	}()
	waitUntil(t, "the status request posted", func() bool { return len(h.s.asks) == 1 })
	stopped := make(chan error, 1)
	go func() { stopped <- h.s.loop(make(chan os.Signal)) }()
	if n := <-answered; n != 0 {
		t.Errorf("status answered after %d of the %d events queued before it; want before any", n, queued)
	}
	if err := <-stopped; err != nil {
		t.Errorf("loop: %v", err)
	}
	if n := ran.Load(); n != queued {
		t.Errorf("%d of the %d events handled", n, queued)
	}
}
