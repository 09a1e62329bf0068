package ipc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"
	"unsafe"

	"github.com/prefork/prefork/internal/latency"

	"golang.org/x/sys/unix"
)

func TestDecodeRoundTrip(t *testing.T) {
	hb := Heartbeat{Conns: 3, Requests: 1 << 40, RSS: 12 << 20, Goroutines: 17, Healthy: true}
	msg, err := AppendFrame(nil, TypeMessage, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	ready, _ := AppendFrame(nil, TypeReady, nil)
	pause, _ := AppendFrame(nil, TypePause, nil)
	resume, _ := AppendFrame(nil, TypeResume, nil)
	for _, tc := range []struct {
		name  string
		frame []byte
		check func(Frame) bool
	}{
		{"ready", ready, func(f Frame) bool { return f.Type == TypeReady }},
		{"heartbeat", AppendHeartbeat(nil, hb), func(f Frame) bool { return f.Type == TypeHeartbeat && f.Heartbeat() == hb }},
		{"load", AppendUint32(nil, TypeLoad, 42), func(f Frame) bool { return f.Type == TypeLoad && f.Uint32() == 42 }},
		{"drain", AppendUint32(nil, TypeDrain, 30000), func(f Frame) bool { return f.Type == TypeDrain && f.Uint32() == 30000 }},
		{"conns", AppendConns(nil, 7), func(f Frame) bool { return f.Type == TypeConns && f.Count() == 7 && len(f.Peers()) == 0 }},
		{"conns with peers", connsPeers(2), func(f Frame) bool {
			return f.Type == TypeConns && f.Count() == 2 && len(f.Peers()) == 2*PeerSize &&
				PeerAddr(f.Peers()).String() == "10.0.0.1:80" && PeerAddr(f.Peers()[PeerSize:]).String() == "10.0.0.1:81"
		}},
		{"ready, no features", AppendReady(nil, 0), func(f Frame) bool { return f.Type == TypeReady && len(f.Payload) == 0 && f.Features() == 0 }},
		{"ready, features", AppendReady(nil, FeaturePeers), func(f Frame) bool { return f.Type == TypeReady && f.Features() == FeaturePeers }},
		{"message", msg, func(f Frame) bool { return f.Type == TypeMessage && bytes.Equal(f.Payload, []byte("hello")) }},
		{"pause", pause, func(f Frame) bool { return f.Type == TypePause && len(f.Payload) == 0 }},
		{"resume", resume, func(f Frame) bool { return f.Type == TypeResume && len(f.Payload) == 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Decode(tc.frame)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !tc.check(f) {
				t.Fatalf("decoded %v %x: does not match what was encoded", f.Type, f.Payload)
			}
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	big := make([]byte, MaxFrame+1)
	big[0], big[1] = Version, byte(TypeMessage)
	for _, tc := range []struct {
		name  string
		frame []byte
		want  error
	}{
		{"empty", nil, ErrShort},
		{"short header", []byte{Version, byte(TypeReady), 0}, ErrShort},
		{"bad version", []byte{2, byte(TypeReady), 0, 0}, ErrVersion},
		{"version zero", []byte{0, byte(TypeReady), 0, 0}, ErrVersion},
		{"type zero", []byte{Version, 0, 0, 0}, ErrType},
		{"unknown type", []byte{Version, byte(typeEnd), 0, 0}, ErrType},
		{"length past end", []byte{Version, byte(TypeMessage), 5, 0, 'a'}, ErrLength},
		{"trailing bytes", []byte{Version, byte(TypeReady), 0, 0, 'x'}, ErrLength},
		{"heartbeat too short", []byte{Version, byte(TypeHeartbeat), 1, 0, 0}, ErrPayload},
		{"heartbeat, latency cut short", fixLen(withLatency()[:len(withLatency())-8]), ErrPayload},
		{"heartbeat, one byte more", fixLen(append(AppendHeartbeat(nil, Heartbeat{}), 0)), ErrPayload},
		{"load wrong size", []byte{Version, byte(TypeLoad), 2, 0, 1, 2}, ErrPayload},
		{"conns zero", []byte{Version, byte(TypeConns), 1, 0, 0}, ErrPayload},
		{"conns too many", []byte{Version, byte(TypeConns), 1, 0, MaxFDs + 1}, ErrPayload},
		{"conns empty", []byte{Version, byte(TypeConns), 0, 0}, ErrPayload},
		{"conns peers short", connsPeers(2)[:len(connsPeers(2))-1], ErrLength},
		{"conns peers fewer than count", fixLen(connsPeers(2)[:HeaderSize+1+PeerSize]), ErrPayload},
		{"conns peer family", badFamily(), ErrPayload},
		{"ready wrong size", []byte{Version, byte(TypeReady), 2, 0, 1, 0}, ErrPayload},
		{"pause with payload", []byte{Version, byte(TypePause), 1, 0, 1}, ErrPayload},
		{"resume with payload", []byte{Version, byte(TypeResume), 4, 0, 1, 0, 0, 0}, ErrPayload},
		{"oversized", big, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, have := Decode(tc.frame)
			if !errors.Is(have, tc.want) {
				t.Fatalf("want %v, have %v", tc.want, have)
			}
		})
	}
}

func TestHeartbeatLatency(t *testing.T) {
	var r latency.Recorder
	for _, d := range []time.Duration{50 * time.Microsecond, 3 * time.Millisecond, 3 * time.Millisecond, time.Minute} {
		r.Observe(d)
	}
	l := r.Snapshot()
	f, err := Decode(AppendHeartbeat(nil, Heartbeat{Requests: 4, Healthy: true, Latency: &l}))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	hb := f.Heartbeat()
	if hb.Requests != 4 || !hb.Healthy || hb.Latency == nil || *hb.Latency != l {
		t.Fatalf("decoded %+v (latency %+v), want requests 4, healthy and latency %+v", hb, hb.Latency, l)
	}
}

// TestHeartbeatOldWorker decodes the heartbeat of a worker built before
// latency was added, spelled out byte by byte as that build sends it.
func TestHeartbeatOldWorker(t *testing.T) {
	frame := []byte{Version, byte(TypeHeartbeat), 29, 0}
	frame = binary.LittleEndian.AppendUint64(frame, 3)     // conns
	frame = binary.LittleEndian.AppendUint64(frame, 1000)  // requests
	frame = binary.LittleEndian.AppendUint64(frame, 8<<20) // rss
	frame = binary.LittleEndian.AppendUint32(frame, 12)    // goroutines
	frame = append(frame, 1)                               // healthy
	f, err := Decode(frame)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := Heartbeat{Conns: 3, Requests: 1000, RSS: 8 << 20, Goroutines: 12, Healthy: true}
	if have := f.Heartbeat(); have != want {
		t.Fatalf("decoded %+v, want %+v", have, want)
	}
}

// withLatency is a heartbeat frame with a latency histogram.
func withLatency() []byte {
	var l latency.Counts
	l.Buckets[3] = 7
	return AppendHeartbeat(nil, Heartbeat{Latency: &l})
}

func TestAppendFrameTooLarge(t *testing.T) {
	if _, err := AppendFrame(nil, TypeMessage, make([]byte, MaxFrame)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("want ErrTooLarge, have %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	ready, _ := AppendFrame(nil, TypeReady, nil)
	msg, _ := AppendFrame(nil, TypeMessage, []byte("x"))
	for _, seed := range [][]byte{
		withLatency(),
		nil, ready, msg,
		AppendHeartbeat(nil, Heartbeat{Conns: 1, Healthy: true}),
		AppendUint32(nil, TypeLoad, 1), AppendUint32(nil, TypeDrain, 5),
		AppendConns(nil, 1), AppendConns(nil, MaxFDs), connsPeers(1), connsPeers(3),
		AppendReady(nil, FeaturePeers), AppendReady(nil, FeaturePeers|FeaturePause),
		{Version, byte(TypePause), 0, 0}, {Version, byte(TypeResume), 0, 0}, {Version, byte(TypePause), 1, 0, 0},
		{Version, 0xff, 0xff, 0xff}, {0xff}, {Version, byte(TypeConns), 1, 0, 0},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := Decode(b)
		if err != nil {
			return
		}
		// A frame that decodes re-encodes to the same bytes, and its
		// accessors do not panic.
		re, err := AppendFrame(nil, fr.Type, fr.Payload)
		if err != nil || !bytes.Equal(re, b) {
			t.Fatalf("re-encode of %x: %x, %v", b, re, err)
		}
		switch fr.Type {
		case TypeHeartbeat:
			_ = fr.Heartbeat()
		case TypeLoad, TypeDrain:
			_ = fr.Uint32()
		case TypeConns:
			_ = fr.Count()
			for p := fr.Peers(); len(p) > 0; p = p[PeerSize:] {
				_ = PeerAddr(p)
			}
		case TypeReady:
			_ = fr.Features()
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	frame := AppendHeartbeat(nil, Heartbeat{Conns: 1, Requests: 2, RSS: 3, Goroutines: 4, Healthy: true})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(frame); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeConns(b *testing.B) {
	buf := make([]byte, 0, 16)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendConns(buf[:0], 4)
	}
}

// connsPeers is a conns frame for n connections from 10.0.0.1, ports 80 up.
func connsPeers(n int) []byte {
	b := AppendConnsPeers(nil, n)
	for i := range n {
		sa := unix.RawSockaddrAny{}
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa))
		in.Family = unix.AF_INET
		in.Addr = [4]byte{10, 0, 0, 1}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&in.Port))[:], uint16(80+i))
		p := PeerOf(&sa)
		b = append(b, p[:PeerSize]...)
	}
	return b
}

// fixLen sets a frame's length field to what follows its header.
func fixLen(b []byte) []byte {
	binary.LittleEndian.PutUint16(b[2:4], uint16(len(b)-HeaderSize))
	return b
}

func badFamily() []byte {
	b := connsPeers(1)
	b[HeaderSize+1] = 5
	return b
}

func TestPeerOf(t *testing.T) {
	v6 := func(scope uint32) *unix.RawSockaddrAny {
		sa := &unix.RawSockaddrAny{}
		in := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		in.Family = unix.AF_INET6
		in.Addr = [16]byte{0: 0x20, 1: 0x01, 2: 0x0d, 3: 0xb8, 15: 1}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&in.Port))[:], 443)
		in.Scope_id = scope
		return sa
	}
	unixSA := &unix.RawSockaddrAny{}
	unixSA.Addr.Family = unix.AF_UNIX
	for _, tc := range []struct {
		name string
		sa   *unix.RawSockaddrAny
		want string // "" when the worker must ask the kernel
	}{
		{"ipv6", v6(0), "[2001:db8::1]:443"},
		{"ipv6 with a scope", v6(2), ""},
		{"another family", unixSA, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := PeerOf(tc.sa)
			a := PeerAddr(p[:])
			if tc.want == "" {
				if a != nil {
					t.Fatalf("want unknown, have %v", a)
				}
				return
			}
			if a == nil || a.String() != tc.want {
				t.Fatalf("want %s, have %v", tc.want, a)
			}
		})
	}
	if PeerAddr(nil) != nil {
		t.Fatal("PeerAddr of no records is not nil")
	}
}

