//go:build !linux

package reaper

import (
	"context"
	"errors"
	"fmt"
)

// SetSubreaper is Linux-only.
func SetSubreaper() error {
	return fmt.Errorf("reaper: set child subreaper: %w", errors.ErrUnsupported)
}

// Reap finds nothing outside Linux: there is no /proc to find zombies in
// without waiting for the caller's own children.
func Reap(isOwn func(pid int) bool) []int { return nil }

// Run waits for ctx to be done.
func Run(ctx context.Context, isOwn func(pid int) bool, onReap func(pid int)) { <-ctx.Done() }
