package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/ipc"
)

// helperHandBack is an rr worker served by Serve: it answers "old PATH
// BODY", and hijacks /hijack to echo lines; after its drain it prints how
// many connections it handed back.
func helperHandBack() {
	ln, err := Listen("")
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/hijack" {
			c, rw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			rw.WriteString("hijacked\n")
			rw.Flush()
			for {
				line, err := rw.ReadString('\n')
				if err != nil {
					return
				}
				rw.WriteString("old " + line)
				rw.Flush()
			}
		}
		fmt.Fprintf(w, "old %s %s", r.URL.Path, body)
	})}
	err = Serve(srv, ln)
	w, _ := get()
	fmt.Printf("served %v moved %d failed %d\n", err, w.back.moved.Load(), w.back.failed.Load())
}

// handBackRig plays the supervisor for one worker running helperHandBack:
// it hands the worker connections, and serves those the worker hands back
// with a server of its own that answers "new PATH BODY".
type handBackRig struct {
	t       *testing.T
	ln      net.Listener // clients dial this
	handoff *ipc.Channel
	ctl     *ipc.Channel
	out     *bufio.Reader
	back    chan net.Conn // connections handed back, as the next worker gets them
	backs   *chanListener
}

func newHandBackRig(t *testing.T) *handBackRig {
	t.Helper()
	handoff, remote, err := ipc.Pair()
	if err != nil {
		t.Fatal(err)
	}
	handoff.TakeConns()
	ctl, out, _ := runWorker(t, "handback", ModeRR, remote,
		ipc.EnvFeatures+"="+strconv.Itoa(int(ipc.FeaturePeers|ipc.FeatureHandBack)))
	remote.Close()
	// Connections go to a worker once it is ready, as the supervisor's do:
	// one still queued when it exits would be lost here (the supervisor
	// reads those back).
	ctl.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, ipc.MaxFrame)
	for {
		f, _, err := ctl.Recv(buf, nil)
		if err != nil {
			t.Fatalf("waiting for ready: %v", err)
		}
		if f.Type == ipc.TypeReady {
			break
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &handBackRig{t: t, ln: ln, handoff: handoff, ctl: ctl, out: out, back: make(chan net.Conn, 64)}
	r.backs = &chanListener{c: make(chan net.Conn, 64), done: make(chan struct{})}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "new %s %s", r.URL.Path, body)
	})}
	go srv.Serve(r.backs)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		buf := make([]byte, ipc.MaxFrame)
		for {
			f, fds, err := handoff.Recv(buf, nil)
			if err != nil {
				return
			}
			if f.Type != ipc.TypeConns || len(fds) != 1 || ipc.PeerAddr(f.Peers()) == nil {
				t.Errorf("handed back: %v frame, %d descriptors, peer %v", f.Type, len(fds), ipc.PeerAddr(f.Peers()))
				ipc.CloseAll(fds)
				continue
			}
			c, err := net.FileConn(os.NewFile(uintptr(fds[0]), "back"))
			if err != nil {
				t.Error(err)
				continue
			}
			r.back <- c
		}
	}()
	t.Cleanup(func() {
		srv.Close()
		handoff.Close()
		<-recvDone
		close(r.back)
		for c := range r.back {
			c.Close()
		}
		ln.Close()
	})
	return r
}

// forward serves every connection handed back from now on with the rig's
// own server.
func (r *handBackRig) forward() {
	go func() {
		for c := range r.back {
			r.backs.c <- c
		}
	}()
}

