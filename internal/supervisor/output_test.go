package supervisor

import (
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	zapobserver "go.uber.org/zap/zaptest/observer"
)

// relayAll relays r through an observed logger under lim's rate (unlimited
// if 0) and returns what was logged, failing t if the relay does not end.
func relayAll(t *testing.T, r io.ReadCloser, rate int, now func() time.Time) []zapobserver.LoggedEntry {
	t.Helper()
	core, logs := zapobserver.New(zapcore.InfoLevel)
	log := zap.New(core)
	if rate == 0 {
		rate = 1 << 30
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		relay(r, log, "stdout", &outputLimit{log: log, rate: rate, now: now})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not return within 10s of its input ending")
	}
	return logs.AllUntimed()
}

// TestRelayLongLine: a line far over the piece size is logged in parts, and
// the relay reads on, so the worker's writes all succeed.
func TestRelayLongLine(t *testing.T) {
	long := strings.Repeat("0123456789abcdef", 3<<20/16) // 3 MiB
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	werr := make(chan error, 1)
	go func() {
		_, err := io.WriteString(w, long+"\nafter 1\nafter 2\n")
		w.Close()
		werr <- err
	}()
	entries := relayAll(t, r, 0, time.Now)
	if err := <-werr; err != nil {
		t.Fatalf("worker's write: %v", err)
	}

	wantParts := len(long) / maxOutputLine
	if want, have := wantParts+2, len(entries); want != have {
		t.Fatalf("want %d entries, have %d", want, have)
	}
	var joined strings.Builder
	for i, e := range entries[:wantParts] {
		f := e.ContextMap()
		if f["part"] != int64(i+1) || f["more"] != (i+1 < wantParts) || f["stream"] != "stdout" {
			t.Errorf("entry %d: want part %d, more %v; have %v", i, i+1, i+1 < wantParts, f)
		}
		joined.WriteString(e.Message)
	}
	if joined.String() != long {
		t.Errorf("the parts do not add up to the line (%d bytes, want %d)", joined.Len(), len(long))
	}
	for i, e := range entries[wantParts:] {
		want := "after " + strconv.Itoa(i+1)
		if _, split := e.ContextMap()["part"]; e.Message != want || split {
			t.Errorf("want %q whole, have %q %v", want, e.Message, e.ContextMap())
		}
	}
}

func TestRelaySplit(t *testing.T) {
	a := strings.Repeat("a", maxOutputLine)
	for _, tc := range []struct {
		name string
		in   string
		want []string // message, then " part/more" if split
	}{
		{"short", "x\ny\r\n", []string{"x", "y"}},
		{"no final newline", "x\ny", []string{"x", "y"}},
		{"one byte short", a[1:] + "\n", []string{a[1:]}},
		{"exactly one piece", a + "\n", []string{a + " 1/false"}},
		{"one piece and a byte", a + "b\n", []string{a + " 1/true", "b 2/false"}},
		{"two pieces, no newline", a + a, []string{a + " 1/true", a + " 2/false"}},
		{"split then short", a + a + "b\nc\n", []string{a + " 1/true", a + " 2/true", "b 3/false", "c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var have []string
			for _, e := range relayAll(t, io.NopCloser(strings.NewReader(tc.in)), 0, time.Now) {
				f := e.ContextMap()
				if part, ok := f["part"]; ok {
					e.Message += " " + strconv.FormatInt(part.(int64), 10) + "/" + strconv.FormatBool(f["more"].(bool))
				}
				have = append(have, e.Message)
			}
			if len(have) != len(tc.want) {
				t.Fatalf("want %d entries, have %d", len(tc.want), len(have))
			}
			for i := range have {
				if have[i] != tc.want[i] {
					t.Errorf("entry %d: want %s, have %s", i, abbrev(tc.want[i]), abbrev(have[i]))
				}
			}
		})
	}
}

// TestRelayRateLimit: over the rate, lines are read and dropped, and each
// burst of drops is reported once, at the next window or at EOF.
func TestRelayRateLimit(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	calls := 0
	now := func() time.Time { // lines 1-5 in one second, 6-10 in the next
		calls++
		return t0.Add(time.Duration((calls-1)/5) * time.Second)
	}
	in := "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n"
	var have []string
	for _, e := range relayAll(t, io.NopCloser(strings.NewReader(in)), 3, now) {
		if n, ok := e.ContextMap()["entries"]; ok {
			e.Message = "suppressed " + strconv.FormatInt(n.(int64), 10)
		}
		have = append(have, e.Message)
	}
	want := []string{"1", "2", "3", "suppressed 2", "6", "7", "8", "suppressed 2"}
	if strings.Join(want, ",") != strings.Join(have, ",") {
		t.Fatalf("want %v, have %v", want, have)
	}
}

// abbrev shortens a long message for a failure report, keeping its length
// and its end, where the part fields are.
func abbrev(s string) string {
	if len(s) <= 40 {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:8]) + "...(" + strconv.Itoa(len(s)) + " bytes)..." + strconv.Quote(s[len(s)-12:])
}
