package nodeipc

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Worker is the primary's side of one Node cluster worker: it reads the
// worker's channel, answers what Node's primary answers without asking
// (acknowledgements), and reports the rest as events for the owner to act
// on.
//
// The methods are safe for concurrent use; the owner normally calls them
// from the goroutine that receives the events.
type Worker struct {
	ch     *Channel
	events chan<- Event
	done   chan struct{} // closed by Close: nobody receives events any more
	once   sync.Once
	wg     sync.WaitGroup

	mu            sync.Mutex
	seq           int64          // the primary's seq, as sendHelper's
	pending       map[int64]conn // connections handed and not yet answered, by seq
	disconnecting bool           // Disconnect called, or the worker said exitedAfterDisconnect
	ended         bool           // the channel ended

	accepted atomic.Pointer[func(key string)] // OnAccepted's

	nmu     sync.Mutex // NewConn's cache of its key as JSON
	key     string
	keyJSON []byte
}

type conn struct {
	key       string
	fd        int
	delivered bool // the worker acknowledged the handle: the channel is done with fd
	sticky    bool // StickyConn's: acknowledged is accepted
}

// Sockname is the address a round-robin server reports as its own
// (server.address() in the worker), as libuv's getsockname fills it.
type Sockname struct {
	Address string `json:"address"`
	Family  string `json:"family"` // "IPv4" or "IPv6"
	Port    int    `json:"port"`
}

// SocknameOf describes a TCP address as a Sockname.
func SocknameOf(a *net.TCPAddr) *Sockname {
	s := &Sockname{Address: a.IP.String(), Family: "IPv6", Port: a.Port}
	if a.IP.To4() != nil {
		s.Family = "IPv4"
	}
	return s
}

// NewWorker starts reading ch, which it owns from now on, and sends what it
// reads to events, the last being Disconnected. The owner must keep
// receiving from events until then, or call Close.
func NewWorker(ch *Channel, events chan<- Event) *Worker {
	w := &Worker{
		ch:      ch,
		events:  events,
		done:    make(chan struct{}),
		pending: make(map[int64]conn),
	}
	ch.gaveUp = w.undelivered // before the reader starts: Recv calls them
	ch.delivered = w.delivered
	w.wg.Add(1)
	go w.read()
	return w
}

// clusterMsg is a NODE_CLUSTER message. Every field is raw: a worker may
// send any JSON, and a wrong type must not lose the message.
type clusterMsg struct {
	Act         json.RawMessage `json:"act"`
	Seq         json.RawMessage `json:"seq"`
	Ack         json.RawMessage `json:"ack"`
	Accepted    json.RawMessage `json:"accepted"`
	Key         json.RawMessage `json:"key"`
	Address     json.RawMessage `json:"address"`
	Port        json.RawMessage `json:"port"`
	AddressType json.RawMessage `json:"addressType"`
	FD          json.RawMessage `json:"fd"`
	Index       json.RawMessage `json:"index"`
	Backlog     json.RawMessage `json:"backlog"`
	Data        json.RawMessage `json:"data"`
}

const cmdCluster = "NODE_CLUSTER"

func (w *Worker) read() {
	defer w.wg.Done()
	for {
		m, err := w.ch.Recv()
		switch {
		case errors.Is(err, ErrBadMessage):
			w.emit(Malformed{Err: err})
		case err != nil:
			w.end(err)
			return
		case !m.Internal():
			w.emit(m)
		case m.Cmd == cmdCluster:
			w.cluster(m)
		default:
			// Other internal messages (NODE_DEBUG_ENABLED, ...) are
			// not the cluster's; Node's primary ignores them.
			closeFD(m.FD)
		}
	}
}

// cluster handles one NODE_CLUSTER message, as primary.js's onmessage
// and utils.js's internal do: an ack of a pending request goes to that
// request, anything else by its act.
func (w *Worker) cluster(m Message) {
	closeFD(m.FD) // no cluster message from a worker carries a handle
	if seq, accepted, ok := clusterAck(m.Body); ok && w.settle(seq, accepted) {
		return
	}
	var c clusterMsg
	if err := json.Unmarshal(m.Body, &c); err != nil {
		w.emit(Malformed{Err: errors.Join(ErrBadMessage, err)})
		return
	}
	if len(c.Ack) > 0 && w.settle(int64(jsInt(c.Ack, -1)), string(c.Accepted) == "true") {
		return
	}
	switch jsonString(c.Act) {
	case "online":
		w.emit(Online{})
	case "queryServer":
		w.queryServer(c, m.Body)
	case "listening":
		w.emit(Listening{
			Address:     jsonString(c.Address),
			Port:        jsInt(c.Port, 0),
			AddressType: jsString(c.AddressType),
			FD:          jsInt(c.FD, -1),
		})
	case "close":
		w.emit(ServerClosed{Key: jsonString(c.Key)})
	case "exitedAfterDisconnect":
		w.mu.Lock()
		w.disconnecting = true
		w.mu.Unlock()
		// The worker disconnects once this ack arrives.
		w.ch.Send(ackMsg{Cmd: cmdCluster, Ack: int64(jsInt(c.Seq, -1)), Seq: w.nextSeq()}, -1)
		w.emit(ExitedAfterDisconnect{})
	}
}

