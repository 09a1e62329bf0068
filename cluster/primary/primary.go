package primary

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/prefork/prefork/cluster"
	ctl "github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/supervisor"
)

// EventBuffer is how many events [Primary.Events] holds for a reader that
// falls behind; past that, events are dropped and counted
// ([Primary.Dropped]), so that a slow reader never holds up the primary.
const EventBuffer = 1024

// ErrStopped is the error, for errors.Is, of a request to a primary that
// has stopped.
var ErrStopped = supervisor.ErrStopped

// ErrCrashBudget is what Wait returns, for errors.Is, after a slot's
// workers crashed more than Settings.MaxCrashes times within
// Settings.CrashWindow and the primary gave up.
var ErrCrashBudget = supervisor.ErrCrashBudget

// Primary is a running cluster primary in this process: it listens, runs
// the workers and keeps them alive, as the supervisor command does. Make
// one with [Start]; its methods are safe for concurrent use.
type Primary struct {
	e    *supervisor.Engine
	log  *zap.Logger
	addr string

	events  chan Event
	unread  bool // nobody reads events (ListenAndServe): messages are not waited for
	dropped atomic.Uint64
	pumped  chan struct{} // closed when pump has delivered the last event
	waited  sync.Once
	err     error // what Wait returns

	mu      sync.Mutex
	workers map[int]*Worker // live worker processes, by pid
}

// Start binds the listening address, starts st.Workers workers and
// returns while they boot: Node's cluster.setupPrimary followed by as many
// cluster.fork() calls. opts apply to st in order. Read [Primary.Events]
// for what happens next, and call [Primary.Wait] to wait for the end, which
// a SIGTERM or SIGINT to this process (graceful stop), [Primary.Stop], a
// `supervisor ctl stop`, or a spent crash budget brings. SIGHUP reloads,
// SIGTTIN and SIGTTOU scale by one, as for the supervisor command.
//
// Errors before the workers start (an address in use, a bad setting: see
// cluster.ErrUsage) are returned here.
func Start(st cluster.Settings, opts ...Option) (*Primary, error) {
	return startPrimary(st, false, opts...)
}

// Run is Start followed by Wait, for a program that does not read Events,
// as the supervisor command: workers' messages still reach the log and
// `supervisor ctl events`, but nothing waits for a reader of Events that
// never comes, so a worker's Send never blocks on it (Start's primary, past
// a window of unread messages, stops reading its workers' channels until
// Events is read).
func Run(st cluster.Settings, opts ...Option) error {
	p, err := startPrimary(st, true, opts...)
	if err != nil {
		return err
	}
	return p.Wait()
}

// startPrimary is Start; unread says that nobody will read Events.
func startPrimary(st cluster.Settings, unread bool, opts ...Option) (*Primary, error) {
	for _, o := range opts {
		o(&st)
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("primary: %w", err)
	}
	st, err := withCommand(st)
	if err != nil {
		return nil, err
	}
	log := supervisor.NewLogger(st.LogFormat)
	e, err := supervisor.Start(st, log)
	if err != nil {
		log.Sync() // the error is the caller's to report, not logged here
		return nil, err
	}
	// Not e.Do: after an in-place upgrade the owner may be waiting for
	// this goroutine's Wait to start a worker (see supervisor.Start).
	p := &Primary{e: e, log: log, addr: e.Addr(), events: make(chan Event, EventBuffer), unread: unread, pumped: make(chan struct{}), workers: map[int]*Worker{}}
	go p.pump(e.Events())
	return p, nil
}

// Addr is the address the primary listens on, with the port it got for
// port 0.
func (p *Primary) Addr() string { return p.addr }

// Events returns the workers' events: EventFork, EventOnline,
// EventListening, EventDisconnect, EventExit and EventMessage, in the
// order they happened, from the first fork on. The channel is closed once
// the primary has stopped. Read it: workers that send messages wait for
// the reader (see Dropped).
func (p *Primary) Events() <-chan Event { return p.events }

