package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prefork/prefork/internal/ipc"
)

// Claim tells the supervisor that connections whose sticky key is key
// belong to this worker's slot from now on: a session id this worker made
// up, which no hash would map here. Under -sticky cookie:NAME,
// header:NAME or query:NAME the supervisor then routes the client's later
// connections carrying that key to this slot. Call it before the response
// that gives the client the key: the claim travels on the control
// channel, and Claim returns once the supervisor has it in force (or
// ErrClaimTimeout after 2s), so the client's next connection finds it.
//
// The supervisor forgets a slot's claims when the slot gets a worker of a
// new generation (-sticky-forget), and bounds its table (-sticky-table,
// -sticky-table-age). A key is at most MaxClaim bytes. Claim returns
// ErrStandalone without a supervisor, and ErrNoClaims when the supervisor
// does not take claims (an older one).
func Claim(key string) error {
	if key == "" || len(key) > MaxClaim {
		return fmt.Errorf("cluster: claim of %d bytes: must be 1 to %d", len(key), MaxClaim)
	}
	w, err := get()
	if err != nil {
		return err
	}
	if w.ctl == nil {
		return ErrStandalone
	}
	if w.uses&ipc.FeatureClaim == 0 {
		return ErrNoClaims
	}
	frame, err := ipc.AppendFrame(nil, ipc.TypeClaim, []byte(key))
	if err != nil {
		return err
	}
	// The supervisor answers claims in order: the wait joins the queue
	// in the order the claims are sent.
	done := make(chan struct{})
	w.claims.Lock()
	err = w.ctl.SendWait(context.Background(), frame)
	if err == nil {
		w.claims.waiting = append(w.claims.waiting, done)
	}
	w.claims.Unlock()
	if err != nil {
		return fmt.Errorf("cluster: claim: %w", err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(claimTimeout):
		return ErrClaimTimeout
	}
}

// claimTimeout bounds the wait for the supervisor's answer to a claim.
const claimTimeout = 2 * time.Second

// ErrClaimTimeout: the supervisor did not answer a claim in time; it may
// still be in force.
var ErrClaimTimeout = errors.New("cluster: claim not answered in time")

// claimQueue is the claims sent and not answered yet, oldest first.
type claimQueue struct {
	sync.Mutex
	waiting []chan struct{}
}

// answered ends the oldest claim's wait (a claimed frame).
func (q *claimQueue) answered() {
	q.Lock()
	defer q.Unlock()
	if len(q.waiting) > 0 {
		close(q.waiting[0])
		q.waiting = q.waiting[1:]
	}
}

// MaxClaim bounds a key Claim takes.
const MaxClaim = ipc.MaxClaim

// ErrNoClaims: the supervisor does not take claimed keys.
var ErrNoClaims = errors.New("cluster: the supervisor takes no claimed keys")
