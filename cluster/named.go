package cluster

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// One server per listener. [Listen] yields the connections of every
// listener on one net.Listener; [ListenNamed] yields those of one. Both
// are served by the same listener underneath (the one rr handoff channel,
// or the inherited sockets at fd 4 and up), made once: a demux accepts on
// it and routes each connection to the named listener of its index. So
// the drain works as with one listener: the underlying listener stops
// taking connections, the demux passes on what already arrived, and it
// parks only once every connection it routed was taken by its server
// (out reaches 0), so that each server's Shutdown waits for it.

// viewQueue is how many connections wait for a named listener whose
// server has not called Accept (or not yet called ListenNamed); more are
// closed.
const viewQueue = 256

// ListenNamed returns a listener that yields the connections of the
// supervisor's listener called name ("" for the first, as -listen gave
// them), so that a worker can run one server per listener. Call it once
// for every listener the supervisor has: connections of a listener no
// server took wait, up to 256, and are then closed. Closing one named
// listener leaves the others serving. A worker calls either [Listen] or
// ListenNamed, not both.
//
// Standalone, without a supervisor, it is net.Listen on addr: "unix:PATH"
// for a Unix socket, else TCP.
func ListenNamed(name, addr string) (net.Listener, error) {
	w, err := get()
	if err != nil {
		return nil, err
	}
	if w.ctl == nil {
		if path, ok := strings.CutPrefix(addr, "unix:"); ok {
			return net.Listen("unix", path)
		}
		return net.Listen("tcp", addr)
	}
	index, err := w.listenerIndex(name)
	if err != nil {
		return nil, err
	}
	w.demuxMu.Lock()
	defer w.demuxMu.Unlock()
	if w.demux == nil {
		if !w.listened.CompareAndSwap(false, true) {
			return nil, errListenTwice
		}
		base, err := listenAll(w)
		if err != nil {
			return nil, err
		}
		w.demux = newDemux(base)
		base.hold = w.demux.hold
	}
	return w.demux.claim(index)
}

// listenerIndex is the index of the listener called name: "" is the
// first; with one listener, its only name is "".
func (w *worker) listenerIndex(name string) (int, error) {
	if name == "" {
		return 0, nil
	}
	names := make([]string, len(w.listeners))
	for i, l := range w.listeners {
		if l.Name == name {
			return i, nil
		}
		names[i] = fmt.Sprintf("%q", l.Name)
	}
	return 0, fmt.Errorf("cluster: no listener named %q (the supervisor's: %s)", name, strings.Join(names, ", "))
}

// demux routes the connections of the underlying listener to the named
// listeners, one per supervisor listener.
type demux struct {
	base  *listener
	views []*namedListener

	// out counts connections routed to a view and not yet taken by its
	// server: queued, or returned by Accept before the server called
	// Accept again. taken wakes hold when it falls.
	out   atomic.Int64
	taken chan struct{}

	done chan struct{} // closed when base's Accept failed for good: err
	err  error

	mu      sync.Mutex
	claimed int // views claimed and not closed; the last Close closes base

	// started: run began, at the first Accept of any named listener, so
	// that the worker is ready (base's first Accept says so) once a
	// server serves, as with Listen, not when ListenNamed returns.
	started sync.Once
}

// start starts run, once.
func (d *demux) start() { d.started.Do(func() { go d.run() }) }

func newDemux(base *listener) *demux {
	d := &demux{base: base, taken: make(chan struct{}, 1), done: make(chan struct{})}
	n := max(len(base.w.listeners), 1)
	for i := range n {
		v := &namedListener{d: d, index: i, conns: make(chan *handedConn, viewQueue), closed: make(chan struct{})}
		v.addr = base.addr
		if i < len(base.w.listeners) {
			v.name = base.w.listeners[i].Name
			v.addr = fakeAddr(base.w.listeners[i].Addr)
		}
		if i > 0 && i-1 < len(base.more) {
			v.addr = base.more[i-1].Addr()
		} else if i == 0 && base.inner != nil {
			v.addr = base.inner.Addr()
		}
		d.views = append(d.views, v)
	}
	return d
}

