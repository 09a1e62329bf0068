package nodeipc

import (
	"strings"
	"testing"
)

// TestRecvGivesBackBuffer: a long line grows the reader's buffer; the next
// short one gives it back, so that a burst of long messages does not keep
// the supervisor large for good.
func TestRecvGivesBackBuffer(t *testing.T) {
	local, remote, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	peer, err := NewChannel(remote)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	big := strings.Repeat("x", 3<<20)
	for _, msg := range []string{big, "small"} {
		if err := peer.Send(msg, -1); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []int{len(big) + 2, len(`"small"`)} {
		m, err := local.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if have := len(m.Body); have != want {
			t.Fatalf("line of %d bytes, want %d", have, want)
		}
	}
	if have := cap(local.r.mem); have > 4*readChunk {
		t.Errorf("the reader keeps %d bytes after the long line, want at most %d", have, 4*readChunk)
	}
}