func TestHeartbeatOutcomes(t *testing.T) {
	var l latency.Recorder
	var o latency.OutcomeRecorder
	for _, c := range []int{200, 204, 302, 404, 500, 503} {
		l.Observe(time.Millisecond)
		o.Count(latency.ClassOf(c))
	}
	o.Count(latency.ClassPanic)
	lc, oc := l.Snapshot(), o.Snapshot()
	frame := AppendHeartbeat(nil, Heartbeat{Requests: 7, Healthy: true, Latency: &lc, Outcomes: &oc})
	if len(frame) != MaxHeartbeatFrame {
		t.Fatalf("frame is %d bytes, want MaxHeartbeatFrame %d", len(frame), MaxHeartbeatFrame)
	}
	f, err := Decode(frame)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	hb := f.Heartbeat()
	if hb.Latency == nil || *hb.Latency != lc || hb.Outcomes == nil || *hb.Outcomes != oc {
		t.Fatalf("decoded latency %+v outcomes %+v, want %+v and %+v", hb.Latency, hb.Outcomes, lc, oc)
	}
	if want, have := (latency.Outcomes{2, 1, 1, 2, 1}), *hb.Outcomes; want != have {
		t.Fatalf("outcomes: want %v, have %v", want, have)
	}
	if hb.Outcomes.Errors() != 3 || hb.Outcomes.Total() != 7 {
		t.Fatalf("errors %d of %d, want 3 of 7", hb.Outcomes.Errors(), hb.Outcomes.Total())
	}
	// Outcomes without a histogram are not sent: the frame stays the
	// 29-byte heartbeat an older supervisor reads.
	if f, _ := Decode(AppendHeartbeat(nil, Heartbeat{Outcomes: &oc})); f.Heartbeat().Outcomes != nil || len(f.Payload) != heartbeatSize {
		t.Fatalf("outcomes sent without latency: %d bytes", len(f.Payload))
	}
}

// The names of the features, as the supervisor's log and ctl status show
// them, in order, with unknown bits in hex.
func TestFeaturesString(t *testing.T) {
	for f, want := range map[Features]string{
		0:                              "none",
		Supported:                      "peers,pause,latency,handback,claim,outcomes,listeners",
		FeaturePeers | FeatureOutcomes: "peers,outcomes",
		FeatureClaim | 1<<30:           "claim,0x40000000",
	} {
		if have := f.String(); have != want {
			t.Errorf("%#x: have %q, want %q", uint32(f), have, want)
		}
	}
}
