package cluster

import (
	"log/slog"
	"time"
)

// truncLogEvery bounds how often a worker logs truncated handoffs.
const truncLogEvery = 10 * time.Second

// truncLog reports truncated conns frames (a worker out of descriptors) at
// most once per truncLogEvery, as one line with the counts since the last
// line, instead of one line per frame. The worker's loop owns it.
type truncLog struct {
	log          *slog.Logger
	last         time.Time // when the last line was written
	frames, lost uint64    // totals it reported
}

// report logs what the totals add since the last line, if there is
// anything and truncLogEvery has passed, and returns how long until the
// rest may be logged (0: nothing left).
func (t *truncLog) report(now time.Time, frames, lost uint64) time.Duration {
	if frames == t.frames {
		return 0
	}
	if wait := t.last.Add(truncLogEvery).Sub(now); !t.last.IsZero() && wait > 0 {
		return wait
	}
	t.log.Warn("cluster: handoff truncated: out of descriptors, connections lost",
		"frames", frames-t.frames, "lost", lost-t.lost, "every", truncLogEvery)
	t.last, t.frames, t.lost = now, frames, lost
	return 0
}

// logTruncated reports the worker's truncation totals and returns when to
// call it again, nil for never.
func (w *worker) logTruncated(t *truncLog, now time.Time) <-chan time.Time {
	if wait := t.report(now, w.truncFrames.Load(), w.truncLost.Load()); wait > 0 {
		return time.After(wait)
	}
	return nil
}