func (w *Worker) queryServer(c clusterMsg, raw json.RawMessage) {
	w.mu.Lock()
	stop := w.disconnecting
	w.mu.Unlock()
	if stop {
		return // Node's primary stops answering a disconnecting worker too
	}
	q := QueryServer{
		Seq:         int64(jsInt(c.Seq, -1)),
		Address:     jsonString(c.Address),
		Port:        jsInt(c.Port, 0),
		AddressType: jsString(c.AddressType),
		FD:          jsInt(c.FD, -1),
		Index:       jsInt(c.Index, 0),
		Backlog:     jsInt(c.Backlog, 0),
		Data:        c.Data,
		Raw:         raw,
	}
	// primary.js queryServer: `${address}:${port}:${addressType}:${fd}:${index}`.
	q.Key = jsString(c.Address) + ":" + jsString(c.Port) + ":" + jsString(c.AddressType) + ":" +
		jsString(c.FD) + ":" + jsString(c.Index)
	w.emit(q)
}

// end reports the connections still pending as refused, then Disconnected.
func (w *Worker) end(err error) {
	w.ch.Close()
	w.mu.Lock()
	w.ended = true
	pending := w.pending
	w.pending = nil
	w.mu.Unlock()
	for _, p := range pending {
		// The worker never answered: it did not start reading the
		// connection (child.js answers before it calls onconnection).
		w.emit(Refused{Key: p.key, FD: p.fd, Gone: true})
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	w.emit(Disconnected{Err: err})
}

// emit delivers v unless the owner has called Close; a connection nobody
// will receive is closed.
func (w *Worker) emit(v any) {
	select {
	case <-w.done:
	default:
		select {
		case w.events <- Event{Worker: w, Value: v}:
			return
		case <-w.done:
		}
	}
	switch v := v.(type) {
	case Refused:
		unix.Close(v.FD)
	case Message:
		closeFD(v.FD)
	}
}

func closeFD(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

// The messages the primary sends, each stamped by sendHelper as
// {cmd:'NODE_CLUSTER', ...message, seq}. A field a message does not have
// must be absent: the worker takes any "ack" for an answer to its own
// request of that seq.
type (
	// actMsg: {act:'newconn', key} and {act:'disconnect'}.
	actMsg struct {
		Cmd string `json:"cmd"`
		Act string `json:"act"`
		Key string `json:"key,omitempty"`
		Seq int64  `json:"seq"`
	}
	// ackMsg: the answer to exitedAfterDisconnect.
	ackMsg struct {
		Cmd string `json:"cmd"`
		Ack int64  `json:"ack"`
		Seq int64  `json:"seq"`
	}
	// queryReply: primary.js's answer to queryServer, {errno, key, ack,
	// data, ...reply}; data is written even when null, as Node does.
	queryReply struct {
		Cmd      string          `json:"cmd"`
		Errno    *int            `json:"errno"`
		Key      string          `json:"key"`
		Ack      int64           `json:"ack"`
		Data     json.RawMessage `json:"data"`
		Sockname *Sockname       `json:"sockname,omitempty"`
		Seq      int64           `json:"seq"`
	}
)

func (w *Worker) nextSeq() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seq++
	return w.seq - 1
}

func (w *Worker) reply(q QueryServer, errno *int, sock *Sockname, fd int) error {
	return w.ch.Send(queryReply{
		Cmd: cmdCluster, Errno: errno, Key: q.Key, Ack: q.Seq,
		Data: q.Data, Sockname: sock, Seq: w.nextSeq(),
	}, fd)
}

// ReplyRoundRobin answers q the way Node's primary does under SCHED_RR: no
// handle, errno null, and the address the worker's server will report as
// its own (nil for a unix socket path). The server then takes connections
// from NewConn(q.Key, fd). If the app asked for a port (q.Port > 0),
// sock.Port must be that port: Node's checkBindError (lib/net.js) fails the
// listen with EADDRINUSE otherwise.
func (w *Worker) ReplyRoundRobin(q QueryServer, sock *Sockname) error {
	return w.reply(q, nil, sock, -1)
}

// ReplyShared answers q the way Node's primary does under SCHED_NONE: the
// listening socket ln as a handle (the caller keeps ln), on which the
// worker accepts by itself. As with ReplyRoundRobin, ln must be bound to
// q.Port when q.Port > 0.
func (w *Worker) ReplyShared(q QueryServer, ln int) error {
	zero := 0
	return w.reply(q, &zero, nil, ln)
}

// ReplyError fails the worker's listen with errno (say syscall.EADDRINUSE):
// its server emits 'error', as when Node's primary cannot bind.
func (w *Worker) ReplyError(q QueryServer, errno syscall.Errno) error {
	uv := -int(errno) // libuv's error codes are negated errnos on Unix
	return w.reply(q, &uv, nil, -1)
}

// Disconnect asks the worker to close its servers and then the channel, as
// Node's worker.disconnect() in the primary does. Once the worker has
// closed the channel (Disconnected), it exits by itself when nothing else
// keeps its event loop alive. Queries it sends from now on go unanswered.
func (w *Worker) Disconnect() error {
	w.mu.Lock()
	w.disconnecting = true
	w.mu.Unlock()
	return w.ch.Send(actMsg{Cmd: cmdCluster, Act: "disconnect", Seq: w.nextSeq()}, -1)
}

// Send sends the worker an application message (its process 'message').
func (w *Worker) Send(msg any) error { return w.ch.Send(msg, -1) }

// Close closes the channel and stops reporting: connections still pending
// are closed, not given back. Closing twice is harmless.
func (w *Worker) Close() error {
	w.once.Do(func() {
		close(w.done)
		w.ch.Close()
	})
	w.wg.Wait()
	return nil
}
