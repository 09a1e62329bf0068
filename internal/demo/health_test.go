package demo

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"
)

func TestHealth(t *testing.T) {
	info := Info{
		WorkerID:   3,
		Mode:       "reuseport",
		Generation: 2,
		Started:    time.Now().Add(-90 * time.Second),
	}
	rec := httptest.NewRecorder()
	NewRouter(info, nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/health", nil))

	if want, have := http.StatusOK, rec.Code; want != have {
		t.Fatalf("want status %d, have %d", want, have)
	}
	if want, have := "application/json", rec.Header().Get("Content-Type"); want != have {
		t.Errorf("want Content-Type %q, have %q", want, have)
	}
	var have Health
	decode(t, rec, &have)

	if have.UptimeS < 90 || have.UptimeS > 90+60 {
		t.Errorf("want uptime_s about 90, have %v", have.UptimeS)
	}
	if have.Goroutines < 1 {
		t.Errorf("want goroutines >= 1, have %d", have.Goroutines)
	}
	have.UptimeS, have.Goroutines = 0, 0
	want := Health{Status: "ok", PID: os.Getpid(), Worker: 3, Slot: 3, Client: "192.0.2.1:1234", Mode: "reuseport", Generation: 2}
	if want != have {
		t.Errorf("want %+v, have %+v", want, have)
	}
}

// TestHealthEscapesMode checks the hand-built body stays valid JSON for any
// mode string.
func TestHealthEscapesMode(t *testing.T) {
	const mode = "odd \"mode\"\n\\ \u2028 <>"
	rec := httptest.NewRecorder()
	NewRouter(Info{Mode: mode}, nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/health", nil))
	var have Health
	decode(t, rec, &have)
	if want := mode; want != have.Mode {
		t.Errorf("want mode %q, have %q", want, have.Mode)
	}
}

func TestHealthStartedDefault(t *testing.T) {
	var have Health
	decode(t, serve(t, "/health"), &have)
	if have.UptimeS < 0 || have.UptimeS > 60 {
		t.Errorf("with zero Started: want small uptime_s, have %v", have.UptimeS)
	}
}

func TestCheckHealth(t *testing.T) {
	if err := CheckHealth(NewRouter(Info{Mode: "standalone"}, nil)); err != nil {
		t.Fatalf("want nil, have %v", err)
	}
}

func TestCheckHealthFailures(t *testing.T) {
	tests := []struct {
		name string
		h    http.HandlerFunc
	}{
		{"status 503", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "down", http.StatusServiceUnavailable)
		}},
		{"not json", func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte("ok"))
		}},
		{"status not ok", func(w http.ResponseWriter, _ *http.Request) {
			json.NewEncoder(w).Encode(Health{Status: "draining"})
		}},
		{"empty", func(http.ResponseWriter, *http.Request) {}},
		{"panic", func(http.ResponseWriter, *http.Request) {
			panic(errors.New("boom"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := CheckHealth(tt.h); err == nil {
				t.Error("want error, have nil")
			}
		})
	}
}

func TestCheckHealthPath(t *testing.T) {
	var have string
	CheckHealth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		have = r.Method + " " + r.URL.Path
	}))
	if want := "GET /health"; want != have {
		t.Errorf("want request %q, have %q", want, have)
	}
}
