package supervisor

import (
	"testing"
	"time"
)

func TestRespawnDelay(t *testing.T) {
	want := []time.Duration{0, 0, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}
	for young, w := range want {
		if have := respawnDelay(young); have != w {
			t.Errorf("respawnDelay(%d) = %s, want %s", young, have, w)
		}
	}
	if have := respawnDelay(40); have != 10*time.Second {
		t.Errorf("respawnDelay(40) = %s, want the 10s cap", have)
	}
}
