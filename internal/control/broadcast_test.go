package control

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestBroadcasterSlowSubscriberDoesNotBlockPublish(t *testing.T) {
	checkLeaks(t)
	var b Broadcaster // zero value
	events, cancel := b.Subscribe()
	defer cancel()
	const n = 10000
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := range n {
			b.Publish(Event{"event": "fork", "seq": i})
		}
	}()
	recv(t, published, "end of 10k Publish calls to a subscriber that does not read")

	// Reading now: what fit, in order, then how many were lost.
	next := 0
	for next < n {
		e := recv(t, events, "event")
		switch e["event"] {
		case "fork":
			if e["seq"] != next {
				t.Fatalf("event seq %v, want %d", e["seq"], next)
			}
			next++
		case "dropped":
			if next < SubscriberBuffer {
				t.Errorf("dropped after only %d events, with room for %d", next, SubscriberBuffer)
			}
			next += e["count"].(int)
			if next != n {
				t.Errorf("delivered and dropped add up to %d, want %d", next, n)
			}
		default:
			t.Fatalf("unexpected event %v", e)
		}
	}
	// After the loss, events flow again.
	b.Publish(Event{"event": "exit"})
	if e := recv(t, events, "event after the loss"); e["event"] != "exit" {
		t.Errorf("got %v", e)
	}
}

// Events lost are reported where they are missing: before the next event
// that fits, or when the reader has taken all that was queued.
func TestSubscriberQueueMarksTheGap(t *testing.T) {
	var b Broadcaster
	s := &subscriber{wake: make(chan struct{}, 1)}
	for i := range SubscriberBuffer + 3 {
		s.push(Event{"seq": i})
	}
	pop := func() Event {
		e, ok := b.pop(s)
		if !ok {
			t.Fatal("queue empty")
		}
		return e
	}
	if e := pop(); e["seq"] != 0 {
		t.Fatalf("got %v", e)
	}
	s.push(Event{"seq": "x"}) // one slot free: no room for the notice too
	pop()
	s.push(Event{"seq": "y"}) // two free: the notice, then y
	for i := 2; i < SubscriberBuffer; i++ {
		if e := pop(); e["seq"] != i {
			t.Fatalf("got %v, want seq %d", e, i)
		}
	}
	if e := pop(); e["event"] != "dropped" || e["count"] != 4 {
		t.Fatalf("got %v, want dropped with count 4", e)
	}
	if e := pop(); e["seq"] != "y" {
		t.Fatalf("got %v, want y", e)
	}
	for i := range SubscriberBuffer + 2 {
		s.push(Event{"seq": i})
	}
	for i := range SubscriberBuffer {
		if e := pop(); e["seq"] != i {
			t.Fatalf("got %v, want seq %d", e, i)
		}
	}
	if e := pop(); e["event"] != "dropped" || e["count"] != 2 {
		t.Fatalf("got %v, want dropped with count 2 once the queue is empty", e)
	}
	if e, ok := b.pop(s); ok {
		t.Fatalf("got %v from an empty queue", e)
	}
}

func TestBroadcasterCancel(t *testing.T) {
	checkLeaks(t)
	var b Broadcaster
	events, cancel := b.Subscribe()
	other, cancelOther := b.Subscribe()
	defer cancelOther()
	b.Publish(Event{"event": "a"})
	cancel()
	cancel() // harmless
	for range events {
		// a queued event may or may not come through; the channel closes
	}
	b.Publish(Event{"event": "b"})
	if n := b.subscribers(); n != 1 {
		t.Errorf("%d subscribers, want 1", n)
	}
	for _, want := range []string{"a", "b"} {
		if e := recv(t, other, "event"); e["event"] != want {
			t.Errorf("other subscriber got %v, want %s", e, want)
		}
	}
}

func TestPublishAddsTimeOnACopy(t *testing.T) {
	checkLeaks(t)
	var b Broadcaster
	events, cancel := b.Subscribe()
	defer cancel()
	e := Event{"event": "fork"}
	b.Publish(e)
	b.Publish(nil)
	b.Publish(Event{"event": "ready", "time": "given"})
	got := recv(t, events, "event")
	ts, ok := got["time"].(string)
	if _, err := time.Parse(time.RFC3339Nano, ts); !ok || err != nil {
		t.Errorf("time %v: %v", got["time"], err)
	}
	if _, ok := e["time"]; ok {
		t.Error("Publish modified the caller's event")
	}
	if got := recv(t, events, "event"); got["time"] == nil {
		t.Errorf("nil event published as %v", got)
	}
	if got := recv(t, events, "event"); got["time"] != "given" {
		t.Errorf("time replaced: %v", got)
	}
}

func TestMarshalEventPutsEventAndTimeFirst(t *testing.T) {
	b, err := marshalEvent(Event{"slot": 1, "time": "T", "pid": 7, "event": "exit", "code": 2})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"event":"exit","time":"T","code":2,"pid":7,"slot":1}`; string(b) != want {
		t.Errorf("have %s\nwant %s", b, want)
	}
	if _, err := marshalEvent(Event{"event": "x", "f": func() {}}); err == nil {
		t.Error("a func encoded")
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil || len(back) != 5 {
		t.Errorf("round trip: %v, %v", back, err)
	}
	if strings.Contains(string(b), "\n") {
		t.Error("not one line")
	}
}