// Dropped is how many events were lost because Events was not read fast
// enough: lifecycle events past EventBuffer. Messages are not dropped
// while the primary runs: a reader that falls behind makes the workers'
// [Send] wait (back-pressure), and a message that arrives as the primary
// stops, with Events full, is counted here. Messages a worker does not
// read are counted in that worker (cluster.Dropped there).
func (p *Primary) Dropped() uint64 { return p.dropped.Load() }

// Wait waits until the primary has stopped, every worker has exited and
// the last event is on Events, and returns nil after a clean stop, or why
// it stopped.
func (p *Primary) Wait() error {
	p.waited.Do(func() {
		p.err = p.e.Wait()
		<-p.pumped
		p.log.Sync() // p.err is the caller's to report, not logged here
	})
	return p.err
}

// Stop begins a graceful stop: workers drain within Settings.Grace, then
// are killed. It waits for the end as Wait does, or until ctx is done.
// Stopping a stopped primary returns what Wait does.
func (p *Primary) Stop(ctx context.Context) error {
	select {
	case <-p.e.Done():
		return p.Wait()
	default:
	}
	if err := p.do(ctx, ctl.Request{Cmd: ctl.CmdStop}); err != nil && !errors.Is(err, ErrStopped) {
		return err
	}
	select {
	case <-p.e.Done():
		return p.Wait()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Reload replaces every worker, slot by slot: each new worker starts, and
// once it is ready the old one drains. It returns when the reload is over;
// a worker that fails to start stops it, and the old workers go on. With
// the default Command, the new workers run the binary now at this program's
// path. With [Canary] (or Settings.Canary) some slots go first and are
// judged on live traffic before the rest; a canary rolled back returns an
// error that is [ErrRolledBack] (reload.go).
func (p *Primary) Reload(ctx context.Context, opts ...ReloadOption) error {
	req := ctl.Request{Cmd: ctl.CmdReload}
	for _, o := range opts {
		o(&req)
	}
	r := p.e.Do(ctx, req)
	return rolledBack(r, p.result(req, r))
}

// Scale sets the number of workers to n, 1..1024, and returns once the new
// workers are ready and the removed ones (the highest IDs) have exited.
func (p *Primary) Scale(ctx context.Context, n int) error {
	return p.do(ctx, ctl.Request{Cmd: ctl.CmdScale, N: n})
}

func (p *Primary) do(ctx context.Context, req ctl.Request) error {
	return p.result(req, p.e.Do(ctx, req))
}

// result is the error of r, the answer to req.
func (p *Primary) result(req ctl.Request, r ctl.Response) error {
	select {
	case <-p.e.Done():
		if !r.OK {
			return fmt.Errorf("primary: %s: %w", req.Cmd, ErrStopped)
		}
	default:
	}
	if !r.OK {
		return fmt.Errorf("primary: %s", r.Error)
	}
	return nil
}

// Fork adds a worker, whose process gets env (KEY=VALUE entries) on top of
// the primary's environment, and returns it once it is ready: Node's
// cluster.fork(env). It takes the lowest slot (ID) left without a worker
// (under RespawnManual, after an exit), else a new one; the slot keeps env
// for the workers that replace it, and Scale down removes it again. Fork
// works during start-up (Node's pattern: Start with Workers 0, then
// Fork n times, then Ready) and waits for a reload or scale to end.
//
// Under RespawnAuto (the default) the primary replaces exited workers
// itself, so a Fork made within 30s of an exit, as Node's
// cluster.on('exit', () => cluster.fork()) does, returns that exit's
// replacement instead of adding a worker: the cluster keeps the size
// asked for, and the log says once how to decide yourself
// (Settings.Respawn = RespawnManual).
func (p *Primary) Fork(ctx context.Context, env ...string) (*Worker, error) {
	_, pid, err := p.e.Fork(ctx, env)
	if err != nil {
		return nil, fmt.Errorf("primary: %w", err)
	}
	ws, err := p.list(ctx)
	if err != nil {
		return nil, err
	}
	for _, w := range ws {
		if w.pid == pid {
			return w, nil
		}
	}
	return nil, fmt.Errorf("primary: fork: worker (pid %d) %w", pid, ErrNoWorker)
}

// Ready waits until start-up is over: the Settings.Workers workers that
// Start started, and the workers Forked meanwhile, are ready (at
// once when there are none). It returns the error that stopped the
// primary first, if one did: a worker that could not boot, say.
func (p *Primary) Ready(ctx context.Context) error {
	if err := p.e.Ready(ctx); err != nil {
		return fmt.Errorf("primary: ready: %w", err)
	}
	return nil
}

// Workers returns the live worker processes, by ID: Node's
// cluster.workers. During a reload a slot may have two, the old one
// draining (State) and its replacement.
func (p *Primary) Workers() []*Worker {
	ws, _ := p.list(context.Background())
	return ws
}

func (p *Primary) list(ctx context.Context) ([]*Worker, error) {
	r := p.e.Do(ctx, ctl.Request{Cmd: ctl.CmdStatus})
	if !r.OK {
		return nil, fmt.Errorf("primary: %s", r.Error)
	}
	var ws []*Worker
	for _, st := range r.Status.Workers {
		w := p.track(st.PID, st.Slot, st.Generation)
		w.setState(State(st.State))
		ws = append(ws, w)
	}
	slices.SortStableFunc(ws, func(a, b *Worker) int { return a.id - b.id })
	return ws, nil
}

// track returns the Worker for pid, made on first sight.
func (p *Primary) track(pid, id, gen int) *Worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.workers[pid]
	if w == nil {
		w = &Worker{p: p, id: id, pid: pid, gen: gen}
		p.workers[pid] = w
	}
	return w
}

// forget drops pid once its process has exited.
func (p *Primary) forget(pid int) {
	p.mu.Lock()
	delete(p.workers, pid)
	p.mu.Unlock()
}

// pump turns the engine's events into Events until the engine has
// stopped.
func (p *Primary) pump(sub *ctl.Subscription) {
	defer close(p.pumped)
	defer close(p.events)
	defer sub.Close()
	var batch []ctl.Event
	for {
		select {
		case <-sub.Ready():
		case <-p.e.Done():
			// Every worker event was published before the loop
			// returned: take the rest.
			for _, e := range sub.Take(batch[:0]) {
				p.translate(e)
			}
			return
		}
		batch = sub.Take(batch[:0])
		for _, e := range batch {
			p.translate(e)
		}
	}
}

// deliver hands a message event to the reader of Events, waiting for it
// while the primary runs: the workers' readers wait meanwhile (the
// engine's message window), so a worker's Send waits rather than its
// message be lost. Without a reader (ListenAndServe's primary) it is
// counted lost at once.
func (p *Primary) deliver(ev Event, seq uint64) {
	if p.unread {
		p.dropped.Add(1)
	} else {
		select {
		case p.events <- ev:
		case <-p.stopping():
			// A program that stops its primary may stop reading: a
			// worker's handler waiting in Send must not hold up its
			// drain. Past the buffer, the message is counted lost.
			p.emit(ev)
		}
	}
	if p.e != nil {
		p.e.Seen(seq)
	}
}

func (p *Primary) seenAll() {
	if p.e != nil {
		p.e.SeenAll()
	}
}

// stopping is closed once the engine has begun to stop.
func (p *Primary) stopping() <-chan struct{} {
	if p.e == nil { // a unit test's Primary
		return nil
	}
	return p.e.Stopping()
}

// emit hands ev to the reader of Events, or counts it lost.
func (p *Primary) emit(ev Event) {
	select {
	case p.events <- ev:
	default:
		p.dropped.Add(1)
	}
}
