package primary

import (
	"context"
	"errors"
	"github.com/prefork/prefork/cluster"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	ctl "github.com/prefork/prefork/internal/control"
)

// helperEnv names the helper program the re-executed test binary runs as
// a worker (nodeHelpers).
const helperEnv = "PRIMARY_TEST_HELPER"

func TestMain(m *testing.M) {
	if h := nodeHelpers[os.Getenv(helperEnv)]; h != nil {
		h() // node_test.go
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The default command is this program's path, absolute, with its
// arguments; a command given is kept.
func TestSettingsCommand(t *testing.T) {
	cfg, err := withCommand(cluster.DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	want, _ := filepath.Abs(os.Args[0])
	if cfg.Command[0] != want || !slices.Equal(cfg.Command[1:], os.Args[1:]) {
		t.Fatalf("command %q, want %q and this program's arguments", cfg.Command, want)
	}
	st := cluster.DefaultSettings()
	st.Command = []string{"/bin/worker", "-x"}
	if cfg, _ := withCommand(st); !slices.Equal(cfg.Command, st.Command) {
		t.Fatalf("command %q, want %q", cfg.Command, st.Command)
	}
}

// The engine's events become Node's: fork is followed by online, ready is
// listening, a drain is disconnect, and an exit without one is disconnect
// then exit; ExitedAfterDisconnect tells a crash from an exit asked for.
func TestTranslate(t *testing.T) {
	p := &Primary{events: make(chan Event, 32), workers: map[int]*Worker{}, addr: "127.0.0.1:1"}
	w1 := func(e ctl.Event) ctl.Event {
		e.Slot, e.PID, e.Generation = 1, 101, 1
		return e
	}
	for _, e := range []ctl.Event{
		w1(ctl.Event{Kind: ctl.EventFork, Cause: ctl.CauseStart}),
		w1(ctl.Event{Kind: ctl.EventReady}),
		w1(ctl.Event{Kind: ctl.EventMessage, Msg: "7"}),
		w1(ctl.Event{Kind: ctl.EventExit, Reason: ctl.CauseCrash, Signal: "SIGKILL"}),
		{Kind: ctl.EventFork, Slot: 1, PID: 102, Generation: 1, Cause: ctl.CauseCrash},
		{Kind: ctl.EventDrain, Slot: 1, PID: 102, Generation: 1, Reason: ctl.CauseReload},
		{Kind: ctl.EventExit, Slot: 1, PID: 102, Generation: 1, Reason: ctl.CauseReload},
		{Kind: ctl.EventReap, PID: 103},
		{Kind: ctl.EventRunning, Workers: 1},
		{Kind: ctl.EventDropped, Count: 3},
	} {
		p.translate(e)
	}
	close(p.events)
	var kinds []EventKind
	var evs []Event
	for ev := range p.events {
		kinds = append(kinds, ev.Kind)
		evs = append(evs, ev)
	}
	want := []EventKind{EventFork, EventOnline, EventListening, EventMessage, EventDisconnect, EventExit,
		EventFork, EventOnline, EventDisconnect, EventExit}
	if !slices.Equal(kinds, want) {
		t.Fatalf("events %v, want %v", kinds, want)
	}
	first, second := evs[0].Worker, evs[6].Worker
	switch {
	case first.PID() != 101 || first.ID() != 1 || second.PID() != 102:
		t.Fatalf("workers %v and %v", first, second)
	case string(evs[3].Message) != "7" || evs[2].Address != "127.0.0.1:1" || evs[5].Signal != "SIGKILL":
		t.Fatalf("message %q, address %q, signal %q", evs[3].Message, evs[2].Address, evs[5].Signal)
	case !first.IsDead() || first.IsConnected() || first.ExitedAfterDisconnect():
		t.Fatalf("crashed worker: dead %v connected %v after disconnect %v", first.IsDead(), first.IsConnected(), first.ExitedAfterDisconnect())
	case !second.IsDead() || !second.ExitedAfterDisconnect():
		t.Fatalf("reloaded worker: dead %v after disconnect %v", second.IsDead(), second.ExitedAfterDisconnect())
	case p.Dropped() != 3 || len(p.workers) != 0:
		t.Fatalf("dropped %d, %d workers still tracked", p.Dropped(), len(p.workers))
	}
}

// A primary run in this process over real worker processes (sleep, as
// plain workers in shared mode): the events of their lives arrive in
// order, Workers lists them, a message to a worker without a channel is an
// error, and Stop drains them, ends the events and is harmless twice.
func TestPrimaryLifecycle(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	st := cluster.DefaultSettings()
	st.Listen, st.Workers, st.Mode, st.WorkerProtocol = cluster.Listeners{"127.0.0.1:0"}, 2, cluster.ModeShared, "plain"
	st.Control, st.Sched, st.Grace = "none", "normal", 5*time.Second
	st.Command = []string{sleep, "30"}
	p, err := Start(st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, w := range p.Workers() {
			syscall.Kill(w.PID(), syscall.SIGKILL)
		}
	})
	if _, port, _ := strings.Cut(p.Addr(), ":"); port == "" || port == "0" {
		t.Fatalf("Addr %q: want the port bound", p.Addr())
	}
	listening := 0
	for listening < 2 {
		select {
		case ev := <-p.Events():
			if ev.Kind == EventListening {
				listening++
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no two listening events within 10s")
		}
	}
	ws := p.Workers()
	if len(ws) != 2 || ws[0].ID() != 1 || ws[1].ID() != 2 || ws[0].PID() == ws[1].PID() {
		t.Fatalf("workers %v", ws)
	}
	if err := ws[0].Send([]byte("hi")); err == nil {
		t.Fatal("Send to a plain worker: no error")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := p.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	exits := 0
	for ev := range p.Events() { // closed once stopped
		if ev.Kind == EventExit {
			exits++
		}
	}
	for _, w := range ws {
		if !w.IsDead() || w.IsConnected() || !w.ExitedAfterDisconnect() {
			t.Errorf("%s after stop: dead %v connected %v after disconnect %v", w, w.IsDead(), w.IsConnected(), w.ExitedAfterDisconnect())
		}
	}
	if exits != 2 {
		t.Fatalf("%d exit events, want 2", exits)
	}
	if err := p.Reload(ctx); !errors.Is(err, ErrStopped) {
		t.Fatalf("Reload after stop: %v, want ErrStopped", err)
	}
	if err := ws[0].Kill(syscall.SIGTERM); err == nil {
		t.Fatal("Kill after stop: no error")
	}
}

// A Go caller's bad cluster.Settings are named as fields, not as flags.
func TestStartNamesTheField(t *testing.T) {
	_, err := Start(cluster.Settings{})
	if !errors.Is(err, cluster.ErrUsage) || !strings.Contains(err.Error(), "Settings.Listen") || strings.Contains(err.Error(), "flag") {
		t.Fatalf("Start(cluster.Settings{}) = %v, want a cluster.ErrUsage naming Settings.Listen", err)
	}
	_, err = Start(cluster.DefaultSettings(), WithWorkers(-1))
	if !errors.Is(err, cluster.ErrUsage) || !strings.Contains(err.Error(), "Settings.Workers") {
		t.Fatalf("WithWorkers(-1): %v, want an cluster.ErrUsage naming Settings.Workers", err)
	}
}
