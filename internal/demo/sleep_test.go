package demo

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	for _, target := range []string{"/sleep?ms=0", "/sleep?ms=20"} {
		start := time.Now()
		rec := serve(t, target)
		elapsed := time.Since(start)

		if want, have := http.StatusOK, rec.Code; want != have {
			t.Fatalf("GET %s: want status %d, have %d", target, want, have)
		}
		if want, have := "application/json", rec.Header().Get("Content-Type"); want != have {
			t.Errorf("GET %s: want Content-Type %q, have %q", target, want, have)
		}
		var have sleepBody
		decode(t, rec, &have)
		if want := time.Duration(have.SleptMS) * time.Millisecond; elapsed < want {
			t.Errorf("GET %s: returned after %v, want at least %v", target, elapsed, want)
		}
		if want := os.Getpid(); want != have.PID {
			t.Errorf("GET %s: want pid %d, have %d", target, want, have.PID)
		}
	}
	var have sleepBody
	decode(t, serve(t, "/sleep?ms=20"), &have)
	if want := 20; want != have.SleptMS {
		t.Errorf("want slept_ms %d, have %d", want, have.SleptMS)
	}
}

func TestSleepBadParam(t *testing.T) {
	for _, target := range []string{
		"/sleep",                         // missing
		"/sleep?ms=",                     // empty
		"/sleep?ms=soon",                 // not an integer
		"/sleep?ms=2.5",                  // not an integer
		"/sleep?ms=99999999999999999999", // overflows int
		"/sleep?ms=-1",                   // negative
		"/sleep?ms=60001",                // over max
	} {
		checkBadParam(t, target, "ms")
	}
}

func TestSleepCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/sleep?ms=60000", nil)
	rec := httptest.NewRecorder()
	h := NewRouter(Info{}, nil)

	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(rec, req)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("handler still sleeping 5s after cancel")
	}
	if rec.Body.Len() != 0 {
		t.Errorf("want empty body after cancel, have %q", rec.Body)
	}
}