// claim hands out the view of listener index, once.
func (d *demux) claim(index int) (*namedListener, error) {
	v := d.views[index]
	if !v.claimed.CompareAndSwap(false, true) {
		return nil, fmt.Errorf("cluster: ListenNamed(%q) called twice", v.name)
	}
	d.mu.Lock()
	d.claimed++
	d.mu.Unlock()
	return v, nil
}

// run accepts on base until it fails, routing each connection to its
// view. A temporary error (out of descriptors) backs off as net/http does.
func (d *demux) run() {
	var backoff time.Duration
	for {
		nc, err := d.base.Accept()
		if err != nil {
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			d.err = err
			close(d.done)
			for _, v := range d.views { // those never claimed, or closed since
				v.drainQueue()
			}
			return
		}
		backoff = 0
		c := nc.(*handedConn)
		v := d.views[0]
		if c.index < len(d.views) {
			v = d.views[c.index]
		}
		d.out.Add(1)
		select {
		case <-v.closed:
			d.drop(c)
			continue
		default:
		}
		select {
		case v.conns <- c:
			select {
			case <-v.closed: // Close may have emptied the queue before c
				v.drainQueue()
			default:
			}
		default:
			if v.full.CompareAndSwap(false, true) {
				fmt.Fprintf(os.Stderr, "cluster: listener %q: no server takes its connections (ListenNamed): closing them\n", v.name)
			}
			d.drop(c)
		}
	}
}

// drop closes c, routed but never to be taken.
func (d *demux) drop(c *handedConn) {
	c.Close()
	d.release()
}

// release counts one routed connection as taken.
func (d *demux) release() {
	d.out.Add(-1)
	poke(d.taken)
}

// hold is base's wait, draining, before it tells the worker's loop it has
// handed out everything: until every routed connection is taken by its
// server, or base closes.
func (d *demux) hold() {
	for d.out.Load() > 0 {
		select {
		case <-d.taken:
		case <-d.base.closed:
			return
		}
	}
}

// namedListener yields the connections of one of the supervisor's
// listeners (ListenNamed).
type namedListener struct {
	d       *demux
	index   int
	name    string
	addr    net.Addr
	conns   chan *handedConn
	claimed atomic.Bool
	full    atomic.Bool // logged that conns overflowed
	held    atomic.Bool // Accept returned a connection the server may not track yet

	closeOnce sync.Once
	closed    chan struct{}
}

func (v *namedListener) Accept() (net.Conn, error) {
	v.d.start()
	if v.held.Swap(false) {
		v.d.release() // the server tracks the last one: it called Accept again
	}
	select {
	case <-v.closed:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-v.conns:
		v.held.Store(true)
		select {
		case <-v.closed: // closed meanwhile: Close may have missed c
			if v.held.Swap(false) {
				v.d.drop(c)
			} else {
				c.Close()
			}
			return nil, net.ErrClosed
		default:
		}
		return c, nil
	case <-v.closed:
		return nil, net.ErrClosed
	case <-v.d.done:
		return nil, v.d.err
	}
}

// Close stops this listener only: its queued connections are closed, and
// later ones of its listener too. Closing the last one a worker claimed
// closes the underlying listener.
func (v *namedListener) Close() error {
	v.closeOnce.Do(func() {
		close(v.closed)
		if v.held.Swap(false) {
			v.d.release()
		}
		v.drainQueue()
		d := v.d
		d.mu.Lock()
		d.claimed--
		last := d.claimed == 0
		d.mu.Unlock()
		if last {
			d.base.Close()
		}
	})
	return nil
}

// drainQueue closes the connections queued for v.
func (v *namedListener) drainQueue() {
	for {
		select {
		case c := <-v.conns:
			v.d.drop(c)
		default:
			return
		}
	}
}

func (v *namedListener) Addr() net.Addr { return v.addr }
