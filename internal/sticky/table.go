package sticky

import (
	"container/list"
	"sync"
	"time"
)

// Table holds the keys workers claimed: a key a worker made up (a session
// id) goes to the slot that claimed it, whatever the hash says. It is
// bounded: past max entries the least recently used goes, and an entry not
// used for maxAge goes too. Safe for concurrent use.
type Table struct {
	max    int
	maxAge time.Duration
	now    func() time.Time

	mu      sync.Mutex
	m       map[string]*list.Element // of *entry
	lru     list.List                // most recently used first
	perSlot map[int]int

	claims, evicted, expired, forgotten uint64
}

type entry struct {
	key  string
	slot int
	used time.Time
}

// NewTable is a table of at most size keys (at least 1), each kept while
// used within maxAge (0: no age bound). now is the clock; nil is
// time.Now.
func NewTable(size int, maxAge time.Duration, now func() time.Time) *Table {
	if now == nil {
		now = time.Now
	}
	return &Table{max: max(size, 1), maxAge: maxAge, now: now, m: map[string]*list.Element{}, perSlot: map[int]int{}}
}

// Claim routes key to slot from now on, replacing any earlier claim.
func (t *Table) Claim(key string, slot int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	t.claims++
	if el, ok := t.m[key]; ok {
		e := el.Value.(*entry)
		if t.perSlot[e.slot]--; t.perSlot[e.slot] <= 0 {
			delete(t.perSlot, e.slot)
		}
		e.slot, e.used = slot, now
		t.perSlot[slot]++
		t.lru.MoveToFront(el)
		return
	}
	t.expireLocked(now)
	for len(t.m) >= t.max {
		t.removeLocked(t.lru.Back())
		t.evicted++
	}
	t.m[key] = t.lru.PushFront(&entry{key: key, slot: slot, used: now})
	t.perSlot[slot]++
}

// Lookup is the slot that claimed key, and marks it used.
func (t *Table) Lookup(key string) (int, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	t.expireLocked(now)
	el, ok := t.m[key]
	if !ok {
		return 0, false
	}
	e := el.Value.(*entry)
	e.used = now
	t.lru.MoveToFront(el)
	return e.slot, true
}

// ForgetSlot drops every key slot claimed (its worker changed generation,
// so the sessions they named are gone) and returns how many.
func (t *Table) ForgetSlot(slot int) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.perSlot[slot] == 0 {
		return 0
	}
	n := 0
	for el := t.lru.Front(); el != nil; {
		next := el.Next()
		if el.Value.(*entry).slot == slot {
			t.removeLocked(el)
			n++
		}
		el = next
	}
	t.forgotten += uint64(n)
	return n
}

// expireLocked drops the entries unused for maxAge: the least recently
// used are at the back, so it stops at the first one still young.
func (t *Table) expireLocked(now time.Time) {
	if t.maxAge <= 0 {
		return
	}
	for el := t.lru.Back(); el != nil && now.Sub(el.Value.(*entry).used) >= t.maxAge; el = t.lru.Back() {
		t.removeLocked(el)
		t.expired++
	}
}

func (t *Table) removeLocked(el *list.Element) {
	e := t.lru.Remove(el).(*entry)
	delete(t.m, e.key)
	if t.perSlot[e.slot]--; t.perSlot[e.slot] <= 0 {
		delete(t.perSlot, e.slot)
	}
}

// TableStats are a table's size and counters.
type TableStats struct {
	Len       int
	PerSlot   map[int]int // keys claimed by each slot (a copy)
	Claims    uint64      // claims made
	Evicted   uint64      // keys dropped for room (LRU)
	Expired   uint64      // keys dropped unused for the age bound
	Forgotten uint64      // keys dropped with their slot's worker generation
}

// Stats reports the table's size and counters, expiring what is old.
func (t *Table) Stats() TableStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(t.now())
	ps := make(map[int]int, len(t.perSlot))
	for s, n := range t.perSlot {
		ps[s] = n
	}
	return TableStats{Len: len(t.m), PerSlot: ps, Claims: t.claims, Evicted: t.evicted, Expired: t.expired, Forgotten: t.forgotten}
}

// Claim is one entry of the table, as an upgrade keeps it.
type Claim struct {
	Key  string `json:"key"`
	Slot int    `json:"slot"`
}

// Claims lists the table's keys, least recently used first: claiming them
// again in that order rebuilds the table (an in-place upgrade does).
func (t *Table) Claims() []Claim {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Claim, 0, len(t.m))
	for el := t.lru.Back(); el != nil; el = el.Prev() {
		e := el.Value.(*entry)
		out = append(out, Claim{Key: e.key, Slot: e.slot})
	}
	return out
}
