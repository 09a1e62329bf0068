package supervisor

import (
	"fmt"
	"slices"
	"strings"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/ipc"
)

// A descriptor the state lists can be missing in the new image: something
// between the two images (a wrapper script, a hardening tool) closed it.
// The restore then does not fail as a whole, which would roll back with
// the same state and fail again: every descriptor is checked before any is
// used, and what is missing is rebuilt or dropped, with a log line each:
//   - a listening socket is bound again (rr; in shared mode the workers
//     hold it, so the port stays taken and the restore fails);
//   - a reuseport socket gives up its slot's worker, which is replaced
//     with a fresh socket; with none left the group is bound again;
//   - a worker's channel gives up that worker: it is killed and replaced;
//   - a pending connection is dropped (its client sees a reset);
//   - the control socket, the metrics and admin listeners are bound again;
//   - without the previous binary a failed restore cannot roll back, and
//     without the ctl connection nobody is answered.
// The state, repaired, lists only descriptors that exist, so that a
// rollback carries a state the previous image can restore.

// closeOnExec sets close-on-exec on every descriptor st lists that is open,
// and returns the ones that are not open, or not what their role says: the
// number of one closed may have been taken meanwhile (by the Go runtime's
// epoll descriptor, say). One that is open but does not fit is made
// close-on-exec too: execve left it without, and whatever it is, no worker
// started later may inherit it (a descriptor the runtime opened already
// has the flag).
func (st *upgradeState) closeOnExec() []fdRole {
	var missing []fdRole
	for _, f := range st.FDs {
		setCloexec(f.FD, true) // EBADF for one not open: nothing to do
		if !fits(f) {
			missing = append(missing, f)
		}
	}
	return missing
}

// fits reports whether f's descriptor is open and of the kind its role
// needs.
func fits(f fdRole) bool {
	if f.Role == roleBinary {
		var stat unix.Stat_t
		return unix.Fstat(f.FD, &stat) == nil && stat.Mode&unix.S_IFMT == unix.S_IFREG
	}
	typ, err := unix.GetsockoptInt(f.FD, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return false
	}
	switch f.Role {
	case roleControl, roleHandoff, roleKeep:
		return typ == unix.SOCK_SEQPACKET
	case rolePending, roleReply:
		return typ == unix.SOCK_STREAM
	}
	listening, err := unix.GetsockoptInt(f.FD, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	return err == nil && listening == 1
}

// repair takes the missing descriptors out of st as described above, and
// returns what was lost, one line each.
func (st *upgradeState) repair(missing []fdRole, log *zap.Logger) []string {
	if len(missing) == 0 {
		return nil
	}
	gone := map[int]bool{}
	var lost []string
	for _, f := range missing {
		gone[f.FD] = true
		what := fmt.Sprintf("%s descriptor %d", f.Role, f.FD)
		if f.Slot != 0 {
			what = fmt.Sprintf("slot %d's %s", f.Slot, what)
		}
		lost = append(lost, what)
		log.Warn("a descriptor the upgrade kept is missing; rebuilding without it", zap.String("role", f.Role),
			zap.Int("fd", f.FD), zap.Int("slot", f.Slot))
	}
	drop := func(fd *int) {
		if *fd >= 0 && gone[*fd] {
			*fd = -1
		}
	}
	for _, p := range []*int{&st.Listener, &st.Control, &st.Metrics, &st.Admin, &st.Reply, &st.Binary} {
		drop(p)
	}
	portLost := map[int]bool{}
	for _, f := range missing {
		if f.Role == rolePort {
			portLost[f.Slot] = true
			st.portsLost++
		}
	}
	var ports, portSlots []int
	for i, fd := range st.Ports {
		if !gone[fd] {
			ports, portSlots = append(ports, fd), append(portSlots, st.PortSlots[i])
		}
	}
	st.Ports, st.PortSlots = ports, portSlots
	st.Pending = slices.DeleteFunc(st.Pending, func(p pendingState) bool { return gone[p.FD] })
	for i := range st.Slots {
		w := &st.Slots[i].Worker
		var why []string
		for _, fd := range []int{w.Ctl, w.Handoff, w.Keep} {
			if fd >= 0 && gone[fd] {
				why = append(why, fmt.Sprintf("descriptor %d", fd))
			}
		}
		if portLost[st.Slots[i].ID] {
			why = append(why, "its reuseport socket")
		}
		if len(why) == 0 {
			continue
		}
		// Its other channels are of no use without the lost one.
		for _, fd := range []*int{&w.Ctl, &w.Handoff, &w.Keep} {
			if *fd >= 0 && !gone[*fd] {
				unix.Close(*fd)
				gone[*fd] = true
			}
			*fd = -1
		}
		w.Lost = "lost " + strings.Join(why, ", ")
	}
	st.FDs = slices.DeleteFunc(st.FDs, func(f fdRole) bool { return gone[f.FD] })
	return lost
}

// giveUp kills the worker w, kept by the upgrade without a channel to it,
// and has sl respawned.
func (u *upgrader) giveUp(sl *slot, w workerState) {
	u.s.log.Warn("replacing a worker the upgrade could not keep", zap.Int("slot", sl.id), zap.Int("pid", w.PID), zap.String("why", w.Lost))
	// Waited for through its own waiter, which Adopt starts; a pid that
	// is no longer our child (it exited meanwhile) is not signalled.
	pr, err := u.s.sys.Adopt(w.PID, func(exitStatus) { u.s.owned.Forget(w.PID) })
	if err == nil {
		pr.Signal(syscall.SIGKILL)
	} else {
		u.s.owned.Forget(w.PID)
	}
	u.s.enqueue(evRespawn{sl: sl, cause: control.CauseCrash})
}

// restoreMode rebuilds cfg.Mode over the sockets an upgrade kept, binding
// again those that are missing.
func restoreMode(cfg Config, log *zap.Logger, st *upgradeState, kept *keptFDs) (mode, error) {
	switch {
	case cfg.Mode == ipc.ModeReusePort && (kept.has(rolePort) || kept.has(roleListener)):
		return restoreReusePort(cfg, log, st, kept)
	case cfg.Mode == ipc.ModeReusePort:
		log.Warn("no reuseport socket survived the upgrade; binding the group again")
		return newReusePort(cfg, log)
	case kept.has(roleListener) && cfg.Mode == ipc.ModeShared:
		return restoreShared(cfg, st, kept)
	case kept.has(roleListener):
		return restoreRR(cfg, log, st, kept)
	}
	lns, err := bindListeners(cfg)
	if err != nil {
		return nil, fmt.Errorf("upgrade: the listening sockets were lost and cannot be bound again: %w", err)
	}
	log.Warn("the listening sockets were lost across the upgrade; bound again", zap.String("addr", cfg.Listen.String()))
	if cfg.Mode == ipc.ModeShared {
		return &shared{lns: lns}, nil
	}
	m, err := newRR(cfg, log, lns)
	if err == nil {
		m.h.Requeue(pendingOf(st.Pending))
	}
	return m, err
}
