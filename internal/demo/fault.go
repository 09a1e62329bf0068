package demo

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Fault is a defect a release of the demo worker can be built with
// (-ldflags "-X main.fault=..."), for testing canary reloads with
// releases that misbehave in a known way:
//
//	errors=P   P% of the requests answer 500 (every request but /health)
//	delay=D    every request takes D longer (every request but /health)
//	crash=D    the process exits with status 3 D after it started
//
// The zero Fault is none.
type Fault struct {
	ErrorPercent int
	Delay        time.Duration
	CrashAfter   time.Duration
}

// ParseFault parses a Fault; "" is none.
func ParseFault(s string) (Fault, error) {
	var f Fault
	if s == "" {
		return f, nil
	}
	k, v, _ := strings.Cut(s, "=")
	var err error
	switch k {
	case "errors":
		f.ErrorPercent, err = strconv.Atoi(v)
		if err == nil && (f.ErrorPercent < 0 || f.ErrorPercent > 100) {
			err = fmt.Errorf("want a percentage")
		}
	case "delay":
		f.Delay, err = time.ParseDuration(v)
	case "crash":
		f.CrashAfter, err = time.ParseDuration(v)
	default:
		err = fmt.Errorf("unknown fault %q (want errors=P, delay=D or crash=D)", k)
	}
	if err != nil {
		return f, fmt.Errorf("fault %q: %v", s, err)
	}
	return f, nil
}

// Arm starts the crash timer, if f has one.
func (f Fault) Arm() {
	if f.CrashAfter > 0 {
		time.AfterFunc(f.CrashAfter, func() {
			fmt.Fprintf(os.Stderr, "worker: injected fault: crashing %s after start\n", f.CrashAfter)
			os.Exit(3)
		})
	}
}

// Wrap adds f's errors and delay to every request to h but /health. An
// injected error's body names the pid that answered it.
func (f Fault) Wrap(h http.Handler) http.Handler {
	if f.ErrorPercent == 0 && f.Delay == 0 {
		return h
	}
	var n atomic.Uint64
	body := []byte("injected fault, pid " + strconv.Itoa(os.Getpid()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			h.ServeHTTP(w, r)
			return
		}
		time.Sleep(f.Delay) // the defect itself, not synchronisation
		if f.ErrorPercent > 0 && int(n.Add(1)%100) < f.ErrorPercent {
			w.Header()["Content-Type"] = contentTypeText
			w.WriteHeader(http.StatusInternalServerError)
			w.Write(body)
			return
		}
		h.ServeHTTP(w, r)
	})
}
