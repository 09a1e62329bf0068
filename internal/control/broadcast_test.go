package control

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// reader hands out a subscription's events one at a time.
type reader struct {
	t      *testing.T
	sub    *Subscription
	queued []Event
}

// next returns the next event, failing t if none comes within 10s.
func (r *reader) next(what string) Event {
	r.t.Helper()
	deadline := time.After(10 * time.Second)
	for len(r.queued) == 0 {
		if r.queued = r.sub.Take(r.queued); len(r.queued) > 0 {
			break
		}
		select {
		case <-r.sub.Ready():
		case <-deadline:
			r.t.Fatalf("no %s within 10s", what)
		}
	}
	e := r.queued[0]
	r.queued = r.queued[1:]
	return e
}

func TestBroadcasterSlowSubscriberDoesNotBlockPublish(t *testing.T) {
	checkLeaks(t)
	var b Broadcaster // zero value
	sub := b.Subscribe()
	defer sub.Close()
	const n = 10000
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := range n {
			b.Publish(Event{Kind: EventFork, PID: i})
		}
	}()
	recv(t, published, "end of 10k Publish calls to a subscriber that does not read")

	// Reading now: what fit, in order, then how many were lost.
	r := &reader{t: t, sub: sub}
	next := 0
	for next < n {
		e := r.next("event")
		switch e.Kind {
		case EventFork:
			if e.PID != next {
				t.Fatalf("event seq %v, want %d", e.PID, next)
			}
			next++
		case EventDropped:
			if next < SubscriberBuffer {
				t.Errorf("dropped after only %d events, with room for %d", next, SubscriberBuffer)
			}
			next += e.Count
			if next != n {
				t.Errorf("delivered and dropped add up to %d, want %d", next, n)
			}
		default:
			t.Fatalf("unexpected event %v", e)
		}
	}
	// After the loss, events flow again.
	b.Publish(Event{Kind: EventExit})
	if e := r.next("event after the loss"); e.Kind != EventExit {
		t.Errorf("got %v", e)
	}
}

// Events lost are reported where they are missing: right after the full
// queue, when the reader takes it.
func TestSubscriptionMarksTheGap(t *testing.T) {
	var b Broadcaster
	sub := b.Subscribe()
	defer sub.Close()
	push := func(from, to int) {
		for i := from; i < to; i++ {
			b.Publish(Event{PID: i})
		}
	}
	take := func(wantFrom, wantTo, wantDropped int) {
		t.Helper()
		have := sub.Take(nil)
		want := wantTo - wantFrom
		if wantDropped > 0 {
			want++
		}
		if len(have) != want {
			t.Fatalf("took %d events, want %d", len(have), want)
		}
		for i, e := range have[:wantTo-wantFrom] {
			if e.PID != wantFrom+i {
				t.Fatalf("event %d is %v, want seq %d", i, e, wantFrom+i)
			}
		}
		if wantDropped > 0 {
			if e := have[len(have)-1]; e.Kind != EventDropped || e.Count != wantDropped || e.Time == "" {
				t.Fatalf("last event %v, want dropped with count %d", e, wantDropped)
			}
		}
	}
	push(0, SubscriberBuffer+3)
	take(0, SubscriberBuffer, 3)
	take(0, 0, 0) // nothing left, the loss reported once
	push(0, 100)  // the ring wraps around from here
	take(0, 100, 0)
	push(0, SubscriberBuffer+5)
	take(0, SubscriberBuffer, 5)
	push(7, 9)
	take(7, 9, 0)
}

func TestBroadcasterClose(t *testing.T) {
	checkLeaks(t)
	var b Broadcaster
	sub := b.Subscribe()
	other := b.Subscribe()
	defer other.Close()
	b.Publish(Event{Kind: "a"})
	sub.Close()
	sub.Close() // harmless
	b.Publish(Event{Kind: "b"})
	if have := sub.Take(nil); len(have) != 0 {
		t.Errorf("took %v after Close", have)
	}
	if n := b.subscribers(); n != 1 {
		t.Errorf("%d subscribers, want 1", n)
	}
	r := &reader{t: t, sub: other}
	for _, want := range []EventKind{"a", "b"} {
		if e := r.next("event"); e.Kind != want {
			t.Errorf("other subscriber got %v, want %s", e, want)
		}
	}
}

