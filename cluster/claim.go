package cluster

import (
	"context"
	"errors"
	"fmt"

	"github.com/prefork/prefork/internal/ipc"
)

// Claim tells the supervisor that connections whose sticky key is key
// belong to this worker's slot from now on: a session id this worker made
// up, which no hash would map here. Under -sticky cookie:NAME,
// header:NAME or query:NAME the supervisor then routes the client's later
// connections carrying that key to this slot. Call it before the response
// that gives the client the key: the claim travels on the control
// channel, ahead of anything the client can send back.
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
	if err := w.ctl.SendWait(context.Background(), frame); err != nil {
		return fmt.Errorf("cluster: claim: %w", err)
	}
	return nil
}

// MaxClaim bounds a key Claim takes.
const MaxClaim = ipc.MaxClaim

// ErrNoClaims: the supervisor does not take claimed keys.
var ErrNoClaims = errors.New("cluster: the supervisor takes no claimed keys")
