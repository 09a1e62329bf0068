package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/prefork/prefork/internal/ipc"
)

// Disconnect makes this worker leave on its own, as Node's
// cluster.worker.disconnect() does in a worker: it tells the primary,
// which takes it out of rotation and counts its exit as intended
// (Worker.ExitedAfterDisconnect, no crash budget), then drains as if the
// primary had asked: [Drain] is closed, so [Serve] and primary.ListenAndServe
// finish the connections they have and return. The primary replaces it by
// its respawn policy. Standalone it returns ErrStandalone.
func Disconnect() error {
	w, err := get()
	if err != nil {
		return err
	}
	if w.ctl == nil {
		return ErrStandalone
	}
	leave, _ := ipc.AppendFrame(nil, ipc.TypeLeave, nil) // an empty payload fits
	if err := w.ctl.SendWait(context.Background(), leave); err != nil {
		return fmt.Errorf("cluster: disconnect: %w", err)
	}
	// The drain the primary would send, with the grace it gave.
	f, err := ipc.Decode(ipc.AppendUint32(nil, ipc.TypeDrain, uint32(DrainTimeout()/time.Millisecond)))
	if err != nil {
		return fmt.Errorf("cluster: disconnect: %w", err)
	}
	w.frames <- control{f: f}
	return nil
}
