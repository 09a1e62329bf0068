package supervisor

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/handoff"
	"github.com/prefork/prefork/internal/listener"
	"github.com/prefork/prefork/internal/nodeipc"
)

// nodePeer is a Go stand-in for a Node cluster worker on the other end of
// a node link: it sends what Node's child.js sends and reads the answers.
type nodePeer struct {
	t   *testing.T
	ch  *nodeipc.Channel
	raw *os.File // the same socket, for lines that are not messages
	seq int
}

func (w *nodePeer) send(msg map[string]any) int {
	w.t.Helper()
	msg["cmd"], msg["seq"] = "NODE_CLUSTER", w.seq
	w.seq++
	if err := w.ch.Send(msg, -1); err != nil {
		w.t.Fatal(err)
	}
	return w.seq - 1
}

// recv reads the next message, failing after a deadline.
func (w *nodePeer) recv() nodeipc.Message {
	w.t.Helper()
	got := make(chan nodeipc.Message, 1)
	go func() {
		m, err := w.ch.Recv()
		if err != nil {
			m.Cmd = "error: " + err.Error()
		}
		got <- m
	}()
	select {
	case m := <-got:
		return m
	case <-time.After(5 * time.Second):
		w.t.Fatal("no message from the supervisor within 5s")
	}
	panic("unreachable")
}

// reply is the decoded answer to a queryServer.
type reply struct {
	Errno *int   `json:"errno"`
	Ack   int    `json:"ack"`
	Key   string `json:"key"`
	Act   string `json:"act"`
}

func decode(t *testing.T, m nodeipc.Message) reply {
	t.Helper()
	var r reply
	if err := json.Unmarshal(m.Body, &r); err != nil {
		t.Fatalf("%s: %v", m.Body, err)
	}
	return r
}

