package supervisor

import (
	"bytes"
	"encoding/json"

	"github.com/prefork/prefork/internal/handoff"
)

// Sticky sessions with Node workers: their claims, and -sticky socketio,
// under which prefork stands where @socket.io/sticky's setupMaster would.

// A Node worker claims a key with a message of claimType: @socket.io/sticky's
// setupWorker reports each new engine.io session as
// process.send({type: 'sticky:connection', data: sid}), and any Node app
// may claim a key it made up the same way. It reports a session's end
// with releaseType, which the table's bounds (size, age) make needless:
// taken, not passed on, as setupMaster takes both.
const (
	claimType   = "sticky:connection"
	releaseType = "sticky:disconnection"
)

// stickyMessage reads a claim or a release; ok is false for any other
// message, which goes on to the application's listeners.
func stickyMessage(body []byte) (key string, claim, ok bool) {
	if !bytes.Contains(body, []byte("sticky:")) {
		return "", false, false // most messages: no decoding
	}
	var m struct {
		Type string `json:"type"`
		Data any    `json:"data"`
	}
	if json.Unmarshal(body, &m) != nil || (m.Type != claimType && m.Type != releaseType) {
		return "", false, false
	}
	key, _ = m.Data.(string)
	return key, m.Type == claimType, true
}

// claim routes key to p's slot from now on, and sends the connections that
// awaited that claim.
func (l *nodeLink) claim(s *Supervisor, p *process, key string) {
	s.mode.handoff().Claim(key, p.slot.id)
}

// online: under -sticky socketio a worker that called setupWorker never
// listens, so it is ready once its cluster module is up, and takes its
// connections as setupWorker expects them.
func (l *nodeLink) online(s *Supervisor, p *process) {
	if !l.socketio {
		return
	}
	if n := handoff.NodeOf(p.t); n != nil {
		n.ListenSticky(s.mode.handoff(), l.w)
	}
	s.post(evReady{p: p})
}
