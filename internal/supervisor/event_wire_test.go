package supervisor

import (
	"encoding/json"
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/prefork/prefork/internal/control"
)

// The events' JSON, as the admin API's /api/events sends each one (its
// keys sorted; `ctl events` puts time and event first, as control's tests
// pin), is a contract with the dashboard and with scripts: these lines
// must not change. Zero values that carry meaning (an exit code 0, no
// respawn delay, an empty message, a worker with no features) are sent.
func TestEventWireFormat(t *testing.T) {
	h := newHarness(t, nil)
	h.start(true)
	h.s.messages.onMessage(h.cur(1), nil)
	h.s.onProtocol(h.cur(2), errors.New("bad frame"), 1)
	h.exit(h.cur(1), 0)
	h.fake(h.cur(2)).exit(exitStatus{signal: "killed", known: true})
	h.run()
	h.ready(h.cur(1))
	h.ready(h.cur(2))
	scaled := h.control(control.Request{Cmd: control.CmdScale, N: 3})
	h.ready(h.cur(3))
	h.answer(scaled)
	h.signal(syscall.SIGHUP)
	for range 3 {
		next := h.s.reloader.roll.next
		old := h.cur(next.slot.id)
		h.ready(next)
		h.exit(old, 0)
	}

	want := []string{
		`{"cause":"start","event":"fork","generation":1,"pid":1001,"slot":1}`,
		`{"cause":"start","event":"fork","generation":1,"pid":1002,"slot":2}`,
		`{"boot_ms":0,"event":"ready","features":"none","generation":1,"pid":1001,"slot":1}`,
		`{"boot_ms":0,"event":"ready","features":"none","generation":1,"pid":1002,"slot":2}`,
		`{"event":"running","startup_ms":0,"workers":2}`,
		`{"event":"message","generation":1,"msg":"","pid":1001,"seq":1,"slot":1}`,
		`{"count":1,"error":"bad frame","event":"protocol","generation":1,"pid":1002,"slot":2}`,
		`{"code":0,"event":"exit","generation":1,"pid":1001,"reason":"crash","slot":1}`,
		`{"cause":"crash","delay_ms":0,"event":"respawn","slot":1}`,
		`{"cause":"crash","event":"fork","generation":1,"pid":1003,"slot":1}`,
		`{"event":"exit","generation":1,"pid":1002,"reason":"crash","signal":"killed","slot":2}`,
		`{"cause":"crash","delay_ms":0,"event":"respawn","slot":2}`,
		`{"cause":"crash","event":"fork","generation":1,"pid":1004,"slot":2}`,
		`{"boot_ms":0,"event":"ready","features":"none","generation":1,"pid":1003,"slot":1}`,
		`{"boot_ms":0,"event":"ready","features":"none","generation":1,"pid":1004,"slot":2}`,
		`{"event":"scale","from":2,"step":"start","to":3}`,
		`{"cause":"scale","event":"fork","generation":1,"pid":1005,"slot":3}`,
		`{"boot_ms":0,"event":"ready","features":"none","generation":1,"pid":1005,"slot":3}`,
		`{"event":"scale","step":"done","to":3}`,
		`{"event":"reload","generation":2,"step":"start"}`,
		`{"cause":"reload","event":"fork","generation":2,"pid":1006,"slot":1}`,
		`{"event":"reload","generation":2,"pid":1006,"slot":1,"step":"fork"}`,
		`{"boot_ms":0,"event":"ready","features":"none","generation":2,"pid":1006,"slot":1}`,
		`{"event":"drain","generation":1,"pid":1003,"reason":"reload","slot":1}`,
		`{"cause":"reload","event":"fork","generation":2,"pid":1007,"slot":2}`,
		`{"event":"reload","generation":2,"pid":1007,"slot":2,"step":"fork"}`,
		`{"code":0,"event":"exit","generation":1,"pid":1003,"reason":"reload","slot":1}`,
		`{"boot_ms":0,"event":"ready","features":"none","generation":2,"pid":1007,"slot":2}`,
		`{"event":"drain","generation":1,"pid":1004,"reason":"reload","slot":2}`,
		`{"cause":"reload","event":"fork","generation":2,"pid":1008,"slot":3}`,
		`{"event":"reload","generation":2,"pid":1008,"slot":3,"step":"fork"}`,
		`{"code":0,"event":"exit","generation":1,"pid":1004,"reason":"reload","slot":2}`,
		`{"boot_ms":0,"event":"ready","features":"none","generation":2,"pid":1008,"slot":3}`,
		`{"event":"drain","generation":1,"pid":1005,"reason":"reload","slot":3}`,
		`{"event":"reload","generation":2,"replaced":3,"step":"done"}`,
		`{"code":0,"event":"exit","generation":1,"pid":1005,"reason":"reload","slot":3}`,
	}
	var have []string
	for _, e := range *h.evs.evs {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if e := string(b); !strings.Contains(e, `"error":"ipc: recv:`) {
			// A fake worker's exit closes its end of a real socket pair:
			// whether the reader sees the reset first is a race.
			have = append(have, e)
		}
	}
	for i, w := range want {
		if i >= len(have) || have[i] != w {
			t.Errorf("event %d:\nwant %s\nhave %s", i, w, at(have, i))
		}
	}
	if len(have) > len(want) {
		t.Errorf("%d more events than pinned, from %s", len(have)-len(want), have[len(want)])
	}
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "(none)"
}
