package supervisor

import (
	"encoding/json"
	"fmt"
	"net"
	"testing"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/fdtest"
	"github.com/prefork/prefork/internal/handoff"
	"github.com/prefork/prefork/internal/ipc"
)

// dupListener listens on loopback and returns the listener and a
// duplicate of its descriptor, as an upgrade's next image holds it.
func dupListener(t *testing.T) (net.Listener, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	fd, err := fdOf(ln.(*net.TCPListener))
	if err != nil {
		t.Fatal(err)
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		t.Fatal(err)
	}
	return ln, dup
}

func isOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

// Each part takes its own listener by role and name; a record without a
// name (written before names were kept) serves any; what nobody takes is
// closed.
func TestKeptByRoleAndName(t *testing.T) {
	mainLn, mainFD := dupListener(t)
	metricsLn, metricsFD := dupListener(t)
	_, adminFD := dupListener(t)
	before := fdtest.Open(t)
	st := &upgradeState{FDs: []fdRole{
		{FD: mainFD, Role: roleListener}, // no name: an older state
		{FD: metricsFD, Role: roleMetrics, Name: "127.0.0.1:9100"},
		{FD: adminFD, Role: roleAdmin, Name: "127.0.0.1:9200"},
		{FD: 1, Role: roleReply}, // not a listener: not the registry's
	}}
	k := keptOf(st)
	if ln, err := k.listener(roleMetrics, "127.0.0.1:9999"); ln != nil || err != nil {
		t.Fatalf("metrics under another name: %v, %v; want none", ln, err)
	}
	ln, err := k.listener(roleMetrics, "127.0.0.1:9100")
	if err != nil || ln == nil {
		t.Fatalf("metrics: %v, %v", ln, err)
	}
	if want, have := metricsLn.Addr().String(), ln.Addr().String(); want != have {
		t.Errorf("metrics listener on %s, want %s", have, want)
	}
	sock, _, err := k.socket(roleListener, mainListener)
	if err != nil {
		t.Fatal(err)
	}
	if want, have := mainLn.Addr().String(), sock.Addr().String(); want != have {
		t.Errorf("main listener on %s, want %s", have, want)
	}
	ln.Close()
	sock.Close()
	k.close()
	// The three kept numbers are closed: taken and closed by their user,
	// or, nobody's, by the registry.
	if want, have := before-3, fdtest.Open(t); want != have {
		t.Errorf("%d descriptors open, want %d", have, want)
	}
	if !isOpen(1) {
		t.Error("the registry closed a descriptor that is not a listener")
	}
}

// A state as the previous release (format 1, before listeners had names)
// writes it restores each mode's sockets: an upgrade from that release
// works.
func TestRestoreModeFromPreviousRelease(t *testing.T) {
	for _, mode := range []string{ipc.ModeRR, ipc.ModeShared, ipc.ModeReusePort} {
		t.Run(mode, func(t *testing.T) {
			ln1, fd1 := dupListener(t)
			_, fd2 := dupListener(t)
			// As b74e5cd's saveState wrote it.
			raw := fmt.Sprintf(`{"format":1,"listener":%d,"activated":false,"ports":null,"port_slots":null,"pending":null,
				"control":-1,"metrics":-1,"admin":-1,"reply":-1,"binary":-1,"fds":[{"fd":%d,"role":"listener"}]}`, fd1, fd1)
			if mode == ipc.ModeReusePort {
				raw = fmt.Sprintf(`{"format":1,"listener":-1,"ports":[%d,%d],"port_slots":[1,2],"pending":null,
					"control":-1,"metrics":-1,"admin":-1,"reply":-1,"binary":-1,
					"fds":[{"fd":%d,"role":"reuseport","slot":1},{"fd":%d,"role":"reuseport","slot":2}]}`, fd1, fd2, fd1, fd2)
			} else {
				unix.Close(fd2)
			}
			var st upgradeState
			if err := json.Unmarshal([]byte(raw), &st); err != nil {
				t.Fatal(err)
			}
			cfg := testConfig()
			cfg.Mode = mode
			kept := keptOf(&st)
			m, err := restoreMode(cfg, zap.NewNop(), &st, kept)
			if err != nil {
				t.Fatal(err)
			}
			defer m.stopAccepting()
			if want, have := ln1.Addr().String(), addrOf(m); want != have {
				t.Errorf("restored on %s, want %s", have, want)
			}
			if len(kept.fds) != 0 {
				t.Errorf("descriptors left untaken: %+v", kept.fds)
			}
			if rp, ok := m.(*reusePort); ok {
				if g := rp.groups[0]; len(rp.groups) != 1 || len(g.order) != 2 || g.order[0].id != 1 || g.order[1].id != 2 {
					t.Errorf("reuseport groups %v, want one of slots 1 and 2 in order", rp.groups)
				}
			}
		})
	}
}

// A reuseport worker's control channel, lent to its handoff transport,
// is kept once, as the control channel: the upgrade asks the transport
// what it owns instead of comparing channels, and the restored target
// borrows the restored control channel again.
func TestUpgradeLentControlChannel(t *testing.T) {
	sl := &slot{id: 1}
	ctl, ctlRemote, err := ipc.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer ctlRemote.Close()
	defer ctl.Close()
	tg, err := framesTarget(sl, ctl, ctlRemote, true, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	sl.cur = &process{slot: sl, ctl: ctl, t: tg}
	st := &upgradeState{}
	ss, err := saveSlot(st, sl)
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]int{}
	for _, f := range st.FDs {
		roles[f.Role]++
	}
	if ss.Worker.Handoff != -1 || roles[roleHandoff] != 0 || roles[roleControl] != 1 || roles[roleKeep] != 1 {
		t.Fatalf("kept %v, handoff %d; want the control channel and the duplicate only", roles, ss.Worker.Handoff)
	}
	keep, err := unix.FcntlInt(uintptr(ss.Worker.Keep), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		t.Fatal(err)
	}
	w := ss.Worker
	w.Keep = keep
	got, err := restoreTarget(sl, ctl, w, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if own, _ := handoff.FramesOf(got).Channels(); own != nil {
		t.Error("the restored target owns the control channel it was lent")
	}
	got.Close()
	// Closing the target left the control channel open: it is its link's.
	if err := ctl.Send(ipc.AppendUint32(nil, ipc.TypeDrain, 1), nil); err != nil {
		t.Errorf("control channel after the target closed: %v", err)
	}
}
