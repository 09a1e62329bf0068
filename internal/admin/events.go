package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
)

// events streams the supervisor's events as Server-Sent Events, one
// "data:" line of JSON each. The stream starts with what is published
// after the request: the page loads the status first.
func (a *api) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	sub := a.Events.Subscribe()
	defer sub.Close()
	a.clients.Add(1)
	defer a.clients.Add(-1)

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // a proxy in front must not buffer the stream
	w.WriteHeader(http.StatusOK)
	var buf bytes.Buffer
	buf.WriteString("retry: 1000\n\n") // reconnect after a second if dropped
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	var batch []control.Event
	for {
		if err := a.flush(w, rc, &buf); err != nil {
			a.drop(r, err)
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-ping.C:
			buf.WriteString(": ping\n\n")
		case <-sub.Ready():
			batch = sub.Take(batch[:0])
			for _, e := range batch {
				if e.Kind == control.EventDropped {
					// The client did not keep up with its queue: what it
					// shows is no longer right. Disconnecting it makes its
					// browser reconnect and start again from the status.
					a.drop(r, errSlow)
					return
				}
				b, err := json.Marshal(e)
				if err != nil {
					a.Log.Warn("admin: event not encodable", zap.Error(err))
					continue
				}
				// JSON has no raw newline, so one data line holds it.
				buf.WriteString("data: ")
				buf.Write(b)
				buf.WriteString("\n\n")
				if err := a.flush(w, rc, &buf); err != nil {
					a.drop(r, err)
					return
				}
			}
			clear(batch) // let the events go
		}
	}
}

// flush writes buf out, and fails if the client takes longer than
// WriteTimeout to accept it: its socket buffer is full.
func (a *api) flush(w http.ResponseWriter, rc *http.ResponseController, buf *bytes.Buffer) error {
	if buf.Len() == 0 {
		return nil
	}
	if err := rc.SetWriteDeadline(time.Now().Add(a.WriteTimeout)); err != nil {
		return err
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		return err
	}
	buf.Reset()
	return rc.Flush()
}

// drop logs and counts a client disconnected for being slow; a client
// that left by itself (a write error but a timeout) is not counted.
func (a *api) drop(r *http.Request, err error) {
	if !errors.Is(err, errSlow) && !errors.Is(err, os.ErrDeadlineExceeded) {
		return
	}
	a.dropped.Add(1)
	a.Log.Info("admin: event stream client dropped", zap.String("remote", r.RemoteAddr), zap.Error(err))
}