// dial connects a client whose connection the worker is handed.
func (r *handBackRig) dial() net.Conn {
	r.t.Helper()
	c, fd := dialAccepted(r.t, r.ln)
	r.t.Cleanup(func() { c.Close() })
	err := r.handoff.Send(ipc.ConnsFrame(1), []int{fd})
	ipc.CloseAll([]int{fd})
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

func (r *handBackRig) drain() {
	r.t.Helper()
	if err := r.ctl.Send(ipc.AppendUint32(nil, ipc.TypeDrain, 10000), nil); err != nil {
		r.t.Fatal(err)
	}
}

// drainedPast drains the worker and waits until probe, an idle client, is
// handed back: the drain has begun there. It closes probe.
func (r *handBackRig) drainedPast(probe net.Conn) {
	r.t.Helper()
	r.drain()
	select {
	case p := <-r.back:
		p.Close()
	case <-time.After(10 * time.Second):
		r.t.Fatal("the idle connection was not handed back")
	}
	probe.Close()
}

// done waits for the worker's last line and returns how many it moved.
func (r *handBackRig) done() (moved, failed int) {
	r.t.Helper()
	line, rerr := r.out.ReadString('\n')
	if _, err := fmt.Sscanf(line, "served <nil> moved %d failed %d", &moved, &failed); err != nil {
		r.t.Fatalf("worker: %q (%v, %v)", line, err, rerr)
	}
	return moved, failed
}

// chanListener yields the connections sent on c.
type chanListener struct {
	c    chan net.Conn
	once sync.Once
	done chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }

func post(path, body string) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
}

// answer reads one response from br and returns its body.
func answer(t *testing.T, c net.Conn, br *bufio.Reader) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != 200 || res.Close {
		t.Fatalf("response %d %q, close %v: %v", res.StatusCode, b, res.Close, err)
	}
	return string(b)
}

// moves sends requests on c until the next worker answers one, and checks
// every answer. The old worker may answer a few: its background read (net/http
// reads a byte while the handler runs) can take the first byte of a request
// sent right after the last response, and then it must answer that request.
func moves(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	// The old server hands the connection back between two requests once
	// it is draining; on a loaded machine that can take more than a few
	// back-to-back requests, so the bound is time (and a count).
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i < 500 && time.Now().Before(deadline); i++ {
		path := "/next" + strconv.Itoa(i)
		if _, err := io.WriteString(c, post(path, "z")); err != nil {
			t.Fatal(err)
		}
		switch have := answer(t, c, br); have {
		case "new " + path + " z":
			quiet(t, c, br)
			return
		case "old " + path + " z":
		default:
			t.Fatalf("request %s answered %q", path, have)
		}
	}
	t.Fatal("the connection did not move within 5s")
}

// quiet checks that nothing more arrives on c within a moment.
func quiet(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if b, err := br.ReadByte(); err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after the last response: byte %q, %v", b, err)
	}
}

// A client that sends a request byte by byte while its connection is handed
// back gets exactly one correct response, from whichever worker read its
// first byte, and its next request is answered by the next worker on the
// same connection.
func TestHandBackByteByByte(t *testing.T) {
	r := newHandBackRig(t)
	r.forward()
	const clients = 16
	type client struct {
		c  net.Conn
		br *bufio.Reader
	}
	cs := make([]client, clients)
	for i := range cs {
		cs[i].c = r.dial()
		cs[i].br = bufio.NewReader(cs[i].c)
		if _, err := io.WriteString(cs[i].c, post("/1", "a")); err != nil {
			t.Fatal(err)
		}
		if want, have := "old /1 a", answer(t, cs[i].c, cs[i].br); want != have {
			t.Fatalf("want %q, have %q", want, have)
		}
	}
	// Each client trickles its second request; the drain comes while
	// they do, each at another point of its request.
	// Odd ones start as the drain is sent, racing the hand-back for their
	// first byte.
	var wg sync.WaitGroup
	started := make(chan struct{}, clients)
	drained := make(chan struct{})
	for i := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := post("/2", "body-"+strconv.Itoa(i))
			if i%2 == 1 {
				started <- struct{}{}
				<-drained
			}
			for k := range len(req) {
				if k == i && i%2 == 0 {
					started <- struct{}{}
				}
				if _, err := cs[i].c.Write([]byte{req[k]}); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(200 * time.Microsecond) // pace: the workload, not a wait
			}
		}()
	}
	for range clients {
		<-started
	}
	r.drain()
	close(drained)
	wg.Wait()
	old := 0
	for i, c := range cs {
		have := answer(t, c.c, c.br)
		if have == "old /2 body-"+strconv.Itoa(i) {
			old++
		} else if want := "new /2 body-" + strconv.Itoa(i); want != have {
			t.Fatalf("client %d: want %q, have %q", i, want, have)
		}
		moves(t, c.c, c.br)
	}
	t.Logf("second requests answered by the old worker: %d of %d", old, clients)
	if moved, failed := r.done(); moved != clients || failed != 0 {
		t.Fatalf("worker moved %d, failed %d; want %d, 0", moved, failed, clients)
	}
}

