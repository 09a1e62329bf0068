package demo

import (
	"net/http"
	"os"
	"runtime"
	"time"
)

// maxHeavyN bounds /heavy's n: roughly 100ms of one core's sieving,
// divided among all of them.
const maxHeavyN = 50_000_000

type heavyBody struct {
	N          int     `json:"n"`
	Primes     int     `json:"primes"`
	Goroutines int     `json:"goroutines"`
	MS         float64 `json:"ms"`
	PID        int     `json:"pid"`
}

// heavyHandler counts the primes below the query parameter n over
// runtime.GOMAXPROCS(0) goroutines. If the request context is cancelled
// the work stops and nothing is written.
func heavyHandler(w http.ResponseWriter, r *http.Request) {
	n, ok := intParam(w, r, "n", maxHeavyN)
	if !ok {
		return
	}
	g := runtime.GOMAXPROCS(0)
	start := time.Now()
	primes, err := countPrimes(r.Context(), n, g)
	if err != nil {
		return
	}
	writeJSON(w, http.StatusOK, heavyBody{
		N:          n,
		Primes:     primes,
		Goroutines: g,
		MS:         float64(time.Since(start)) / float64(time.Millisecond),
		PID:        os.Getpid(),
	})
}
