package demo

import (
	"net/http"
	"os"
	"time"

	"github.com/prefork/prefork/internal/spin"
)

// maxSpinUS bounds /spin's us: 100ms of CPU.
const maxSpinUS = 100_000

type spinBody struct {
	SpunUS int `json:"spun_us"`
	PID    int `json:"pid"`
}

// spinHandler spends the query parameter us microseconds of CPU time of
// the thread serving the request (spin.Thread), then answers. It gives the
// benchmarks a request of known server cost, whatever else shares the CPU.
func spinHandler(w http.ResponseWriter, r *http.Request) {
	us, ok := intParam(w, r, "us", maxSpinUS)
	if !ok {
		return
	}
	if err := spin.Thread(time.Duration(us) * time.Microsecond); err != nil {
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, spinBody{SpunUS: us, PID: os.Getpid()})
}
