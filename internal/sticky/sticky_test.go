package sticky

import (
	"fmt"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/filemap"
	"github.com/prefork/prefork/internal/ipc"
)

func TestDocNamesEveryFile(t *testing.T) { filemap.Check(t, ".") }

func slotsUpTo(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// Rendezvous hashing spreads keys evenly, and growing from N to N+1 slots
// moves only the keys the new slot wins, about 1/(N+1) of them.
func TestPickSpreadsAndMovesLittle(t *testing.T) {
	const keys = 20000
	for n := 1; n <= 8; n++ {
		count := make([]int, n+1)
		moved := 0
		for i := range keys {
			k := fmt.Sprintf("session-%d", i)
			a, _ := Pick(k, slotsUpTo(n))
			b, _ := Pick(k, slotsUpTo(n+1))
			count[a]++
			if a != b {
				moved++
				if b != n {
					t.Fatalf("key %s moved from %d to %d, not to the new slot %d", k, a, b, n)
				}
			}
		}
		for s, c := range count[:n] {
			if want := keys / n; c < want*9/10 || c > want*11/10 {
				t.Errorf("%d slots: slot %d has %d keys, want about %d", n, s, c, want)
			}
		}
		if want := keys / (n + 1); moved < want*9/10 || moved > want*11/10 {
			t.Errorf("%d→%d slots moved %d keys, want about %d", n, n+1, moved, want)
		}
	}
	if _, ok := Pick("k", nil); ok {
		t.Fatal("Pick over no slots: ok")
	}
	// Order of the slots does not matter.
	a, _ := Pick("x", []int{3, 1, 2})
	b, _ := Pick("x", []int{1, 2, 3})
	if a != b {
		t.Fatalf("order changed the pick: %d, %d", a, b)
	}
}

func TestTableBoundsAndForgets(t *testing.T) {
	now := time.Unix(1000, 0)
	tab := NewTable(3, time.Minute, func() time.Time { return now })
	tab.Claim("a", 0)
	tab.Claim("b", 1)
	tab.Claim("c", 1)
	now = now.Add(time.Second)
	tab.Lookup("a") // a is now the most recently used
	tab.Claim("d", 2)
	if _, ok := tab.Lookup("b"); ok {
		t.Fatal("b, least recently used, was not evicted")
	}
	for k, want := range map[string]int{"a": 0, "c": 1, "d": 2} {
		if have, ok := tab.Lookup(k); !ok || have != want {
			t.Fatalf("%s: slot %d %v, want %d", k, have, ok, want)
		}
	}
	tab.Claim("a", 2) // a claim moves a key
	if have, _ := tab.Lookup("a"); have != 2 {
		t.Fatalf("reclaimed a: slot %d, want 2", have)
	}
	if n := tab.ForgetSlot(2); n != 2 {
		t.Fatalf("ForgetSlot(2) dropped %d, want 2", n)
	}
	now = now.Add(time.Minute)
	st := tab.Stats()
	if st.Len != 0 || st.Evicted != 1 || st.Expired != 1 || st.Forgotten != 2 || st.Claims != 5 || len(st.PerSlot) != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestKeys(t *testing.T) {
	head := "GET /socket.io/?EIO=4&transport=polling&sid=abc HTTP/1.1\r\nHost: x\r\nX-User: u1\r\nCookie: a=1; SID=\"s2\"\r\n\r\n"
	for spec, want := range map[string]string{"cookie:SID": "s2", "header:x-user": "u1", "query:sid": "abc", "query:EIO": "4", "cookie:none": "", "header:none": ""} {
		k, err := ParseKey(spec)
		if err != nil {
			t.Fatal(err)
		}
		if have, more := k.Find([]byte(head), ipc.Peer{}); have != want || more {
			t.Errorf("%s: %q more=%v, want %q", spec, have, more, want)
		}
		// A head cut short has no key yet, and asks for more.
		if have, more := k.Find([]byte(head[:20]), ipc.Peer{}); have != "" || !more {
			t.Errorf("%s on a partial head: %q more=%v", spec, have, more)
		}
	}
	for _, bad := range []string{"cookie", "cookie:", "bogus:x", "ip:x", "header:a b"} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q): no error", bad)
		}
	}
	ip, _ := ParseKey("ip")
	var p ipc.Peer
	p[0], p[3], p[4], p[5], p[6] = 4, 192, 0, 2, 7
	if k, _ := ip.Find(nil, p); k != "\xc0\x00\x02\x07" {
		t.Fatalf("ip key %q", k)
	}
}

// Claims lists least recently used first, so claiming them again in order
// rebuilds the same table, LRU order included.
func TestTableClaimsRebuild(t *testing.T) {
	now := time.Unix(0, 0)
	tab := NewTable(3, 0, func() time.Time { return now })
	tab.Claim("a", 1)
	tab.Claim("b", 2)
	tab.Claim("c", 3)
	tab.Lookup("a")
	again := NewTable(3, 0, nil)
	for _, c := range tab.Claims() {
		again.Claim(c.Key, c.Slot)
	}
	again.Claim("d", 4) // evicts b, the least recently used
	if _, ok := again.Lookup("b"); ok {
		t.Fatal("the rebuilt table lost the LRU order")
	}
	if s, ok := again.Lookup("a"); !ok || s != 1 {
		t.Fatalf("a: %d %v", s, ok)
	}
}
