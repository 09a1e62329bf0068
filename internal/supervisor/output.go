package supervisor

import (
	"bufio"
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
)

const (
	// maxOutputLine is the longest piece of worker output logged as one
	// entry. A longer line is logged in pieces of this size, each with a
	// part number, so that no line, however long, stops the relay.
	maxOutputLine = 64 << 10

	// outputRate is how many entries one worker's output (both streams)
	// may add to the log per second. The rest is still read, so the worker
	// never blocks on a full pipe, but dropped and counted.
	outputRate = 1000
)

// outputCapture re-emits a worker's stdout and stderr through the
// supervisor's logger, a line at a time, with the slot and pid as fields
// (-worker-output capture).
type outputCapture struct {
	stdoutR, stdoutW *os.File
	stderrR, stderrW *os.File
}

func newOutputCapture() (*outputCapture, error) {
	c := &outputCapture{}
	var err error
	if c.stdoutR, c.stdoutW, err = os.Pipe(); err != nil {
		return nil, err
	}
	if c.stderrR, c.stderrW, err = os.Pipe(); err != nil {
		c.stdoutR.Close()
		c.stdoutW.Close()
		return nil, err
	}
	return c, nil
}

// started closes the write ends (the child has its own copies) and, if the
// child runs, starts a reader per stream; a reader ends at EOF, when the
// worker and anything it started have closed the pipe.
func (c *outputCapture) started(ok bool, log *zap.Logger, slot, pid int) {
	c.stdoutW.Close()
	c.stderrW.Close()
	if !ok {
		c.stdoutR.Close()
		c.stderrR.Close()
		return
	}
	l := log.Named("worker").With(zap.Int("slot", slot), zap.Int("pid", pid))
	lim := &outputLimit{log: l, rate: outputRate, now: time.Now}
	go relay(c.stdoutR, l, "stdout", lim)
	go relay(c.stderrR, l, "stderr", lim)
}

// relay logs every line read from r until EOF, then closes r. It reads on
// whatever it cannot log: closing the pipe early would kill the worker with
// EPIPE (or SIGPIPE) on its next write.
//
// A line longer than maxOutputLine is logged in pieces with fields part
// (1, 2, ...) and more (false on the last piece).
func relay(r io.ReadCloser, log *zap.Logger, stream string, lim *outputLimit) {
	defer r.Close()
	defer lim.flush()
	emit := func(text string, part int, more bool) {
		switch {
		case !lim.allow():
		case part == 0:
			log.Info(text, zap.String("stream", stream))
		default:
			log.Info(text, zap.String("stream", stream), zap.Int("part", part), zap.Bool("more", more))
		}
	}
	br := bufio.NewReaderSize(r, maxOutputLine)
	var pending string // the last full piece of a long line, not yet logged
	part := 0          // its number; 0 while no long line is being read
	for {
		// ReadLine returns at most a buffer's worth (more = true) and the
		// rest of the line from the next calls; it drops the "\n" or "\r\n".
		line, more, err := br.ReadLine()
		if err != nil {
			if part > 0 {
				emit(pending, part, false) // the worker ended without a newline
			}
			if !errors.Is(err, io.EOF) {
				log.Warn("worker output unreadable", zap.String("stream", stream), zap.Error(err))
			}
			return
		}
		if part > 0 {
			// A line that ends right at the end of a piece comes back as
			// a full piece, then an empty one: the full piece is the last.
			if len(line) == 0 && !more {
				emit(pending, part, false)
				part = 0
				continue
			}
			emit(pending, part, true)
		}
		switch {
		case more:
			part++
			pending = string(line) // line is only valid until the next read
		case part > 0:
			emit(string(line), part+1, false)
			part = 0
		default:
			emit(string(line), 0, false)
		}
	}
}

// outputLimit caps the entries a worker's output adds to the log at rate
// per one-second window. The entries it drops are reported in one entry at
// the first line of a later window, or when a stream ends.
type outputLimit struct {
	log  *zap.Logger
	rate int
	now  func() time.Time

	mu      sync.Mutex // both streams' relays share one limit
	start   time.Time  // of the current window
	n       int        // entries allowed in it
	dropped int        // entries not logged since the last report
}

// allow reports whether one more entry may be logged now.
func (l *outputLimit) allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := l.now(); now.Sub(l.start) >= time.Second {
		l.report()
		l.start, l.n = now, 0
	}
	if l.n >= l.rate {
		l.dropped++
		return false
	}
	l.n++
	return true
}

// flush reports the entries dropped so far.
func (l *outputLimit) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.report()
}

func (l *outputLimit) report() {
	if l.dropped > 0 {
		l.log.Warn("worker output suppressed: over the rate limit", zap.Int("entries", l.dropped), zap.Int("per_second", l.rate))
		l.dropped = 0
	}
}
