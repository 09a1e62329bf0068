package handoff

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/proxyproto"
	"github.com/prefork/prefork/internal/sticky"
)

// stickyRig is a handoff with a sticky policy accepting on a real
// listener, and workers that record, for each connection they get, its
// slot, its first line of bytes and its peer address.
type stickyRig struct {
	h    *Handoff
	addr string
	ts   []*Target
	mu   sync.Mutex
	got  map[string][]int    // first line (after the request line: the key's line) → slots
	peer map[string]net.Addr // first line → peer address
}

func newStickyRig(t *testing.T, cfg StickyConfig, slots int) *stickyRig {
	t.Helper()
	h, _ := New("round-robin", zap.NewNop(), 64, 5*time.Second)
	if err := h.Stick(cfg); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &stickyRig{h: h, addr: ln.Addr().String(), got: map[string][]int{}, peer: map[string]net.Addr{}}
	for i := range slots {
		r.addWorker(t, i)
	}
	loop, err := h.Accept(ln.(*net.TCPListener), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { loop.Stop(); ln.Close(); h.CloseQueue() })
	return r
}

// addWorker routes a new worker in slot, serving as the rig records.
func (r *stickyRig) addWorker(t *testing.T, slot int) *Target {
	tg, w := testTarget(t, slot)
	tg.TakesPeers()
	r.ts = append(r.ts, tg)
	go func() {
		buf := make([]byte, ipc.MaxFrame)
		for {
			f, fds, err := w.Recv(buf, nil)
			if err != nil {
				return
			}
			for i, fd := range fds {
				addr := ipc.PeerAddr(f.Peers()[i*ipc.PeerSize:])
				go r.serve(slot, os.NewFile(uintptr(fd), "conn"), addr)
			}
		}
	}()
	r.h.Route(tg)
	return tg
}

func (r *stickyRig) serve(slot int, f *os.File, peer *net.TCPAddr) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return
	}
	defer c.Close()
	br := bufio.NewReader(c)
	br.ReadString('\n')
	line, _ := br.ReadString('\n')
	r.mu.Lock()
	r.got[line] = append(r.got[line], slot)
	r.peer[line] = peer
	r.mu.Unlock()
	fmt.Fprintf(c, "%d\n", slot)
}

// ask sends head (after prefix, e.g. a PROXY header) on a new connection
// and returns the slot that answered, or -1 if the connection closed.
func ask(t *testing.T, addr, prefix, line string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "%sGET / HTTP/1.1\r\n%s\r\n\r\n", prefix, line)
	var slot int
	if _, err := fmt.Fscan(c, &slot); err != nil {
		return -1
	}
	return slot
}