// A pipelined pair split across the hand-back gets both responses in order:
// the worker that read part of the second request answers it, and the
// connection goes back after that. The part may be a few bytes of its
// headers, or its headers and the start of a body longer than net/http's
// buffer (read whole from that buffer, the request makes no StateActive).
func TestHandBackPipelinedSplit(t *testing.T) {
	for name, second := range map[string]string{
		"headers": post("/2", "two"),
		"body":    post("/2", strings.Repeat("b", 3*idleReadSize)),
	} {
		t.Run(name, func(t *testing.T) {
			r := newHandBackRig(t)
			probe := r.dial() // idle: its arrival says the drain has begun
			c := r.dial()
			br := bufio.NewReader(c)
			cut := 7
			if name == "body" {
				cut = strings.Index(second, "\r\n\r\n") + 10
			}
			if _, err := io.WriteString(c, post("/1", "one")+second[:cut]); err != nil {
				t.Fatal(err)
			}
			if want, have := "old /1 one", answer(t, c, br); want != have {
				t.Fatalf("want %q, have %q", want, have)
			}
			r.drainedPast(probe)
			r.forward()
			if _, err := io.WriteString(c, second[cut:]); err != nil {
				t.Fatal(err)
			}
			body := second[strings.Index(second, "\r\n\r\n")+4:]
			if want, have := "old /2 "+body, answer(t, c, br); want != have {
				t.Fatalf("want %.40q, have %.40q", want, have)
			}
			moves(t, c, br)
			if moved, failed := r.done(); moved != 2 || failed != 0 {
				t.Fatalf("worker moved %d, failed %d; want 2, 0", moved, failed)
			}
		})
	}
}

// A pipelined pair sent whole as the drain begins gets both responses in
// order, whichever worker answers the second.
func TestHandBackPipelinedPair(t *testing.T) {
	r := newHandBackRig(t)
	r.forward()
	const clients = 8
	cs := make([]net.Conn, clients)
	brs := make([]*bufio.Reader, clients)
	for i := range cs {
		cs[i] = r.dial()
		brs[i] = bufio.NewReader(cs[i])
	}
	for i, c := range cs {
		if i == clients/2 {
			r.drain()
		}
		if _, err := io.WriteString(c, post("/1", "a")+post("/2", "b")); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range cs {
		one, two := answer(t, c, brs[i]), answer(t, c, brs[i])
		if !strings.HasSuffix(one, " /1 a") || !strings.HasSuffix(two, " /2 b") {
			t.Fatalf("client %d: %q then %q", i, one, two)
		}
		if strings.HasPrefix(one, "new") && strings.HasPrefix(two, "old") {
			t.Fatalf("client %d: went back and came again: %q then %q", i, one, two)
		}
		moves(t, c, brs[i])
	}
	if moved, failed := r.done(); moved != clients || failed != 0 {
		t.Fatalf("worker moved %d, failed %d; want %d, 0", moved, failed, clients)
	}
}

// A hijacked connection (a WebSocket) never moves: it stays with the old
// worker, which serves it until the client closes it.
func TestHandBackKeepsHijacked(t *testing.T) {
	r := newHandBackRig(t)
	idle := r.dial()
	c := r.dial()
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, "GET /hijack HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := br.ReadString('\n'); line != "hijacked\n" {
		t.Fatalf("%q, %v", line, err)
	}
	r.drainedPast(idle)
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := br.ReadString('\n'); line != "old ping\n" {
		t.Fatalf("hijacked connection after the drain: %q, %v", line, err)
	}
	c.Close()
	if moved, failed := r.done(); moved != 1 || failed != 0 {
		t.Fatalf("worker moved %d, failed %d; want 1, 0", moved, failed)
	}
	select {
	case p := <-r.back:
		t.Fatalf("hijacked connection handed back: %v", p.RemoteAddr())
	default:
	}
}

