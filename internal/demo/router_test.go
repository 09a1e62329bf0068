package demo

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestPID(t *testing.T) {
	rec := serve(t, "/pid")
	if want, have := http.StatusOK, rec.Code; want != have {
		t.Fatalf("want status %d, have %d", want, have)
	}
	if want, have := "text/plain; charset=utf-8", rec.Header().Get("Content-Type"); want != have {
		t.Errorf("want Content-Type %q, have %q", want, have)
	}
	if want, have := strconv.Itoa(os.Getpid()), rec.Body.String(); want != have {
		t.Errorf("want body %q, have %q", want, have)
	}
}

func TestIP(t *testing.T) {
	rec := serve(t, "/ip")
	// httptest.NewRequest's client is 192.0.2.1:1234.
	if want, have := "192.0.2.1:1234", rec.Body.String(); rec.Code != http.StatusOK || want != have {
		t.Fatalf("want 200 %q, have %d %q", want, rec.Code, have)
	}
}

func TestNotFound(t *testing.T) {
	for _, target := range []string{"/", "/nope", "/pid/extra"} {
		if want, have := http.StatusNotFound, serve(t, target).Code; want != have {
			t.Errorf("GET %s: want status %d, have %d", target, want, have)
		}
	}
}

func TestSubmitAnswersPID(t *testing.T) {
	rec := httptest.NewRecorder()
	NewRouter(Info{}, nil).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/submit", strings.NewReader("x")))
	if want, have := strconv.Itoa(os.Getpid()), rec.Body.String(); rec.Code != 200 || want != have {
		t.Fatalf("POST /submit: %d %q, want 200 %q", rec.Code, have, want)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	h := NewRouter(Info{}, nil)
	for _, path := range []string{"/health", "/pid", "/ip", "/heavy?n=10", "/sleep?ms=0", "/spin?us=0"} {
		for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
			if want, have := http.StatusMethodNotAllowed, rec.Code; want != have {
				t.Errorf("%s %s: want status %d, have %d", method, path, want, have)
			}
		}
	}
}

func TestRecoverer(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	h := recoverer(zap.New(core))(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("boom")
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil))

	if want, have := http.StatusInternalServerError, rec.Code; want != have {
		t.Errorf("want status %d, have %d", want, have)
	}
	entries := logs.All()
	if want, have := 1, len(entries); want != have {
		t.Fatalf("want %d log entries, have %d", want, have)
	}
	if want, have := zapcore.ErrorLevel, entries[0].Level; want != have {
		t.Errorf("want level %v, have %v", want, have)
	}
	if want, have := "boom", entries[0].ContextMap()["panic"]; want != have {
		t.Errorf("want panic field %q, have %v", want, have)
	}
}

func TestRecovererAbortHandler(t *testing.T) {
	h := recoverer(zap.NewNop())(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic(http.ErrAbortHandler)
	}))
	defer func() {
		if want, have := any(http.ErrAbortHandler), recover(); want != have {
			t.Errorf("want re-panic with %v, have %v", want, have)
		}
	}()
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/x", nil))
}
