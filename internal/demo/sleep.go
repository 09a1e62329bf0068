package demo

import (
	"net/http"
	"os"
	"time"
)

// maxSleepMS bounds /sleep's ms. NewServer's WriteTimeout must exceed it.
const maxSleepMS = 60_000

type sleepBody struct {
	SleptMS int `json:"slept_ms"`
	PID     int `json:"pid"`
}

// sleepHandler waits for the query parameter ms milliseconds before
// answering. If the request context is cancelled first it returns at once
// and writes nothing.
func sleepHandler(w http.ResponseWriter, r *http.Request) {
	ms, ok := intParam(w, r, "ms", maxSleepMS)
	if !ok {
		return
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return
	}
	writeJSON(w, http.StatusOK, sleepBody{SleptMS: ms, PID: os.Getpid()})
}