// nextEvent returns the next event the link posts to the owner.
func nextEvent(t *testing.T, s *Supervisor) any {
	t.Helper()
	select {
	case ev := <-s.events:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event from the node link within 5s")
	}
	return nil
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// startNodeLink opens a node link for slot 2 around a real listening
// socket, starts it for a process, and returns the worker's side. With rr,
// the process is the rr handoff's target, as rr's prepare makes it.
func startNodeLink(t *testing.T, h *harness, ln *net.TCPListener, rr bool) (*nodeLink, *process, *nodePeer, *exec.Cmd) {
	t.Helper()
	sl := &slot{id: 2}
	lk, err := h.s.proto.open(sl)
	if err != nil {
		t.Fatal(err)
	}
	l := lk.(*nodeLink)
	lf, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", "app.js")
	l.command(h.s, cmd, handles{files: []*os.File{lf}})
	lf.Close() // as spawn does once the worker has started
	if cmd.Err != nil || len(cmd.ExtraFiles) != 1 {
		t.Fatalf("command: err %v, %d extra files; want fd 3 only", cmd.Err, len(cmd.ExtraFiles))
	}
	// The worker's end, as the started process holds it.
	fd, err := unix.FcntlInt(cmd.ExtraFiles[0].Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	rawFD, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := nodeipc.NewChannel(os.NewFile(uintptr(fd), "worker-end"))
	if err != nil {
		t.Fatal(err)
	}
	peer := &nodePeer{t: t, ch: ch, raw: os.NewFile(uintptr(rawFD), "worker-end-raw")}
	t.Cleanup(func() { ch.Close(); peer.raw.Close() })
	p := &process{slot: sl, pid: 4242, link: l, read: make(chan struct{}), state: control.StateStarting}
	if rr {
		p.t = handoff.NewNodeTarget(sl.id)
	}
	sl.cur = p
	h.s.live[p.pid] = p
	l.started(h.s, p)
	return l, p, peer, cmd
}

// A node worker gets Node's channel at fd 3 and NODE_UNIQUE_ID = its slot;
// its listen on the supervisor's port (or 0) gets the socket as a handle,
// another port a socket the supervisor binds, a path EADDRINUSE; its 'listening' makes it ready,
// process.send is a message, a bad line a protocol error; a drain is
// Node's disconnect; close leaves no descriptor open.
func TestNodeLink(t *testing.T) {
	h := newHarness(t, withProtocol(ProtocolNode))
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	before := openFDs(t)

	l, p, w, cmd := startNodeLink(t, h, ln, false)
	for _, kv := range []string{"NODE_CHANNEL_FD=3", "NODE_UNIQUE_ID=2", "NODE_CHANNEL_SERIALIZATION_MODE=json"} {
		if !slices.Contains(cmd.Env, kv) {
			t.Errorf("worker environment %v lacks %s", cmd.Env, kv)
		}
	}

	for _, want := range []int{port, 0} {
		w.listenGets(nil, want, port)
	}
	// Another port: the supervisor binds it, once, for every worker.
	free, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	other := free.Addr().(*net.TCPAddr).Port
	free.Close()
	for range 2 {
		w.listenGets("127.0.0.1", other, other)
	}
	ps := h.s.proto.(node).ports
	ps.mu.Lock() // the reader bound it
	n := len(ps.socks)
	ps.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d sockets bound for another port asked twice, want 1", n)
	}
	for _, q := range []map[string]any{
		{"act": "queryServer", "address": "/tmp/app.sock", "port": -1, "addressType": -1, "fd": -1, "index": 0},
	} {
		seq := w.send(q)
		m := w.recv()
		r := decode(t, m)
		if r.Errno == nil || *r.Errno != -int(syscall.EADDRINUSE) || r.Ack != seq || m.FD >= 0 {
			t.Fatalf("listen %v: reply %s with fd %d; want EADDRINUSE (%d), ack %d, no socket", q, m.Body, m.FD, -int(syscall.EADDRINUSE), seq)
		}
	}

	w.send(map[string]any{"act": "listening", "address": nil, "port": port, "addressType": 4, "fd": -1})
	if ev, ok := nextEvent(t, h.s).(evReady); !ok || ev.p != p {
		t.Fatalf("after listening: %#v, want evReady", ev)
	}
	if err := w.ch.Send(map[string]any{"hello": "primary"}, -1); err != nil {
		t.Fatal(err)
	}
	if ev, ok := nextEvent(t, h.s).(evMessage); !ok || string(ev.msg) != `{"hello":"primary"}` {
		t.Fatalf("after process.send: %#v, want evMessage with the JSON", ev)
	}
	if _, err := w.raw.Write([]byte("not json\n")); err != nil {
		t.Fatal(err)
	}
	if ev, ok := nextEvent(t, h.s).(evProtocol); !ok || !errors.Is(ev.err, nodeipc.ErrBadMessage) {
		t.Fatalf("after a bad line: %#v, want evProtocol", ev)
	}

	l.drain(h.s, p)
	if r := decode(t, w.recv()); r.Act != "disconnect" {
		t.Fatalf("drain sent %+v, want act disconnect", r)
	}

	w.hangUp(p)
	l.close()
	h.s.proto.stop() // closes the socket bound for the other port
	if c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(other))); err == nil {
		c.Close()
		t.Fatal("the supervisor still listens on the other port after stop")
	}
	if after := openFDs(t); after != before {
		t.Fatalf("%d descriptors open before the link, %d after close", before, after)
	}
}

// A node worker that disconnects itself (exitedAfterDisconnect) is
// replaced at once, and its exit is no crash.
func TestNodeLeaving(t *testing.T) {
	h := newHarness(t, withProtocol(ProtocolNode))
	h.start(false)
	for _, sl := range h.s.slots {
		h.ready(sl.cur)
	}
	p := h.cur(1)
	h.s.handle(evLeaving{p: p})
	h.run()
	if !p.asked || p.reason != control.CauseDisconnect || h.cur(1) == p || h.cur(1) == nil {
		t.Fatalf("asked %v reason %q, slot 1 now %v; want p dismissed and a new worker in its slot", p.asked, p.reason, h.cur(1))
	}
	h.exit(p, 0)
	if n := h.s.counts.exits[control.CauseCrash]; n != 0 {
		t.Fatalf("%d crashes counted, want none", n)
	}
	if n := h.s.counts.exits[control.CauseDisconnect]; n != 1 {
		t.Fatalf("%d exits labelled disconnect, want 1", n)
	}
}

// listenGets sends a queryServer for address:port, as a server's listen
// does, and checks the reply carries a socket bound to port bound.
func (w *nodePeer) listenGets(address any, port, bound int) {
	w.t.Helper()
	seq := w.send(map[string]any{"act": "queryServer", "address": address, "port": port, "addressType": 4, "fd": -1, "index": 0})
	m := w.recv()
	r := decode(w.t, m)
	if r.Errno == nil || *r.Errno != 0 || r.Ack != seq || m.FD < 0 {
		w.t.Fatalf("listen(%d): reply %s with fd %d; want errno 0, ack %d and a socket", port, m.Body, m.FD, seq)
	}
	sa, err := unix.Getsockname(m.FD)
	unix.Close(m.FD)
	if a, ok := sa.(*unix.SockaddrInet4); err != nil || !ok || a.Port != bound {
		w.t.Fatalf("listen(%d) got a socket bound to %v (%v), want port %d", port, sa, err, bound)
	}
}

