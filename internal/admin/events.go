package admin

import (
	"errors"
	"net/http"
	"os"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// events streams the supervisor's events as Server-Sent Events, one
// "data:" line of JSON each, with its sequence number as the "id:". A
// request with Last-Event-ID (a reconnection, or the page after it loaded
// /api/history) first gets the recent events after that one; without it,
// every recent event.
func (a *api) events(w http.ResponseWriter, r *http.Request) {
	after, _ := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64)
	c := a.hub.join(after)
	defer a.hub.leave(c)
	rc := http.NewResponseController(w)

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // a proxy in front must not buffer the stream
	w.WriteHeader(http.StatusOK)
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	out := [][]byte{[]byte("retry: 1000\n\n")} // reconnect after a second if dropped
	for {
		if err := a.write(w, rc, out); err != nil {
			a.drop(r, err)
			return
		}
		clear(out) // let the frames go while waiting
		out = out[:0]
		select {
		case <-r.Context().Done():
			return
		case <-c.gone:
			// More than maxClientBytes waited for this client: what it
			// shows is no longer right. Disconnecting it makes its page
			// reconnect and catch up from the recent events.
			a.drop(r, errSlow)
			return
		case <-ping.C:
			out = append(out, []byte(": ping\n\n"))
		case <-c.ready:
			out = a.hub.take(c, out)
		}
	}
}

// write writes frames out, and fails if the client takes longer than
// WriteTimeout to accept them: its socket buffer is full.
func (a *api) write(w http.ResponseWriter, rc *http.ResponseController, frames [][]byte) error {
	if len(frames) == 0 {
		return nil
	}
	if err := rc.SetWriteDeadline(time.Now().Add(a.WriteTimeout)); err != nil {
		return err
	}
	for _, f := range frames {
		if _, err := w.Write(f); err != nil {
			return err
		}
	}
	return rc.Flush()
}

// errSlow is why a slow event stream client is disconnected.
var errSlow = errors.New("admin: event stream client fell behind")

// drop logs and counts a client disconnected for being slow; a client
// that left by itself (a write error but a timeout) is not counted. One
// the hub dropped is counted there.
func (a *api) drop(r *http.Request, err error) {
	if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, errSlow) {
		return
	}
	if !errors.Is(err, errSlow) {
		a.countDropped()
	}
	a.Log.Info("admin: event stream client dropped", zap.String("remote", r.RemoteAddr), zap.Error(err))
}
