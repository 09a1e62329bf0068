package sticky

import (
	"errors"
	"time"

	"github.com/prefork/prefork/internal/ipc"
)

// SocketIO is the -sticky value of apps written for @socket.io/sticky.
const SocketIO = "socketio"

// AwaitSID is how long a request naming an engine.io session nobody has
// claimed waits for the claim. A worker reports a new session just after
// it has answered the handshake, so the client's next request can reach
// the supervisor first (Node's own @socket.io/sticky primary loses such
// sessions); the report normally follows within milliseconds. A session
// that is gone for good (its worker died) waits this long, then goes by
// -balance and its client is told "Session ID unknown".
const AwaitSID = time.Second

// SocketIOWait is -sticky-wait's default under -sticky socketio: how long
// a connection's request line is awaited before it goes by -balance. A
// request of a session that goes elsewhere fails it, and a client with
// hundreds of sessions on a loaded machine may connect well before it
// writes (500ms lost sessions in a test of 200 clients on 2 busy cores).
const SocketIOWait = 5 * time.Second

func init() {
	RegisterKey(SocketIO, func(arg string) (Key, error) {
		if arg != "" {
			return Key{}, errors.New("socketio takes no name")
		}
		return Key{
			Peek:        true,
			Find:        findSID,
			ClaimedOnly: true, // sids are made up by the worker that serves them
			AwaitClaim:  AwaitSID,
		}, nil
	})
}

// findSID is the engine.io session id of a request: its sid query
// parameter (/socket.io/?EIO=4&transport=polling&sid=...). A handshake
// has none, and goes by -balance.
func findSID(head []byte, _ ipc.Peer) (string, bool) {
	return findQuery(head, "sid")
}
