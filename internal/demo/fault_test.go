package demo

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// A release built with a fault misbehaves as it says, on every route but
// /health, which names the build.
func TestFault(t *testing.T) {
	for _, bad := range []string{"errors=101", "errors=x", "delay=1", "crash=", "oops=1"} {
		if _, err := ParseFault(bad); err == nil {
			t.Errorf("ParseFault(%q): no error", bad)
		}
	}
	f, err := ParseFault("errors=20")
	if err != nil {
		t.Fatal(err)
	}
	h := f.Wrap(NewRouter(Info{Build: "b2"}, nil))
	failed := 0
	for range 100 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/pid", nil))
		if rec.Code == http.StatusInternalServerError {
			failed++
		}
	}
	if failed != 20 {
		t.Fatalf("%d of 100 requests failed, want 20", failed)
	}
	for range 10 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil))
		var hl Health
		if err := json.Unmarshal(rec.Body.Bytes(), &hl); rec.Code != http.StatusOK || err != nil || hl.Build != "b2" || hl.Status != "ok" {
			t.Fatalf("/health: %d %s, want 200 naming build b2", rec.Code, rec.Body)
		}
	}
	if f, _ := ParseFault("delay=50ms"); f.Delay != 50*time.Millisecond {
		t.Fatalf("delay %v", f.Delay)
	}
}
