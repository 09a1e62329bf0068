package cluster

import (
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/prefork/prefork/internal/ipc"
)

// orphanExit is how long a worker whose supervisor vanished may drain before
// it exits on its own.
const orphanExit = 900 * time.Millisecond

// parkWait bounds how long a drain waits for Accept to hand out what already
// arrived before it tells the application.
const parkWait = time.Second

// lose counts n connections the kernel closed before this process could
// take them (a truncated conns frame) as accepted and closed, as if served:
// the supervisor counted them as handed, and least-conn's load would drift
// otherwise.
func (w *worker) lose(n int) {
	if n <= 0 {
		return
	}
	w.accepted.Add(uint64(n))
	w.closed.Add(uint64(n))
	w.kickLoad()
	w.truncFrames.Add(1)
	w.truncLost.Add(uint64(n))
	poke(w.note)
}

// poke wakes run through ch (capacity 1) without waiting.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default: // run has yet to see the last one
	}
}

// shed closes up to n connections that have sent nothing for shedAfter
// before now, oldest first (see silentSet), and returns how many and when
// the oldest silent connection left was accepted.
func (w *worker) shed(n int, now time.Time) (int, time.Time) {
	k, oldest := w.silent.shed(n, now.Add(-shedAfter))
	if k > 0 {
		poke(w.note)
	}
	return k, oldest
}

// relievePause sheds silent connections while an rr worker is paused, down
// to the level at which it resumes: the closes resume it. Connections it
// takes meanwhile (frames received before the pause) may keep it paused, so
// it looks again until it resumes or sheds nothing. It returns when to try
// again (the oldest silent connection is not silent for long enough yet),
// nil when there is no need or nothing silent is left.
func (w *worker) relievePause(now time.Time) <-chan time.Time {
	g := w.gate
	for g != nil && g.paused.Load() {
		excess := g.conns() - g.low
		if excess <= 0 {
			g.update(0) // the resume could not be sent: try again
			return nil
		}
		n, oldest := w.shed(excess, now)
		if oldest.IsZero() {
			return nil
		}
		if n == 0 {
			return time.After(max(oldest.Add(shedAfter).Sub(now), time.Millisecond))
		}
	}
	return nil
}

// run is the worker's owner loop: see worker.
func (w *worker) run() {
	var (
		l        *listener
		draining bool
		told     bool // drainCh is closed
		parked   bool // l has handed out all it will
		wait     *time.Timer
		waitC    <-chan time.Time // parkWait for the drain in progress
		queue    []*handedConn    // sent on the control channel, waiting for Accept
		logs     = newWorkerLogs(slog.Default())
		logC     <-chan time.Time
		shedC    <-chan time.Time // rr: paused, with silent connections not yet old enough
	)
	tell := func() {
		if told {
			return
		}
		told, waitC = true, nil
		if wait != nil {
			wait.Stop()
		}
		close(w.drainCh)
		if !w.watched.Load() {
			syscall.Kill(os.Getpid(), syscall.SIGTERM)
		}
	}
	drain := func() {
		if draining {
			return
		}
		draining = true
		if l == nil || parked {
			tell()
			return
		}
		// Wait for Accept to hand out what already arrived (parked),
		// but not forever.
		l.stopTaking()
		wait = time.NewTimer(parkWait)
		waitC = wait.C
	}
	for {
		var extra chan<- *handedConn
		var head *handedConn
		var lparked, lclosed <-chan struct{}
		if l != nil {
			lparked, lclosed = l.parked, l.closed
			if len(queue) > 0 {
				extra, head = l.extra, queue[0]
			}
		}
		select {
		case c := <-w.frames:
			switch {
			case c.eof:
				// The supervisor is gone: drain, and exit shortly after
				// whatever the application does, so that no worker
				// outlives its supervisor.
				fmt.Fprintln(os.Stderr, "cluster: supervisor gone; exiting")
				w.drainMS.Store(uint32(orphanExit / time.Millisecond))
				drain()
				time.AfterFunc(orphanExit, func() { os.Exit(1) })
			case c.f.Type == ipc.TypeDrain:
				w.drainMS.Store(c.f.Uint32())
				drain()
			case c.f.Type == ipc.TypeConns:
				// In reuseport mode the supervisor sends connections here
				// that waited in the backlog of a slot whose worker died,
				// each named by its listener's index.
				if l == nil {
					ipc.CloseAll(c.fds)
					continue
				}
				queue = adoptAll(queue, c.fds, c.f.Peers(), c.f.RecordSize(), l.localOf)
			case c.f.Type == ipc.TypeMessage:
				select {
				case w.msgs <- c.f.Payload:
				default: // nobody reads messages: drop rather than grow
					w.droppedMsgs.Add(1)
				}
			case c.f.Type == ipc.TypeGiveBack && w.back != nil:
				w.back.leaveSome(int(c.f.Uint32()))
			}
		case r := <-w.listens:
			l, parked = r.l, false
			if draining {
				l.stopTaking()
			}
			close(r.done)
		case extra <- head:
			queue[0] = nil
			queue = queue[1:]
			l.wake()
		case <-lparked:
			// Accept found nothing more to take (draining, or the
			// supervisor closed the handoff channel).
			parked = true
			// With hand-back the channel stays open for connections going
			// back; the listener's Close closes it.
			if l.handoff != nil && w.back == nil {
				l.handoff.Close()
			}
			if draining {
				tell()
			}
		case <-lclosed:
			for _, c := range queue {
				c.Close()
			}
			l, queue = nil, nil
			if draining {
				tell()
			}
		case <-waitC:
			tell()
		case <-w.note:
			logC = w.logCounts(logs, time.Now())
		case now := <-logC:
			logC = w.logCounts(logs, now)
		case <-w.pressure:
			shedC = w.relievePause(time.Now())
		case now := <-shedC:
			shedC = w.relievePause(now)
		}
	}
}
