package control

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"sync"
	"time"
)

// SubscriberBuffer is how many events a subscriber may fall behind before it
// loses some.
const SubscriberBuffer = 256

// Broadcaster fans events out to subscribers without ever blocking the
// publisher. Each subscriber has a queue of SubscriberBuffer events; one
// that falls further behind loses the events that do not fit, and receives
// {"event":"dropped","count":N} where they are missing: before the next
// event that fits, or as soon as it has read everything queued. The zero
// value is ready to use.
type Broadcaster struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

// subscriber queues events for one Subscribe; its pump goroutine feeds them
// to the unbuffered out channel, so that it can tell when the reader has
// caught up and report what was lost even if nothing more is published.
type subscriber struct {
	out    chan Event
	wake   chan struct{} // cap 1: something was queued
	done   chan struct{} // closed by cancel
	exited chan struct{} // closed by the pump

	// guarded by Broadcaster.mu
	queue   [SubscriberBuffer]Event // a ring: n events from head
	head, n int
	dropped int // lost since the last event queued
}

// Publish queues e for every subscriber that has room for it. It fills in
// "time" if e has none (on a copy: e itself is never modified).
func (b *Broadcaster) Publish(e Event) {
	if _, ok := e["time"]; !ok {
		e = maps.Clone(e)
		if e == nil {
			e = Event{}
		}
		e["time"] = now()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		s.push(e)
	}
}

// push queues e, after the notice of what was lost before it, or counts it
// as lost. It never blocks.
func (s *subscriber) push(e Event) {
	room := len(s.queue) - s.n
	switch {
	case s.dropped == 0 && room >= 1:
	case s.dropped > 0 && room >= 2:
		s.put(droppedNotice(s.dropped))
		s.dropped = 0
	default:
		s.dropped++
		return
	}
	s.put(e)
	select {
	case s.wake <- struct{}{}:
	default: // the pump is already due to look
	}
}

func (s *subscriber) put(e Event) {
	s.queue[(s.head+s.n)%len(s.queue)] = e
	s.n++
}

// pop takes the next event to deliver: the oldest queued one, or once the
// queue is empty, the notice of events lost after it.
func (b *Broadcaster) pop(s *subscriber) (Event, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case s.n > 0:
		e := s.queue[s.head]
		s.queue[s.head] = nil
		s.head, s.n = (s.head+1)%len(s.queue), s.n-1
		return e, true
	case s.dropped > 0:
		e := droppedNotice(s.dropped)
		s.dropped = 0
		return e, true
	}
	return nil, false
}

func droppedNotice(n int) Event {
	return Event{"time": now(), "event": "dropped", "count": n}
}

// pump delivers s's events until cancel.
func (b *Broadcaster) pump(s *subscriber) {
	defer close(s.exited)
	defer close(s.out)
	for {
		e, ok := b.pop(s)
		if !ok {
			select {
			case <-s.wake:
				continue
			case <-s.done:
				return
			}
		}
		select {
		case s.out <- e:
		case <-s.done:
			return
		}
	}
}

// Subscribe returns a channel of the events published from now on, and a
// cancel function that unsubscribes and closes the channel. Each
// subscription has a goroutine until cancel is called; cancel may be called
// more than once.
func (b *Broadcaster) Subscribe() (events <-chan Event, cancel func()) {
	s := &subscriber{
		out:    make(chan Event),
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	b.mu.Lock()
	if b.subs == nil {
		b.subs = make(map[*subscriber]struct{})
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	go b.pump(s)
	var once sync.Once
	return s.out, func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs, s)
			b.mu.Unlock()
			close(s.done)
			<-s.exited
		})
	}
}

// subscribers returns how many subscriptions are live.
func (b *Broadcaster) subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

func now() string { return time.Now().Format(time.RFC3339Nano) }

// marshalEvent encodes e as one JSON object with "event" and "time" first
// and the other fields sorted, so that lines read well in a terminal.
func marshalEvent(e Event) ([]byte, error) {
	keys := slices.Sorted(maps.Keys(e))
	keys = slices.DeleteFunc(keys, func(k string) bool { return k == "time" || k == "event" })
	for _, k := range []string{"time", "event"} {
		if _, ok := e[k]; ok {
			keys = slices.Insert(keys, 0, k)
		}
	}
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			buf.WriteByte(',')
		}
		kb, _ := json.Marshal(k) // a string always encodes
		vb, err := json.Marshal(e[k])
		if err != nil {
			return nil, err
		}
		buf.Write(kb)
		buf.WriteByte(':')
		buf.Write(vb)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}
