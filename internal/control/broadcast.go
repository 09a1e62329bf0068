package control

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// SubscriberBuffer is how many events a subscriber may fall behind before it
// loses some.
const SubscriberBuffer = 256

// MaxEventMsg bounds the message a message event carries to a subscriber
// (`ctl events`, the dashboard): a longer one is cut at a character
// boundary, and the event says its full size in MsgBytes. A queue of
// SubscriberBuffer events then holds at most 4 MiB of messages, however
// big the messages workers send (up to nodeipc.MaxLine). Only an Engine's
// own subscription (SubscribeFull) gets them whole.
const MaxEventMsg = 16 << 10

// Broadcaster fans events out to subscribers without ever blocking the
// publisher. Each subscriber has a queue of SubscriberBuffer events; one
// that falls further behind loses the events that do not fit, and receives
// {"event":"dropped","count":N} where they are missing: right after the
// queue that was full, when it takes it. A
// subscription costs its queue and one channel: no goroutine. The zero
// value is ready to use.
type Broadcaster struct {
	mu   sync.Mutex
	subs map[*Subscription]struct{}
}

// Subscription is one subscriber's queue. Its reader waits on Ready and
// then calls Take, which returns everything queued.
type Subscription struct {
	b     *Broadcaster
	ready chan struct{} // cap 1: something was queued since the last Take

	// guarded by b.mu
	queue   [SubscriberBuffer]*line // a ring: n events from head
	head, n int
	dropped int  // lost since the queue filled up
	closed  bool // Close was called: nothing more is queued
	full    bool // messages whole (SubscribeFull), not cut to MaxEventMsg
}

// Publish queues e for every subscriber that has room for it. It fills in
// Time if e has none.
func (b *Broadcaster) Publish(e Event) {
	if e.Time == "" {
		e.Time = now()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.subs) == 0 {
		return
	}
	l := &line{e: e} // one for all: encoded once, by the first to write it
	cut := l
	if len(e.Msg) > MaxEventMsg {
		// A copy, not a substring: the queues must not keep the whole
		// message alive.
		c := e
		c.Msg, c.MsgBytes = strings.Clone(strings.ToValidUTF8(e.Msg[:MaxEventMsg], "")), len(e.Msg)
		cut = &line{e: c}
	}
	for s := range b.subs {
		if s.full {
			s.push(l)
		} else {
			s.push(cut)
		}
	}
}

// line is a published event and its encoding, shared by every
// subscription it was queued for, so that however many control clients
// stream events each is encoded once: with fifty clients, encoding it
// for each cost the server fifty times the CPU, which a status request
// then waited for.
type line struct {
	e    Event
	once sync.Once
	b    []byte
	err  error
}

// bytes is l's event encoded by marshalEvent, done on the first call.
func (l *line) bytes() ([]byte, error) {
	l.once.Do(func() { l.b, l.err = marshalEvent(l.e) })
	return l.b, l.err
}

// Subscribe returns a subscription to the events published from now on,
// with messages cut to MaxEventMsg. Close it when done.
func (b *Broadcaster) Subscribe() *Subscription { return b.subscribe(false) }

// SubscribeFull is Subscribe with messages whole, for an Engine's reader,
// which passes them on to the application.
func (b *Broadcaster) SubscribeFull() *Subscription { return b.subscribe(true) }

func (b *Broadcaster) subscribe(full bool) *Subscription {
	s := &Subscription{b: b, ready: make(chan struct{}, 1), full: full}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs == nil {
		b.subs = make(map[*Subscription]struct{})
	}
	b.subs[s] = struct{}{}
	return s
}

// push queues e, or counts it as lost if the queue is full; then wakes the
// reader. It never blocks. Called with b.mu held. Since Take empties the
// queue and reports the loss, events are lost only behind a full queue, and
// the notice of their loss goes right after it.
func (s *Subscription) push(l *line) {
	if s.n == len(s.queue) {
		s.dropped++
		return // the reader is already due to look
	}
	s.put(l)
	select {
	case s.ready <- struct{}{}:
	default: // the reader is already due to look
	}
}

func (s *Subscription) put(l *line) {
	s.queue[(s.head+s.n)%len(s.queue)] = l
	s.n++
}

// Ready returns a channel that has a value when events may have been queued
// since the last Take. A receive from it may find nothing to Take, never the
// other way round.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Take appends everything queued to dst, oldest first, followed by the
// notice of events lost after them, and returns the extended slice. It
// never blocks; after Close it appends nothing.
func (s *Subscription) Take(dst []Event) []Event {
	s.take(func(l *line) { dst = append(dst, l.e) })
	return dst
}

// takeLines is Take with the shared encodings (see line).
func (s *Subscription) takeLines(dst []*line) []*line {
	s.take(func(l *line) { dst = append(dst, l) })
	return dst
}

// take passes what is queued to each, oldest first, followed by the
// notice of events lost after them.
func (s *Subscription) take(each func(*line)) {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	for ; s.n > 0; s.n-- {
		each(s.queue[s.head])
		s.queue[s.head] = nil
		s.head = (s.head + 1) % len(s.queue)
	}
	if s.dropped > 0 {
		each(&line{e: droppedNotice(s.dropped)})
		s.dropped = 0
	}
}

// Close unsubscribes and drops what is queued. Calling it again does
// nothing.
func (s *Subscription) Close() {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	delete(s.b.subs, s)
	clear(s.queue[:])
	s.head, s.n, s.dropped = 0, 0, 0
}

func droppedNotice(n int) Event {
	return Event{Time: now(), Kind: EventDropped, Count: n}
}

// subscribers returns how many subscriptions are live.
func (b *Broadcaster) subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

func now() string { return time.Now().Format(time.RFC3339Nano) }

// marshalEvent encodes e as one JSON object with "event" and "time" first
// and the other fields sorted, so that lines read well in a terminal, and
// with no control character left unescaped (see printableJSON).
func marshalEvent(ev Event) ([]byte, error) {
	e := ev.Fields()
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
	return printableJSON(buf.Bytes()), nil
}
