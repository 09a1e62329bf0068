package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"
)

// maxLogEvents bounds the lines kept per server; later lines are counted.
const maxLogEvents = 20000

// logEvent is one line a server wrote, stamped when the harness read it.
// Lines that are JSON objects (the supervisor's -log-format json, and
// bench/node/cluster.js) also have their fields decoded.
type logEvent struct {
	at     time.Time
	line   string
	fields map[string]any
}

func (e logEvent) msg() string { s, _ := e.fields["msg"].(string); return s }

func (e logEvent) int(key string) int {
	f, _ := e.fields[key].(float64)
	return int(f)
}

// duration decodes a field written as a Go duration string ("5.56ms").
func (e logEvent) duration(key string) (time.Duration, bool) {
	s, _ := e.fields[key].(string)
	d, err := time.ParseDuration(s)
	return d, err == nil
}

// logWatch is the io.Writer a server's stdout and stderr go to. It splits
// lines, stamps each with its arrival time and lets the harness wait for a
// line. Timing from arrival (not from the logged "ts", which has millisecond
// resolution) costs one pipe hop, a few microseconds.
type logWatch struct {
	mu      sync.Mutex
	partial []byte
	events  []logEvent
	dropped int
	changed chan struct{} // closed and replaced on each new line
}

func newLogWatch() *logWatch { return &logWatch{changed: make(chan struct{})} }

func (w *logWatch) Write(p []byte) (int, error) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := string(bytes.TrimRight(w.partial[:i], "\r"))
		w.partial = w.partial[i+1:]
		if len(w.events) >= maxLogEvents {
			w.dropped++
			continue
		}
		e := logEvent{at: now, line: line}
		if strings.HasPrefix(line, "{") {
			json.Unmarshal([]byte(line), &e.fields) // not JSON: fields stay nil
		}
		w.events = append(w.events, e)
		added = true
	}
	if added {
		close(w.changed)
		w.changed = make(chan struct{})
	}
	return len(p), nil
}

// errExited is returned by wait when the server exits before the line came.
var errExited = errors.New("bench: server exited")

// wait returns the first event at index from or later that match accepts,
// and its index. It gives up when ctx ends or exited is closed.
func (w *logWatch) wait(ctx context.Context, from int, exited <-chan struct{}, match func(logEvent) bool) (logEvent, int, error) {
	final := false
	for {
		w.mu.Lock()
		for i := from; i < len(w.events); i++ {
			if match(w.events[i]) {
				e := w.events[i]
				w.mu.Unlock()
				return e, i, nil
			}
		}
		from = len(w.events)
		changed := w.changed
		w.mu.Unlock()
		if final {
			return logEvent{}, from, errExited
		}
		select {
		case <-changed:
		case <-exited:
			// exited closes after cmd.Wait, which returns only once the
			// output has been copied: one more scan sees every line.
			final = true
		case <-ctx.Done():
			return logEvent{}, from, ctx.Err()
		}
	}
}

// len returns the number of lines seen so far.
func (w *logWatch) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.events)
}

// count returns how many lines have the message msg.
func (w *logWatch) count(msg string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, e := range w.events {
		if e.msg() == msg {
			n++
		}
	}
	return n
}

// text returns the lines seen, for the raw section of the results.
func (w *logWatch) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	for _, e := range w.events {
		b.WriteString(e.line)
		b.WriteByte('\n')
	}
	if len(w.partial) > 0 {
		b.Write(w.partial)
		b.WriteByte('\n')
	}
	if w.dropped > 0 {
		b.WriteString("... (" + itoa(w.dropped) + " more lines not kept)\n")
	}
	return b.String()
}
