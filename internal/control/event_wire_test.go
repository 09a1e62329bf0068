package control

import (
	"encoding/json"
	"testing"
)

// An event line keeps its bytes: `ctl events` and the events socket write
// event and time first, then the other fields sorted (marshalEvent); the
// admin API's /api/events writes every field sorted (json.Marshal). The
// supervisor's tests pin which fields each event has.
func TestEventLinesKeepTheirFormat(t *testing.T) {
	for _, tc := range []struct{ sorted, line string }{
		{`{"cause":"start","event":"fork","generation":1,"pid":1001,"slot":1,"time":"2026-01-02T03:04:05.123456789Z"}`,
			`{"event":"fork","time":"2026-01-02T03:04:05.123456789Z","cause":"start","generation":1,"pid":1001,"slot":1}`},
		{`{"boot_ms":12.345,"event":"ready","features":"peers,pause","generation":1,"pid":1001,"slot":1}`,
			`{"event":"ready","boot_ms":12.345,"features":"peers,pause","generation":1,"pid":1001,"slot":1}`},
		{`{"code":0,"event":"exit","generation":1,"pid":1001,"reason":"crash","slot":1}`,
			`{"event":"exit","code":0,"generation":1,"pid":1001,"reason":"crash","slot":1}`},
		{`{"event":"exit","generation":3,"pid":1002,"reason":"hang","signal":"killed","slot":2}`,
			`{"event":"exit","generation":3,"pid":1002,"reason":"hang","signal":"killed","slot":2}`},
		{`{"cause":"crash","delay_ms":0,"event":"respawn","slot":1}`,
			`{"event":"respawn","cause":"crash","delay_ms":0,"slot":1}`},
		{`{"event":"message","generation":1,"msg":"","pid":1001,"slot":1}`,
			`{"event":"message","generation":1,"msg":"","pid":1001,"slot":1}`},
		{`{"event":"message","generation":1,"msg":"7","pid":1001,"seq":18446744073709551615,"slot":1}`,
			`{"event":"message","generation":1,"msg":"7","pid":1001,"seq":18446744073709551615,"slot":1}`},
		{`{"event":"running","startup_ms":0,"workers":2}`,
			`{"event":"running","startup_ms":0,"workers":2}`},
		{`{"event":"reload","generation":2,"replaced":3,"step":"done"}`,
			`{"event":"reload","generation":2,"replaced":3,"step":"done"}`},
		{`{"event":"scale","from":2,"step":"start","to":3}`,
			`{"event":"scale","from":2,"step":"start","to":3}`},
		{`{"by":-1,"event":"deferred","queued":0,"request":"scale"}`,
			`{"event":"deferred","by":-1,"queued":0,"request":"scale"}`},
		{`{"event":"deferred","request":"reload","until":"running"}`,
			`{"event":"deferred","request":"reload","until":"running"}`},
		{`{"event":"freeze","gap_s":2.5}`, `{"event":"freeze","gap_s":2.5}`},
		{`{"event":"hang","generation":1,"pid":9,"silent_s":31.25,"slot":1}`,
			`{"event":"hang","generation":1,"pid":9,"silent_s":31.25,"slot":1}`},
		{`{"event":"recycle","generation":1,"pid":9,"slot":1,"why":"served 10 requests (-max-requests)"}`,
			`{"event":"recycle","generation":1,"pid":9,"slot":1,"why":"served 10 requests (-max-requests)"}`},
		{`{"event":"reap","pid":77}`, `{"event":"reap","pid":77}`},
		{`{"count":4,"event":"dropped"}`, `{"event":"dropped","count":4}`},
		{`{"event":"stop"}`, `{"event":"stop"}`},
	} {
		var e Event
		if err := json.Unmarshal([]byte(tc.sorted), &e); err != nil {
			t.Fatalf("%s: %v", tc.sorted, err)
		}
		if b, err := json.Marshal(e); err != nil || string(b) != tc.sorted {
			t.Errorf("json.Marshal:\nwant %s\nhave %s (%v)", tc.sorted, b, err)
		}
		if b, err := marshalEvent(e); err != nil || string(b) != tc.line {
			t.Errorf("marshalEvent:\nwant %s\nhave %s (%v)", tc.line, b, err)
		}
	}
}