func TestStickyCookieKeepsSlotAndHoldsForRestart(t *testing.T) {
	k, _ := sticky.ParseKey("cookie:sid")
	r := newStickyRig(t, StickyConfig{Key: k, Wait: time.Second, Hold: 2 * time.Second}, 3)
	slotOf := map[string]int{}
	for i := range 60 {
		key := fmt.Sprintf("Cookie: a=1; sid=k%d", i%12)
		s := ask(t, r.addr, "", key)
		if want, ok := slotOf[key]; ok && s != want {
			t.Fatalf("%s: slot %d, then %d", key, want, s)
		}
		slotOf[key] = s
	}
	seen := map[int]bool{}
	for _, s := range slotOf {
		seen[s] = true
	}
	if len(seen) != 3 {
		t.Fatalf("12 keys over 3 slots used %d slots", len(seen))
	}
	// The worker of a key's slot goes; a connection with that key waits
	// for the slot's next worker rather than going elsewhere.
	key := "Cookie: a=1; sid=k0"
	slot := slotOf[key]
	r.h.Unroute(r.ts[slot])
	done := make(chan int)
	go func() { done <- ask(t, r.addr, "", key) }()
	until(t, 2*time.Second, "connection held", func() bool { return r.h.StickyStats().Held == 1 })
	r.addWorker(t, slot)
	if have := <-done; have != slot {
		t.Fatalf("held connection went to slot %d, want %d", have, slot)
	}
	if st := r.h.StickyStats(); st.Hits < 61 || st.Keyed[slot] == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestStickyProxyHeaderGivesAddressAndKey(t *testing.T) {
	k, _ := sticky.ParseKey("ip")
	trust, _ := proxyproto.ParseTrust("127.0.0.0/8")
	r := newStickyRig(t, StickyConfig{Key: k, Wait: time.Second, Proxy: true, Trust: trust, ProxyWait: 300 * time.Millisecond}, 4)
	v2 := func(ip [4]byte, port uint16) string {
		b := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c")
		b = append(b, ip[:]...)
		b = append(b, 127, 0, 0, 1, byte(port>>8), byte(port), 0, 80)
		return string(b)
	}
	for i := range 8 {
		s1 := ask(t, r.addr, fmt.Sprintf("PROXY TCP4 192.0.2.%d 127.0.0.1 4000 80\r\n", i), fmt.Sprintf("X: v1-%d", i))
		s2 := ask(t, r.addr, v2([4]byte{192, 0, 2, byte(i)}, 4001), fmt.Sprintf("X: v2-%d", i))
		if s1 < 0 || s1 != s2 {
			t.Fatalf("client 192.0.2.%d: slot %d by v1, %d by v2", i, s1, s2)
		}
	}
	r.mu.Lock()
	if a := r.peer["X: v1-3\r\n"]; a == nil || a.String() != "192.0.2.3:4000" {
		t.Fatalf("worker saw peer %v, want 192.0.2.3:4000", a)
	}
	r.mu.Unlock()
	for _, bad := range []string{"PROXY TCP4 nonsense\r\n", "GET / HTTP/1.1\r\n", "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x02ab"} {
		if s := ask(t, r.addr, bad, "X: bad"); s != -1 {
			t.Fatalf("header %q: served by slot %d, want closed", bad, s)
		}
	}
	// A truncated header closes only its connection, after ProxyWait.
	c, _ := net.Dial("tcp", r.addr)
	defer c.Close()
	c.Write([]byte("PROXY TCP4 192.0"))
	if s := ask(t, r.addr, "PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\n", "X: good"); s < 0 {
		t.Fatal("a good client was refused behind a slow one")
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("slow header: read %v, want the connection closed", err)
	}
	until(t, time.Second, "rejections counted", func() bool { return r.h.StickyStats().ProxyRejected == 4 })
}

func TestStickyClaimWins(t *testing.T) {
	k, _ := sticky.ParseKey("header:x-session")
	tab := sticky.NewTable(100, time.Hour, nil)
	r := newStickyRig(t, StickyConfig{Key: k, Wait: time.Second, Table: tab}, 4)
	line := "X-Session: made-up"
	s := ask(t, r.addr, "", line)
	other := (s + 1) % 4
	r.h.Claim("made-up", other)
	for range 5 {
		if have := ask(t, r.addr, "", line); have != other {
			t.Fatalf("claimed key went to slot %d, want %d", have, other)
		}
	}
	r.h.ForgetSlot(other)
	if have := ask(t, r.addr, "", line); have != s {
		t.Fatalf("forgotten key went to slot %d, want its hash slot %d", have, s)
	}
}

// A slot whose worker does not come back within Hold gives its keyed
// connections to the next slot by hash; they are counted.
func TestStickyHoldExpires(t *testing.T) {
	k, _ := sticky.ParseKey("header:x-user")
	r := newStickyRig(t, StickyConfig{Key: k, Wait: time.Second, Hold: 200 * time.Millisecond}, 3)
	line := "X-User: u1"
	slot := ask(t, r.addr, "", line)
	r.h.Unroute(r.ts[slot])
	t0 := time.Now()
	other := ask(t, r.addr, "", line)
	if other == slot || other < 0 || time.Since(t0) < 200*time.Millisecond {
		t.Fatalf("with slot %d gone: slot %d after %v; want another after the 200ms hold", slot, other, time.Since(t0))
	}
	if st := r.h.StickyStats(); st.HoldExpired != 1 || st.Held != 0 {
		t.Fatalf("stats %+v", st)
	}
	// Retired, the slot's keys go elsewhere at once.
	r.h.RetireSlot(slot)
	if s := ask(t, r.addr, "", line); s == slot || s < 0 {
		t.Fatalf("retired slot %d: went to %d", slot, s)
	}
	if st := r.h.StickyStats(); st.HoldExpired != 1 {
		t.Fatalf("a retired slot's key was held: %+v", st)
	}
}

// -sticky-forget: a slot's claims go when a worker of another generation
// (generation), or any other worker (worker), is routed in it; a respawn
// in the same generation keeps them under generation.
func TestStickyForgetsClaimsOnNewWorker(t *testing.T) {
	k, _ := sticky.ParseKey("cookie:sid")
	for _, c := range []struct {
		forget          string
		sameGen, newGen bool // claims kept after a respawn, after a reload
	}{{"generation", true, false}, {"worker", false, false}, {"never", true, true}} {
		tab := sticky.NewTable(10, 0, nil)
		h, _ := New("round-robin", zap.NewNop(), 8, time.Second)
		if err := h.Stick(StickyConfig{Key: k, Table: tab, Forget: c.forget}); err != nil {
			t.Fatal(err)
		}
		kept := func(gen int) bool {
			tg, _ := testTarget(t, 1)
			tg.SetGeneration(gen)
			h.Route(tg)
			_, ok := tab.Lookup("s1")
			h.Unroute(tg)
			return ok
		}
		kept(1)
		h.Claim("s1", 1)
		if have := kept(1); have != c.sameGen {
			t.Errorf("%s: after a respawn in the same generation, claim kept %v, want %v", c.forget, have, c.sameGen)
		}
		h.Claim("s1", 1)
		if have := kept(2); have != c.newGen {
			t.Errorf("%s: after a worker of a new generation, claim kept %v, want %v", c.forget, have, c.newGen)
		}
	}
}

// A keyed connection whose worker is full (maxUntaken not taken) waits for
// that worker, as for a restarting one (-sticky-hold), instead of going to
// another slot; it gets there once the worker takes what it has.
func TestStickyFullWorkerHolds(t *testing.T) {
	h, _ := New("round-robin", zap.NewNop(), 4096, time.Minute)
	key, err := sticky.ParseKey("ip")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Stick(StickyConfig{Key: key, Hold: time.Minute}); err != nil {
		t.Fatal(err)
	}
	a, wa := testTarget(t, 1)
	b, wb := testTarget(t, 2)
	h.Route(a)
	h.Route(b)
	// A client whose key hashes to a's slot.
	var peer ipc.Peer
	for i := 1; peer == (ipc.Peer{}); i++ {
		p := proxyproto.Peer(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 40000))
		if k, _ := key.Find(nil, p); k != "" {
			if id, _ := sticky.Pick(k, []int{1, 2}); id == 1 {
				peer = p
			}
		}
	}
	const n = 3 * maxUntaken
	scratch := new(batch)
	for range n / maxBatch {
		fds := pipeFDs(t, maxBatch)
		peers := make([]ipc.Peer, len(fds))
		for i := range peers {
			peers[i] = peer
		}
		h.dispatch(fds, peers, scratch)
	}
	if nb := received(t, wb); nb != 0 {
		t.Fatalf("%d of slot 1's keyed connections went to slot 2 while its worker was full", nb)
	}
	if held := h.StickyStats().Held; held != n-maxUntaken {
		t.Fatalf("held %d, want the %d the full worker had no room for", held, n-maxUntaken)
	}
	got := 0
	for deadline := time.Now().Add(10 * time.Second); got < n && time.Now().Before(deadline); {
		if m := received(t, wa); m > 0 {
			got += m
			continue
		}
		time.Sleep(time.Millisecond) // polling the worker's channel, bounded by the deadline
	}
	st := h.StickyStats()
	if got != n || st.Held != 0 || st.HoldExpired != 0 || st.Hits != n {
		t.Fatalf("slot 1 got %d of %d; held %d, expired %d, hits %d", got, n, st.Held, st.HoldExpired, st.Hits)
	}
	if nb := received(t, wb); nb != 0 {
		t.Fatalf("%d went to slot 2", nb)
	}
}

// A keyed connection held because its worker was full goes to it at once
// if the worker has room by the time it is held: the worker took what it
// had between the failed send and the hold, and the flush that followed
// found nothing held, so no later one would come before -sticky-hold.
func TestStickyHeldWhenRoomReturns(t *testing.T) {
	h, _ := New("round-robin", zap.NewNop(), 4096, time.Minute)
	key, err := sticky.ParseKey("ip")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Stick(StickyConfig{Key: key, Hold: time.Minute}); err != nil {
		t.Fatal(err)
	}
	a, wa := testTarget(t, 1)
	h.Route(a)
	peer := ipc.Peer{}
	rest := h.st.holdFull(h, a, conns{fds: pipeFDs(t, 1), peers: []ipc.Peer{peer}, keys: []string{"k"}, frame: new([ipc.MaxConnsFrame]byte)})
	if len(rest.fds) != 0 {
		t.Fatalf("%d keyed connections left to the balance", len(rest.fds))
	}
	if st := h.StickyStats(); st.Held != 0 {
		t.Fatalf("held %d with room in its worker, want 0", st.Held)
	}
	if n := received(t, wa); n != 1 {
		t.Fatalf("the worker received %d, want 1", n)
	}
}
