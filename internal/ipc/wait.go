package ipc

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// roomPoll bounds one wait for room in SendWait, so that ctx is looked at
// while the peer does not read.
const roomPoll = 50 // ms

// SendWait sends one frame without descriptors as Send does, but when the
// peer's queue is full it waits for room, until ctx is done (then the
// error wraps both ErrWouldBlock and ctx's error). It is for messages that
// must not be lost, where the sender can wait: back-pressure instead of a
// drop. It never holds the lock Send takes while it waits, so frames sent
// with Send (heartbeats) are not held up by it.
func (c *Channel) SendWait(ctx context.Context, frame []byte) error {
	for {
		err := c.Send(frame, nil)
		if !errors.Is(err, ErrWouldBlock) {
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("%w: %w", ErrWouldBlock, cerr)
		}
		// poll(2) rather than the runtime's poller: a deadline on the
		// connection would be shared with every other sender.
		var werr error
		if err := c.rc.Control(func(fd uintptr) {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			if _, err := unix.Poll(pfd, roomPoll); err != nil && !errors.Is(err, unix.EINTR) {
				werr = err
			}
		}); err != nil {
			return mapSendErr(err)
		}
		if werr != nil {
			return fmt.Errorf("ipc: poll: %w", werr)
		}
	}
}
