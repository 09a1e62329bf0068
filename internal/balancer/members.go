package balancer

import (
	"slices"
	"sync"
	"sync/atomic"
)

// members is the copy-on-write set of targets underlying both policies.
//
// Readers load the current snapshot with a single atomic load and never
// block. Writers, serialized by mu, build a new slice and publish it; a
// published slice is never modified, so readers may index it freely.
//
// The zero value is an empty set.
type members[T Target] struct {
	mu       sync.Mutex          // serializes add and remove
	snapshot atomic.Pointer[[]T] // nil means empty
}

// load returns the current members. The slice must not be modified.
func (m *members[T]) load() []T {
	if p := m.snapshot.Load(); p != nil {
		return *p
	}
	return nil
}

func (m *members[T]) add(t T) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.load()
	if slices.Contains(old, t) {
		return
	}
	ts := make([]T, len(old), len(old)+1)
	copy(ts, old)
	ts = append(ts, t)
	m.snapshot.Store(&ts)
}

func (m *members[T]) remove(t T) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.load()
	i := slices.Index(old, t)
	if i < 0 {
		return
	}
	ts := make([]T, 0, len(old)-1)
	ts = append(ts, old[:i]...)
	ts = append(ts, old[i+1:]...)
	m.snapshot.Store(&ts)
}

func (m *members[T]) len() int {
	return len(m.load())
}
