package proctest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Output collects a process's output (its stdout and stderr, and its
// children's when they inherit them) from the goroutines that copy it. Its
// zero value is ready to use.
type Output struct {
	mu      sync.Mutex
	b       bytes.Buffer
	scanned int              // bytes of b split into lines and decoded
	objects []map[string]any // the JSON lines of b[:scanned]
}

// Write appends p.
func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

// String returns everything written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// JSON returns the lines written so far that are JSON objects (structured
// log lines), decoded.
func (o *Output) JSON() []map[string]any {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.decode()
	return append([]map[string]any(nil), o.objects...)
}

// decode decodes the complete lines written since the last call.
func (o *Output) decode() {
	rest := o.b.Bytes()[o.scanned:]
	for {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return
		}
		var m map[string]any
		if json.Unmarshal(rest[:i], &m) == nil {
			o.objects = append(o.objects, m)
		}
		rest = rest[i+1:]
		o.scanned += i + 1
	}
}

// WaitJSON waits up to d for a JSON line (already written or to come) that
// matches and returns it; false if none did.
func (o *Output) WaitJSON(d time.Duration, match func(map[string]any) bool) (map[string]any, bool) {
	deadline := time.Now().Add(d)
	for i := 0; ; {
		o.mu.Lock()
		o.decode()
		for ; i < len(o.objects); i++ {
			if m := o.objects[i]; match(m) {
				o.mu.Unlock()
				return m, true
			}
		}
		o.mu.Unlock()
		if time.Now().After(deadline) {
			return nil, false
		}
		time.Sleep(10 * time.Millisecond) // polling: writes do not signal
	}
}

// Tail returns the last n lines, each cut to 300 bytes, with a run of
// lines of the same log message (a flood) shown once and counted.
func (o *Output) Tail(n int) string {
	var lines []string
	prev, run := "", 0
	flush := func() {
		if run > 1 {
			lines = append(lines, fmt.Sprintf("\t... %d more lines like the one above", run-1))
		}
	}
	for _, line := range strings.Split(strings.TrimRight(o.String(), "\n"), "\n") {
		msg := line
		if i := strings.Index(line, `"msg":`); i >= 0 {
			msg, _, _ = strings.Cut(line[i:], ",")
		}
		if msg == prev {
			run++
			continue
		}
		flush()
		prev, run = msg, 1
		lines = append(lines, line[:min(len(line), 300)])
	}
	flush()
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