// In rr mode a node worker's listen on the supervisor's port is answered
// as Node's primary answers under SCHED_RR: errno null, the key, the
// supervisor's address, no handle; the handoff then sends it connections
// for that key, one newconn each, until the worker closes that server. A
// second server on the port fails with EADDRINUSE, as under Node.
func TestNodeLinkRoundRobin(t *testing.T) {
	h := newHarness(t, func(c *Config) { withProtocol(ProtocolNode)(c); c.Mode = "rr" })
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	other, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	sock, err := listener.Detach(other) // the rr mode's; this test dispatches itself
	if err != nil {
		t.Fatal(err)
	}
	m, err := newRR(h.s.cfg, h.s.log, []listening{listeningOn("main", sock, false)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.stopAccepting()
	h.s.mode = m
	before := openFDs(t)

	l, p, w, _ := startNodeLink(t, h, ln, true)
	seq := w.send(map[string]any{"act": "queryServer", "address": nil, "port": port, "addressType": 4, "fd": -1, "index": 0})
	msg := w.recv()
	var r struct {
		Errno    *int              `json:"errno"`
		Ack      int               `json:"ack"`
		Key      string            `json:"key"`
		Sockname *nodeipc.Sockname `json:"sockname"`
	}
	if err := json.Unmarshal(msg.Body, &r); err != nil {
		t.Fatal(err)
	}
	key := "null:" + strconv.Itoa(port) + ":4:-1:0"
	want := nodeipc.Sockname{Address: "127.0.0.1", Family: "IPv4", Port: port}
	if r.Errno != nil || !bytes.Contains(msg.Body, []byte(`"errno":null`)) || r.Ack != seq || r.Key != key || msg.FD >= 0 ||
		r.Sockname == nil || *r.Sockname != want {
		t.Fatalf("listen(%d) in rr mode: reply %s with fd %d; want errno null, ack %d, key %s, sockname %+v, no handle", port, msg.Body, msg.FD, seq, key, want)
	}
	waitUntil(t, "the worker's target available", p.t.Available)

	seq = w.send(map[string]any{"act": "queryServer", "address": nil, "port": port, "addressType": 4, "fd": -1, "index": 1})
	if r := decode(t, w.recv()); r.Errno == nil || *r.Errno != -int(syscall.EADDRINUSE) || r.Ack != seq {
		t.Fatalf("a second server on the port: reply %+v, want EADDRINUSE", r)
	}

	route(m, p)
	if err := m.startAccepting(); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", other.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close() // accepted or not, the supervisor's copy is what it hands on
	c := w.recv()
	var nc struct {
		Act string `json:"act"`
		Key string `json:"key"`
		Seq int    `json:"seq"`
	}
	if err := json.Unmarshal(c.Body, &nc); err != nil || nc.Act != "newconn" || nc.Key != key || c.FD < 0 {
		t.Fatalf("handed %s with fd %d, want newconn for %s with the connection", c.Body, c.FD, key)
	}
	unix.Close(c.FD)
	if p.t.Load() != 1 {
		t.Fatalf("load %d before the answer, want 1", p.t.Load())
	}
	w.send(map[string]any{"ack": nc.Seq, "accepted": true})
	waitUntil(t, "the answer counted", func() bool { return p.t.Load() == 0 })

	w.send(map[string]any{"act": "close", "key": key})
	waitUntil(t, "the closed server's target unavailable", func() bool { return !p.t.Available() })

	w.hangUp(p)
	m.h.Recover(p.t)
	l.close()
	m.stopLoops()
	if after := openFDs(t); after != before {
		t.Fatalf("%d descriptors open before the link, %d after close", before, after)
	}
}

// hangUp closes the worker's end, as its exit does, and waits for the
// link's reader to stop.
func (w *nodePeer) hangUp(p *process) {
	w.t.Helper()
	w.ch.Close()
	w.raw.Close()
	select {
	case <-p.read:
	case <-time.After(5 * time.Second):
		w.t.Fatal("the link's reader did not stop when the worker closed the channel")
	}
}
