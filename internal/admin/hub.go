package admin

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
)

// The hub is the admin listener's one subscriber to the supervisor's
// events. It encodes each event once, as the bytes of an SSE frame, keeps
// the last HistoryEvents of them for pages opened later, and queues the
// same bytes for every event stream client. A client's queue is bounded in
// bytes: one that lets more than maxClientBytes wait is disconnected (and
// counted), and since every queue shares the frames, the memory all
// clients hold is about that of one, however many there are.
const (
	maxClientBytes = 1 << 20
	// maxEventBytes bounds one event as the dashboard gets it: a bigger
	// one (a worker's application message, typically) keeps only its
	// time, kind, slot, pid and size.
	maxEventBytes = 4 << 10
)

// frame is one encoded event.
type frame struct {
	seq  uint64
	json []byte // the event
	sse  []byte // "id: seq\ndata: json\n\n"
}

type hub struct {
	log     *zap.Logger
	dropped func() // a slow client was disconnected

	mu      sync.Mutex
	recent  [HistoryEvents]*frame // a ring: n frames from head
	head, n int
	seq     uint64
	clients map[*streamClient]struct{}
}

// streamClient is one event stream's queue.
type streamClient struct {
	ready chan struct{} // cap 1: frames were queued
	gone  chan struct{} // closed when the hub dropped the client

	// guarded by hub.mu
	queue [][]byte
	bytes int
}

func newHub(log *zap.Logger, dropped func()) *hub {
	return &hub{log: log, dropped: dropped, clients: make(map[*streamClient]struct{})}
}

// run follows sub until ctx ends, and closes it.
func (h *hub) run(ctx context.Context, sub *control.Subscription) {
	defer sub.Close()
	var batch []control.Event
	for {
		select {
		case <-ctx.Done():
			return
		case <-sub.Ready():
		}
		batch = sub.Take(batch[:0])
		for _, e := range batch {
			h.publish(e)
		}
		clear(batch) // let the events go while waiting
	}
}

// publish encodes e and queues it for every client.
func (h *hub) publish(e control.Event) {
	b, err := json.Marshal(e)
	if err != nil {
		h.log.Warn("admin: event not encodable", zap.String("event", string(e.Kind)), zap.Error(err))
		return
	}
	if len(b) > maxEventBytes {
		b = shrink(e, len(b))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	f := &frame{seq: h.seq, json: b}
	// JSON has no raw newline, so one data line holds it.
	f.sse = append(append([]byte("id: "+strconv.FormatUint(f.seq, 10)+"\ndata: "), b...), '\n', '\n')
	if h.n == len(h.recent) {
		h.recent[h.head] = f
		h.head = (h.head + 1) % len(h.recent)
	} else {
		h.recent[(h.head+h.n)%len(h.recent)] = f
		h.n++
	}
	for c := range h.clients {
		h.queue(c, f.sse)
	}
}

// shrink is e without its bulk, for an event of size bytes: the message
// of a worker's big application message, or an error, cut short.
func shrink(e control.Event, size int) []byte {
	e.Msg = cut(e.Msg, size)
	e.Error = cut(e.Error, size)
	b, err := json.Marshal(e)
	if err != nil || len(b) > maxEventBytes {
		b, _ = json.Marshal(control.Event{Time: e.Time, Kind: e.Kind, Slot: e.Slot, PID: e.PID, Generation: e.Generation, Error: cut("x", size)})
	}
	return b
}

// cut is s shortened for the dashboard, saying how big it was.
func cut(s string, size int) string {
	const keep = 200
	if len(s) <= keep {
		return s
	}
	return strings.ToValidUTF8(s[:keep], "") + "… (" + strconv.Itoa(size) + " bytes in all: too big for the dashboard)"
}

// queue adds b to c's queue, or drops c if it would hold more than
// maxClientBytes. Called with h.mu held.
func (h *hub) queue(c *streamClient, b []byte) {
	if c.bytes+len(b) > maxClientBytes {
		h.drop(c)
		return
	}
	c.queue = append(c.queue, b)
	c.bytes += len(b)
	select {
	case c.ready <- struct{}{}:
	default: // already due to look
	}
}

// drop disconnects c for being slow. Called with h.mu held.
func (h *hub) drop(c *streamClient) {
	delete(h.clients, c)
	close(c.gone)
	c.queue, c.bytes = nil, 0
	h.dropped()
}

// join adds a client that has seen the events up to seq after: it gets
// the recent ones after that first (all of them for after 0).
func (h *hub) join(after uint64) *streamClient {
	c := &streamClient{ready: make(chan struct{}, 1), gone: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clients[c] = struct{}{}
	for k := range h.n {
		if f := h.recent[(h.head+k)%len(h.recent)]; f.seq > after {
			h.queue(c, f.sse)
		}
	}
	return c
}

// leave removes c.
func (h *hub) leave(c *streamClient) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.clients, c)
}

// take returns what is queued for c and empties its queue; dst is reused.
func (h *hub) take(c *streamClient, dst [][]byte) [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	dst = append(dst, c.queue...)
	clear(c.queue)
	c.queue, c.bytes = c.queue[:0], 0
	if cap(c.queue) > 256 {
		c.queue = nil // a burst is over: do not keep its array
	}
	return dst
}

// recentEvents returns the events kept, oldest first, and the last one's
// sequence number.
func (h *hub) recentEvents() ([]json.RawMessage, uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]json.RawMessage, h.n)
	for k := range out {
		out[k] = h.recent[(h.head+k)%len(h.recent)].json
	}
	return out, h.seq
}

// clientCount is how many clients are connected.
func (h *hub) clientCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}
