package supervisor

import (
	"net"
	"syscall"
	"testing"
)

// Under -strict-listen a node worker's listen on a port or a path no
// listener serves is refused (EADDRINUSE, no socket, nothing bound) and
// reported to the owner, which fails the worker; port 0 and the
// supervisor's port are still served.
func TestNodeStrictListen(t *testing.T) {
	h := newHarness(t, func(c *Config) { withProtocol(ProtocolNode)(c); c.StrictListen = true })
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	l, _, w, _ := startNodeLink(t, h, ln, false)
	defer l.close()
	w.listenGets(nil, 0, port)
	for _, q := range []map[string]any{
		{"act": "queryServer", "address": nil, "port": port + 1, "addressType": 4, "fd": -1, "index": 0},
		{"act": "queryServer", "address": "/tmp/app.sock", "port": -1, "addressType": -1, "fd": -1, "index": 0},
	} {
		seq := w.send(q)
		m := w.recv()
		if r := decode(t, m); r.Errno == nil || *r.Errno != -int(syscall.EADDRINUSE) || r.Ack != seq || m.FD >= 0 {
			t.Fatalf("listen %v: reply %s with fd %d; want EADDRINUSE, ack %d, no socket", q, m.Body, m.FD, seq)
		}
		if _, ok := nextEvent(t, h.s).(evCall); !ok {
			t.Fatalf("listen %v: no call to fail the worker", q)
		}
	}
	ps := h.s.proto.(node).ports
	ps.mu.Lock()
	n := len(ps.socks)
	ps.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d sockets bound for a stray listen under -strict-listen, want none", n)
	}
}
