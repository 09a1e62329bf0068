package demo

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestHeavy(t *testing.T) {
	tests := []struct{ n, primes int }{
		{0, 0}, {10, 4}, {100, 25}, {1_000_000, 78498},
	}
	for _, tt := range tests {
		target := "/heavy?n=" + strconv.Itoa(tt.n)
		rec := serve(t, target)
		if want, have := http.StatusOK, rec.Code; want != have {
			t.Fatalf("GET %s: want status %d, have %d", target, want, have)
		}
		if want, have := "application/json", rec.Header().Get("Content-Type"); want != have {
			t.Errorf("GET %s: want Content-Type %q, have %q", target, want, have)
		}
		var have heavyBody
		decode(t, rec, &have)
		if have.MS < 0 {
			t.Errorf("GET %s: want ms >= 0, have %v", target, have.MS)
		}
		have.MS = 0
		want := heavyBody{N: tt.n, Primes: tt.primes, Goroutines: runtime.GOMAXPROCS(0), PID: os.Getpid()}
		if want != have {
			t.Errorf("GET %s: want %+v, have %+v", target, want, have)
		}
	}
}

func TestHeavyBadParam(t *testing.T) {
	for _, target := range []string{
		"/heavy",                        // missing
		"/heavy?n=",                     // empty
		"/heavy?m=10",                   // misnamed
		"/heavy?n=ten",                  // not an integer
		"/heavy?n=1.5",                  // not an integer
		"/heavy?n=1e6",                  // not an integer
		"/heavy?n=99999999999999999999", // overflows int
		"/heavy?n=-1",                   // negative
		"/heavy?n=50000001",             // over max
	} {
		checkBadParam(t, target, "n")
	}
}

// TestHeavyCancelled also shows the largest n is accepted: a 400 would have
// a body.
func TestHeavyCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/heavy?n=50000000", nil)
	rec := httptest.NewRecorder()
	h := NewRouter(Info{}, zap.NewNop())

	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(rec, req)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("handler still running 5s after cancel")
	}
	if rec.Body.Len() != 0 {
		t.Errorf("want empty body after cancel, have %q", rec.Body)
	}
}