// Asked to give back n connections (rebalancing), a worker that is not
// draining hands back n of those waiting for their next request, and
// serves the rest as before.
func TestHandBackGiveBack(t *testing.T) {
	r := newHandBackRig(t)
	const clients, asked = 4, 2
	cs := make([]net.Conn, clients)
	brs := make([]*bufio.Reader, clients)
	for i := range cs {
		cs[i] = r.dial()
		brs[i] = bufio.NewReader(cs[i])
		if _, err := io.WriteString(cs[i], post("/1", "a")); err != nil {
			t.Fatal(err)
		}
		if want, have := "old /1 a", answer(t, cs[i], brs[i]); want != have {
			t.Fatalf("want %q, have %q", want, have)
		}
	}
	// Answered: each is back in net/http's read for the next request, or
	// about to be (then the worker skips it); ask again for what did not
	// come, once what was given back has had time to arrive.
	moved := map[string]bool{}
	for try := 0; len(moved) < asked && try < 20; try++ {
		if err := r.ctl.Send(ipc.AppendUint32(nil, ipc.TypeGiveBack, uint32(asked-len(moved))), nil); err != nil {
			t.Fatal(err)
		}
		for wait := time.After(500 * time.Millisecond); ; {
			select {
			case c := <-r.back:
				moved[c.RemoteAddr().String()] = true
				r.backs.c <- c
				continue
			case <-wait:
			}
			break
		}
	}
	if len(moved) != asked {
		t.Fatalf("%d connections given back, want %d", len(moved), asked)
	}
	select {
	case c := <-r.back:
		t.Fatalf("more given back than asked: %v", c.RemoteAddr())
	case <-time.After(100 * time.Millisecond):
	}
	for i, c := range cs {
		if _, err := io.WriteString(c, post("/2", "b")); err != nil {
			t.Fatal(err)
		}
		want := "old /2 b"
		if moved[c.LocalAddr().String()] {
			want = "new /2 b"
		}
		if have := answer(t, c, brs[i]); want != have {
			t.Fatalf("client %d: want %q, have %q", i, want, have)
		}
	}
	r.forward()
	r.drain()
	if moved, failed := r.done(); moved != clients || failed != 0 {
		t.Fatalf("worker moved %d, failed %d; want %d, 0", moved, failed, clients)
	}
}

// Rebalancing gives back only connections that have spoken: one that has
// not sent a byte stays, to be closed by its header timeout, which a move
// would start again on every worker it reached (an idle flood would never
// end).
func TestHandBackGiveBackKeepsSilent(t *testing.T) {
	r := newHandBackRig(t)
	silent := []net.Conn{r.dial(), r.dial()}
	c := r.dial()
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, post("/1", "a")); err != nil {
		t.Fatal(err)
	}
	if want, have := "old /1 a", answer(t, c, br); want != have {
		t.Fatalf("want %q, have %q", want, have)
	}
	moved := map[string]bool{}
	for try := 0; try < 3; try++ {
		if err := r.ctl.Send(ipc.AppendUint32(nil, ipc.TypeGiveBack, 3), nil); err != nil {
			t.Fatal(err)
		}
		for wait := time.After(300 * time.Millisecond); ; {
			select {
			case b := <-r.back:
				moved[b.RemoteAddr().String()] = true
				r.backs.c <- b
				continue
			case <-wait:
			}
			break
		}
	}
	for _, s := range silent {
		if moved[s.LocalAddr().String()] {
			t.Errorf("silent connection %v given back", s.LocalAddr())
		}
	}
	if !moved[c.LocalAddr().String()] || len(moved) != 1 {
		t.Fatalf("given back %v, want only the one that was served (%v)", moved, c.LocalAddr())
	}
	if _, err := io.WriteString(c, post("/2", "b")); err != nil {
		t.Fatal(err)
	}
	if want, have := "new /2 b", answer(t, c, br); want != have {
		t.Fatalf("want %q, have %q", want, have)
	}
	for _, s := range silent {
		s.Close()
	}
	r.forward()
	r.drain()
}
