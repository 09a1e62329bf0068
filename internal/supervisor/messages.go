package supervisor

import (
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
)

// MessageWindow is how many application messages from workers may be on
// their way to an Engine's reader (read from a worker, not yet taken by
// the reader of Events) before the workers' readers stop reading: well
// under control.SubscriberBuffer, so that messages alone never overflow
// the reader's subscription.
const MessageWindow = control.SubscriberBuffer / 2

// window is the flow control of messages to an Engine's reader, as Node's
// IPC has none to need: workers' readers take a place before they pass a
// message on, and the reader gives places back as it takes messages
// (Engine.Seen). A worker whose reader waits stops being read, so its
// cluster.Send waits for room: back-pressure, never a drop.
type window struct {
	mu    sync.Mutex
	size  uint64
	taken uint64        // places taken by the workers' readers
	seen  uint64        // messages the reader has taken (or lost), by sequence
	room  chan struct{} // closed when seen grows
}

func newWindow(size int) *window {
	return &window{size: uint64(size), room: make(chan struct{})}
}

// take waits for a place, until done is closed (then false).
func (w *window) take(done <-chan struct{}) bool {
	for {
		w.mu.Lock()
		if w.taken-w.seen < w.size {
			w.taken++
			w.mu.Unlock()
			return true
		}
		room := w.room
		w.mu.Unlock()
		select {
		case <-room:
		case <-done:
			return false
		}
	}
}

// saw records that the reader has taken every message up to seq.
func (w *window) saw(seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if seq <= w.seen {
		return
	}
	w.seen = seq
	close(w.room)
	w.room = make(chan struct{})
}

// messages are the application messages workers send, passed on to an
// Engine's reader through its window. They are the field messages of a
// Supervisor: the owner goroutine numbers them (onMessage); passMessage
// runs on a worker's reader goroutine.
type messages struct {
	s *Supervisor

	window    *window       // nil without an Engine
	msgSeq    uint64        // message events published
	published atomic.Uint64 // msgSeq, for Engine.SeenAll

	big     atomic.Int64 // bytes of big messages since the last trim
	trimmed atomic.Int64 // when the last trim ran, in Unix nanoseconds
	trim    *time.Timer  // returns memory to the OS once a burst is over
}

// A burst of big messages (each read, decoded, copied and published a few
// times) grows the heap by a few times its size; Go then keeps that heap
// for as long as no collection lowers its goal, and its scavenger gives
// pages back slowly: without a trim, 60 messages of 3 MiB left the
// supervisor 20–90 MiB larger for minutes.
const (
	bigMessage = 256 << 10       // a message this big counts towards a burst
	trimBurst  = 8 << 20         // a burst this big is trimmed after
	trimQuiet  = 2 * time.Second // this long without another big message
	// A big message this soon after a trim is the tail of the burst
	// (its sender stalled longer than trimQuiet): trimmed again, however
	// little follows.
	trimTail = 30 * time.Second
)

// burst counts a message of n bytes towards a burst of big ones, and has
// the memory it took returned to the OS once the burst is over. Owner
// goroutine only.
func (ms *messages) burst(n int) {
	if n < bigMessage {
		return
	}
	tail := time.Since(time.Unix(0, ms.trimmed.Load())) < trimTail
	if ms.big.Add(int64(n)) < trimBurst && !tail {
		return
	}
	if ms.trim == nil {
		ms.trim = time.AfterFunc(trimQuiet, func() {
			ms.big.Store(0)
			debug.FreeOSMemory() // a collection, then every free page back
			ms.trimmed.Store(time.Now().UnixNano())
		})
		return
	}
	ms.trim.Reset(trimQuiet)
}

// passMessage hands an application message from p's reader goroutine to
// the owner goroutine. With an Engine it first waits for a place in the
// window, with p marked as held, so that the silence of a worker nobody
// reads is not taken for a hang.
func (ms *messages) passMessage(p *process, msg []byte) {
	if w := ms.window; w != nil {
		p.held.Store(true)
		ok := w.take(ms.s.done)
		p.held.Store(false)
		if !ok {
			return
		}
	}
	ms.s.post(evMessage{p: p, msg: append([]byte(nil), msg...)})
}

// onMessage passes an application message on to the log (at debug level:
// a message per request is normal) and the event stream (Node's cluster
// 'message' event), numbered for the window.
func (ms *messages) onMessage(p *process, msg []byte) {
	ms.msgSeq++
	ms.published.Store(ms.msgSeq)
	ms.burst(len(msg))
	if ce := ms.s.log.Check(zap.DebugLevel, "message from worker"); ce != nil {
		ce.Write(p.fields(zap.ByteString("msg", msg))...)
	}
	ms.s.emit(p, control.Event{Kind: control.EventMessage, Msg: string(msg), Seq: ms.msgSeq})
}

// Seen tells the engine that the reader of its events has taken every
// message event up to sequence seq (the event's "seq"), which makes room in
// the window. After events were dropped, SeenAll.
func (e *Engine) Seen(seq uint64) { e.s.messages.window.saw(seq) }

// Stopping is closed once the supervisor has begun to stop: a reader of
// events that stops reading then must not hold up the workers' drains
// with messages they wait to send.
func (e *Engine) Stopping() <-chan struct{} { return e.s.stopping }

// SeenAll is Seen for every message published so far: what the reader
// did not get was dropped, and must not hold places.
func (e *Engine) SeenAll() { e.s.messages.window.saw(e.s.messages.published.Load()) }
