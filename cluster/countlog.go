package cluster

import (
	"log/slog"
	"time"
)

// logEvery bounds how often a worker logs connections it lost or shed for
// want of descriptors.
const logEvery = 10 * time.Second

// countLog reports counters that grow in bursts (truncated handoffs, shed
// connections) at most once per logEvery, as one line with what each grew
// by since the last line, instead of one line per event. The worker's loop
// owns it.
type countLog struct {
	log  *slog.Logger
	msg  string
	keys []string  // one per total
	last time.Time // when the last line was written
	seen []uint64  // totals it reported
}

// report logs what the totals add since the last line, if the first grew
// and logEvery has passed, and returns how long until the rest may be
// logged (0: nothing left).
func (t *countLog) report(now time.Time, totals ...uint64) time.Duration {
	if t.seen == nil {
		t.seen = make([]uint64, len(totals))
	}
	if totals[0] == t.seen[0] {
		return 0
	}
	if wait := t.last.Add(logEvery).Sub(now); !t.last.IsZero() && wait > 0 {
		return wait
	}
	args := make([]any, 0, 2*len(totals)+2)
	for i, v := range totals {
		args = append(args, t.keys[i], v-t.seen[i])
	}
	t.log.Warn(t.msg, append(args, "every", logEvery)...)
	t.last = now
	copy(t.seen, totals)
	return 0
}

// workerLogs are the worker's rate-limited logs.
type workerLogs struct {
	trunc, shed countLog
}

func newWorkerLogs(log *slog.Logger) *workerLogs {
	return &workerLogs{
		trunc: countLog{log: log, msg: "cluster: handoff truncated: out of descriptors, connections lost",
			keys: []string{"frames", "lost"}},
		shed: countLog{log: log, msg: "cluster: out of descriptors: closed connections that had sent nothing",
			keys: []string{"shed"}},
	}
}

// logCounts reports the worker's truncation and shedding totals and returns
// when to call it again, nil for never.
func (w *worker) logCounts(t *workerLogs, now time.Time) <-chan time.Time {
	wait := t.trunc.report(now, w.truncFrames.Load(), w.truncLost.Load())
	if s := t.shed.report(now, w.silent.total.Load()); s > 0 && (wait == 0 || s < wait) {
		wait = s
	}
	if wait > 0 {
		return time.After(wait)
	}
	return nil
}
