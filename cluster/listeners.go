package cluster

import (
	"fmt"
	"net"
	"os"
	"sync"

	"github.com/prefork/prefork/internal/ipc"
)

// A supervisor with several listeners (-listen given more than once)
// hands a worker connections from all of them: in rr mode each arrives
// on the one handoff channel with its listener's index (a conns frame's
// record, ipc.FeatureListeners); in shared and reuseport mode the Nth
// listener's socket is at fd 4+N. [Listen] serves every one of them, so
// an unmodified worker never leaves a listener unserved; [ListenerName]
// says which one a connection came from.

// acceptMore starts, in shared and reuseport mode, accepting on the other
// listeners' sockets (fd 5...) into extra, as the control channel's
// connections go, waking Accept blocked on the first one.
func (l *listener) acceptMore() error {
	for i := 1; i < len(l.w.listeners); i++ {
		f := os.NewFile(uintptr(ipc.ListenFD+i), "prefork-listen-"+l.w.listeners[i].Name)
		a, err := newSocketAcceptor(f)
		if err != nil {
			f.Close()
			for _, m := range l.more {
				m.Close()
			}
			return fmt.Errorf("cluster: inherited listener %q: %w", l.w.listeners[i].Name, err)
		}
		a.index = i
		l.more = append(l.more, a)
	}
	l.startFeeds()
	return nil
}

// feedAccepted is called by feed after each accept; tests hold a
// connection there.
var feedAccepted = func() {}

// startFeeds starts a feed on each of more.
func (l *listener) startFeeds() {
	if len(l.more) == 0 {
		return
	}
	var feeding sync.WaitGroup
	feeding.Add(len(l.more))
	l.fed = make(chan struct{})
	for _, a := range l.more {
		go func() {
			defer feeding.Done()
			l.feed(a)
		}()
	}
	go func() {
		feeding.Wait()
		close(l.fed)
	}()
}

// feed accepts on a until it is closed (a drain or Close), passing each
// connection to Accept through extra.
func (l *listener) feed(a *socketAcceptor) {
	for {
		c, err := a.Accept()
		if err != nil {
			if isTimeout(err) || isTemporary(err) {
				continue
			}
			return
		}
		feedAccepted()
		select {
		case l.extra <- c:
			l.wake()
		case <-l.closed:
			c.Close()
			return
		}
	}
}

// lastFed returns, once a drain closed the sockets, a connection a feed
// still passes on, waiting for every feed to end: one may have accepted a
// connection just before its socket closed and not passed it yet, and
// parking without it would leave it unserved until the worker exits, which
// resets it. It returns nil when nothing more will come.
func (l *listener) lastFed() *handedConn {
	if l.fed != nil {
		select {
		case c := <-l.extra:
			return c
		case <-l.fed:
		}
	}
	select {
	case c := <-l.extra:
		return c
	default:
		return nil
	}
}

func isTemporary(err error) bool {
	_, ok := err.(tempErr)
	_, unusableErr := err.(unusable)
	return ok || unusableErr
}

// recordListener is the listener index in the first record of recs, each
// size bytes: 0 without one.
func recordListener(recs []byte, size int) int {
	if size != ipc.RecordSize || len(recs) < size {
		return 0
	}
	p := ipc.Peer(recs[:size])
	return p.Listener()
}

// name records which listener c came from.
func (w *worker) name(c *handedConn, index int) {
	if index < len(w.listeners) {
		c.index = index
	}
}

// ListenerName is the name of the supervisor's listener that conn (a
// connection Listen's listener returned, as http.Request's
// http.LocalAddrContextKey holds its local address, or the conn itself)
// came from; "" when the supervisor has one listener or conn did not
// come from it.
func ListenerName(conn any) string {
	if c, ok := conn.(*handedConn); ok && c.w != nil {
		if c.index < len(c.w.listeners) {
			return c.w.listeners[c.index].Name
		}
		return ""
	}
	w, err := get()
	if a, ok := conn.(net.Addr); ok && err == nil && w.listeners != nil {
		return listenerOfAddr(w, a)
	}
	return ""
}

// listenerOfAddr finds the listener whose address a, a connection's local
// address, is: a Unix socket's path, or a TCP port.
func listenerOfAddr(w *worker, a net.Addr) string {
	for _, l := range w.listeners {
		switch a := a.(type) {
		case *net.UnixAddr:
			if l.Addr == "unix:"+a.Name {
				return l.Name
			}
		case *net.TCPAddr:
			if _, port, err := net.SplitHostPort(l.Addr); err == nil && port == fmt.Sprint(a.Port) {
				return l.Name
			}
		}
	}
	return ""
}

// ListenerNames are the names of the supervisor's listeners, in the order
// -listen gave them, for [ListenNamed]: [""] when it has one, or when
// this process runs standalone.
func ListenerNames() []string {
	w, err := get()
	if err != nil || len(w.listeners) == 0 {
		return []string{""}
	}
	names := make([]string, len(w.listeners))
	for i, l := range w.listeners {
		names[i] = l.Name
	}
	return names
}