// A subscription is a queue, not a goroutine: many of them, subscribed and
// closed over and over, leave nothing running.
func TestSubscriptionsHaveNoGoroutine(t *testing.T) {
	checkLeaks(t)
	var b Broadcaster
	before := runtime.NumGoroutine()
	subs := make([]*Subscription, 1000)
	for round := range 5 {
		for i := range subs {
			subs[i] = b.Subscribe()
		}
		b.Publish(Event{Kind: EventFork, PID: round})
		if have := runtime.NumGoroutine(); have > before+len(subs)/10 {
			t.Fatalf("%d goroutines with %d subscriptions, %d without", have, len(subs), before)
		}
		for _, s := range subs {
			if e := s.Take(nil); len(e) != 1 || e[0].PID != round {
				t.Fatalf("took %v", e)
			}
			s.Close()
		}
	}
	if n := b.subscribers(); n != 0 {
		t.Errorf("%d subscribers left", n)
	}
}

func TestPublishAddsTime(t *testing.T) {
	checkLeaks(t)
	var b Broadcaster
	sub := b.Subscribe()
	defer sub.Close()
	b.Publish(Event{Kind: EventFork})
	b.Publish(Event{})
	b.Publish(Event{Kind: EventReady, Time: "given"})
	r := &reader{t: t, sub: sub}
	got := r.next("event")
	if _, err := time.Parse(time.RFC3339Nano, got.Time); err != nil {
		t.Errorf("time %v: %v", got.Time, err)
	}
	if got := r.next("event"); got.Time == "" {
		t.Errorf("empty event published as %v", got)
	}
	if got := r.next("event"); got.Time != "given" {
		t.Errorf("time replaced: %v", got)
	}
}

func TestMarshalEventPutsEventAndTimeFirst(t *testing.T) {
	b, err := marshalEvent(Event{Slot: 1, Time: "T", PID: 7, Kind: EventExit, Code: 2})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"event":"exit","time":"T","code":2,"pid":7,"slot":1}`; string(b) != want {
		t.Errorf("have %s\nwant %s", b, want)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil || len(back) != 5 {
		t.Errorf("round trip: %v, %v", back, err)
	}
	if strings.Contains(string(b), "\n") {
		t.Error("not one line")
	}
}

// TestEventEncodedOnce: an event published to many subscribers is encoded
// once, and every event stream writes those same bytes; before, each
// stream encoded it again, and with fifty of them a status request waited
// for fifty times the encoding.
func TestEventEncodedOnce(t *testing.T) {
	var b Broadcaster
	subs := make([]*Subscription, 50)
	for i := range subs {
		subs[i] = b.Subscribe()
		defer subs[i].Close()
	}
	b.Publish(Event{Kind: EventMessage, PID: 7, Msg: strings.Repeat("x", 1024)})
	var first []byte
	for i, s := range subs {
		lines := s.takeLines(nil)
		if len(lines) != 1 {
			t.Fatalf("subscriber %d: %d events, want 1", i, len(lines))
		}
		enc, err := lines[0].bytes()
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = enc
			if want, _ := marshalEvent(lines[0].e); string(enc) != string(want) {
				t.Fatalf("encoded %s, want %s", enc, want)
			}
			continue
		}
		if &enc[0] != &first[0] {
			t.Fatalf("subscriber %d encoded the event again", i)
		}
	}
}

// A message over MaxEventMsg reaches a subscriber cut, with its full size,
// and an Engine's subscription (SubscribeFull) whole.
func TestPublishCutsBigMessages(t *testing.T) {
	var b Broadcaster
	cut, full := b.Subscribe(), b.SubscribeFull()
	defer cut.Close()
	defer full.Close()
	big := strings.Repeat("é", MaxEventMsg) // two bytes each: cut inside none
	b.Publish(Event{Kind: EventMessage, Msg: big, Seq: 1})
	b.Publish(Event{Kind: EventMessage, Msg: "small", Seq: 2})
	have := cut.Take(nil)
	if len(have) != 2 {
		t.Fatalf("want 2 events, have %d", len(have))
	}
	if m := have[0].Msg; len(m) > MaxEventMsg || !utf8.ValidString(m) || !strings.HasPrefix(big, m) || have[0].MsgBytes != len(big) {
		t.Errorf("cut: msg of %d bytes (valid UTF-8: %v), msg_bytes %d; want a prefix of at most %d bytes, msg_bytes %d",
			len(m), utf8.ValidString(m), have[0].MsgBytes, MaxEventMsg, len(big))
	}
	if have[1].Msg != "small" || have[1].MsgBytes != 0 {
		t.Errorf("a small message: %+v", have[1])
	}
	line, err := marshalEvent(have[0])
	if err != nil || !strings.Contains(string(line), fmt.Sprintf(`"msg_bytes":%d`, len(big))) {
		t.Errorf("on the wire: %v, no msg_bytes in %.100s", err, line)
	}
	whole := full.Take(nil)
	if len(whole) != 2 || whole[0].Msg != big || whole[0].MsgBytes != 0 {
		t.Errorf("SubscribeFull: the message was not whole")
	}
}
