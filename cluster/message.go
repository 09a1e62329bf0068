package cluster

import (
	"context"
	"fmt"

	"github.com/prefork/prefork/internal/ipc"
)

// Send sends an application message of at most MaxMessage bytes to the
// supervisor, which logs it (at debug level) and publishes it as a message
// event; a primary of package cluster/primary delivers it as an
// EventMessage (Node's process.send). Messages arrive in order and none is dropped: while the
// primary has not taken the ones before (its reader of Events is behind),
// Send waits, as a write to a full pipe does. It returns
// ErrMessageTooLarge for a message over MaxMessage, and an error when the
// supervisor is gone.
func Send(msg []byte) error {
	if err := checkSize(msg); err != nil {
		return err
	}
	w, err := get()
	if err != nil {
		return err
	}
	if w.ctl == nil {
		return ErrStandalone
	}
	frame, err := ipc.AppendFrame(nil, ipc.TypeMessage, msg)
	if err != nil {
		return err
	}
	if err := w.ctl.SendWait(context.Background(), frame); err != nil {
		return fmt.Errorf("cluster: send: %w", err)
	}
	return nil
}

// MaxMessage is the largest message Send and primary.Worker.Send carry: the
// payload of one frame on the worker's control channel.
const MaxMessage = ipc.MaxFrame - ipc.HeaderSize

// ErrMessageTooLarge is the error, for errors.Is, of a message over
// MaxMessage bytes.
var ErrMessageTooLarge = fmt.Errorf("cluster: message over %d bytes", MaxMessage)

func checkSize(msg []byte) error {
	if len(msg) > MaxMessage {
		return fmt.Errorf("%w: %d bytes", ErrMessageTooLarge, len(msg))
	}
	return nil
}

// Messages returns application messages from the supervisor: what a
// primary of package cluster/primary sends with Worker.Send (Node's
// process.on('message')). It holds 64; past that, messages are dropped
// (and counted: Dropped) until it is read.
func Messages() <-chan []byte {
	w, err := get()
	if err != nil {
		return nil
	}
	return w.msgs
}

// Dropped is how many messages from the primary this worker lost because
// Messages was not read: the worker's side of primary.Primary.Dropped.
func Dropped() uint64 {
	w, err := get()
	if err != nil {
		return 0
	}
	return w.droppedMsgs.Load()
}
