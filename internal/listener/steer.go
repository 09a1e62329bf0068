package listener

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrSteer is wrapped by Steer's errors about its argument.
var ErrSteer = errors.New("listener: steer")

// Classic BPF ancillary load of a random number (linux/filter.h; not in
// golang.org/x/sys): a load from SKF_AD_OFF+SKF_AD_RANDOM puts
// prandom_u32() in A.
const skfAdRandom uint32 = 0xfffff000 + 56 // SKF_AD_OFF (-0x1000) + SKF_AD_RANDOM, as a uint32

// maxSteer is the most sockets Steer can spread over: the table takes two
// instructions a socket, plus three, within the kernel's BPF_MAXINSNS.
const maxSteer = (unix.BPF_MAXINSNS - 3) / 2

// Steer attaches to the SO_REUSEPORT group of s a classic BPF program that
// gives each new connection to one of the sockets at the group indices to,
// picked at random; the group's other sockets then get none. It replaces
// any program attached before, atomically: a connection is steered by the
// old program or by the new one.
//
// The kernel keeps a group's sockets in an array, in the order they called
// listen(); when a socket leaves (its last descriptor closes, or
// shutdown(SHUT_RD), see Unlisten), the last one moves into its place
// (reuseport_detach_sock). The program runs on every
// SYN that finds no request socket and returns an index into that array;
// an index at or past its end makes the kernel fall back to hashing over
// all the sockets, so the caller must keep its copy of the order exact.
// The pick is random rather than SKF_AD_RXHASH because the packet hash is
// zero on NICs that report none (many virtual ones) and the program's view
// of it cannot compute it; TCP needs no consistent pick: a retransmitted
// SYN and the handshake's ACK find the request socket, not the listener.
// Attaching needs no privilege and any socket of the group will do.
func Steer(s syscall.Conn, to []int) error {
	prog, err := steerProgram(to)
	if err != nil {
		return err
	}
	rc, err := s.SyscallConn()
	if err != nil {
		return fmt.Errorf("listener: steer: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog)
	}); err != nil {
		return fmt.Errorf("listener: steer: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("listener: steer: SO_ATTACH_REUSEPORT_CBPF: %w", serr)
	}
	return nil
}

// steerProgram is the program Steer attaches:
//
//	A = random % len(to)
//	return to[A]
//
// When to is 0..n-1 the program returns A itself; otherwise a table of
// compare-and-return pairs maps A to its index (a linear walk: classic BPF
// has no indexed load from constants, and conditional jumps reach 255
// instructions at most).
func steerProgram(to []int) ([]unix.SockFilter, error) {
	if len(to) == 0 || len(to) > maxSteer {
		return nil, fmt.Errorf("%w: %d sockets; must be from 1 to %d", ErrSteer, len(to), maxSteer)
	}
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: skfAdRandom},
		{Code: unix.BPF_ALU | unix.BPF_MOD | unix.BPF_K, K: uint32(len(to))},
	}
	identity := true
	for i, idx := range to {
		if idx < 0 || idx >= 1<<16 { // a group holds at most 65535 sockets
			return nil, fmt.Errorf("%w: bad group index %d", ErrSteer, idx)
		}
		identity = identity && idx == i
	}
	if identity {
		return append(prog, unix.SockFilter{Code: unix.BPF_RET | unix.BPF_A}), nil
	}
	for i, idx := range to {
		prog = append(prog,
			unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: uint32(i)},
			unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: uint32(idx)})
	}
	// Unreachable (A < len(to)); classic BPF must end in a return.
	return append(prog, unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: uint32(to[0])}), nil
}

// Unlisten takes the listening socket s out of its SO_REUSEPORT group at
// once, whoever else holds a descriptor of it (a worker that has not exited
// yet): shutdown(SHUT_RD) on a listener makes Linux stop listening
// (tcp_disconnect, which unhashes the socket and leaves the group) while
// the descriptors stay open. Connections still in its accept queue are
// reset, so the caller accepts them first. The group's last socket takes
// the place s had (see Steer).
func Unlisten(s syscall.Conn) error {
	rc, err := s.SyscallConn()
	if err != nil {
		return fmt.Errorf("listener: unlisten: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), unix.SHUT_RD) }); err != nil {
		return fmt.Errorf("listener: unlisten: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("listener: unlisten: %w", serr)
	}
	return nil
}
