package supervisor

import (
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/settings"
)

// reusePortListeners is a reuseport mode of n slots over two TCP
// listeners and a Unix one, in that order.
func reusePortListeners(t *testing.T, n int) (*reusePort, Config) {
	t.Helper()
	cfg := testConfig()
	path := filepath.Join(t.TempDir(), "app.sock")
	cfg.Listen, cfg.Workers, cfg.Mode = settings.Listeners{"127.0.0.1:0", "api=127.0.0.1:0", "web=unix:" + path}, n, ipc.ModeReusePort
	m, err := newReusePort(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return m, cfg
}

// Several listeners: each TCP one is a group with a socket per slot, the
// Unix one is shared, and a worker gets a socket of each in listener
// order: its slot's of a group, the one of the shared listener.
func TestReusePortSeveralListeners(t *testing.T) {
	m, _ := reusePortListeners(t, 2)
	path := strings.TrimPrefix(m.lns[2].addr, "unix:")
	defer func() {
		m.stopAccepting()
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("socket file after stop: %v", err)
		}
	}()
	if m.groups[0] == nil || m.groups[1] == nil || m.groups[2] != nil {
		t.Fatalf("groups %v: want the TCP listeners' and no Unix one", m.groups)
	}
	lns := m.listeners()
	if len(lns) != 3 || lns[1].name != "api" || lns[2].name != "web" || lns[2].addr != "unix:"+path {
		t.Fatalf("listeners %+v", lns)
	}
	inodes := map[int][]uint64{}
	for _, id := range []int{1, 2, 3} { // 3: a slot added by a scale-up
		h, err := m.prepare(&slot{id: id}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(h.files) != 3 {
			t.Fatalf("slot %d: %d files, want one per listener", id, len(h.files))
		}
		for i, f := range h.files {
			a, err := localAddr(f)
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.TrimPrefix(lns[i].addr, "unix:"); a.String() != want {
				t.Errorf("slot %d's listener %d on %s, want %s", id, i, a, want)
			}
			var st unix.Stat_t
			unix.Fstat(int(f.Fd()), &st)
			inodes[i] = append(inodes[i], st.Ino)
		}
		h.close()
	}
	for i, ino := range inodes {
		distinct := ino[0] != ino[1] && ino[1] != ino[2] && ino[0] != ino[2]
		if shared := i == 2; distinct == shared {
			t.Errorf("listener %d: socket inodes %v; want one per slot for a group, one for all if shared", i, ino)
		}
	}
	// The new slot's socket joined each group: a connection to either
	// port is spread over three sockets (checked by their count).
	for _, g := range m.groups[:2] {
		if len(g.order) != 3 || g.socks[3] == nil {
			t.Errorf("group of listener %d: %d sockets, want 3 with slot 3's", g.index, len(g.order))
		}
	}
}

// An upgrade keeps every group's sockets by listener name and slot, and the
// shared Unix listener's one with its file: the restored mode has the same
// listeners, groups in the same order, and removes the file on a clean
// stop.
func TestReusePortSaveRestoreListeners(t *testing.T) {
	m, cfg := reusePortListeners(t, 2)
	st := &upgradeState{Mode: ipc.ModeReusePort, Listener: -1}
	if _, err := m.save(st); err != nil {
		t.Fatal(err)
	}
	if len(st.Ports) != 4 || len(st.Listeners) != 3 || st.Listeners[2].Path == "" {
		t.Fatalf("state: ports %v, listeners %+v", st.Ports, st.Listeners)
	}
	// The restoring image's descriptors: duplicates, so that m keeps its own.
	for i := range st.FDs {
		dup, err := unix.FcntlInt(uintptr(st.FDs[i].FD), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			t.Fatal(err)
		}
		st.FDs[i].FD = dup
	}
	if err := checkKeptListeners(st); err != nil {
		t.Fatal(err)
	}
	kept := keptOf(st)
	r, err := restoreReusePort(cfg, zap.NewNop(), st, kept)
	if err != nil {
		t.Fatal(err)
	}
	if len(kept.fds) != 0 {
		t.Errorf("descriptors left untaken: %+v", kept.fds)
	}
	want, have := m.listeners(), r.listeners()
	for i := range want {
		if want[i].name != have[i].name || want[i].addr != have[i].addr || (m.groups[i] == nil) != (r.groups[i] == nil) {
			t.Errorf("listener %d restored as %s %s (group %v), want %s %s (group %v)", i,
				have[i].name, have[i].addr, r.groups[i] != nil, want[i].name, want[i].addr, m.groups[i] != nil)
		}
	}
	for i, g := range r.groups {
		if g == nil {
			continue
		}
		for j, ps := range g.order {
			if ps.id != m.groups[i].order[j].id || g.socks[ps.id] != ps {
				t.Errorf("listener %d: group position %d is slot %d, want %d", i, j, ps.id, m.groups[i].order[j].id)
			}
		}
	}
	m.close(false) // the old image's copies, as execve closes them
	m.h.Flush()
	path := strings.TrimPrefix(want[2].addr, "unix:")
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("the restored Unix listener: %v", err)
	}
	c.Close()
	r.stopAccepting()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket file after the restored image's stop: %v", err)
	}
}

// A binary whose restore leaves a listener out, a group or a shared one,
// is refused by the check the rehearsal runs, naming it.
func TestReusePortKeptListenersChecked(t *testing.T) {
	m, _ := reusePortListeners(t, 2)
	defer m.stopAccepting()
	st := &upgradeState{Mode: ipc.ModeReusePort, Listener: -1}
	if _, err := m.save(st); err != nil {
		t.Fatal(err)
	}
	for _, drop := range []string{"api", "web"} {
		lost := *st
		lost.Listeners = nil
		for _, ls := range st.Listeners {
			if ls.Name != drop {
				lost.Listeners = append(lost.Listeners, ls)
			}
		}
		if err := checkKeptListeners(&lost); err == nil || !strings.Contains(err.Error(), `would drop listener "`+drop+`"`) {
			t.Errorf("restore without %s: %v", drop, err)
		}
	}
}

// What the supervisor accepts on a vacant slot's sockets is counted by
// listener, across its accept loops' stops; a shared listener, where it
// never accepts, shows 0.
func TestReusePortAcceptedByListener(t *testing.T) {
	m, _ := reusePortListeners(t, 1) // slot 1's sockets get every connection
	defer m.stopAccepting()
	defer m.h.CloseQueue() // nothing is routed: what is accepted waits
	lns := m.listeners()
	dial := func(addr string, pending int) {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		waitUntil(t, "the connection accepted", func() bool { return m.h.Pending() == pending })
	}
	m.slot(&slot{id: 1}, slotVacant)
	dial(lns[1].addr, 1)
	dial(lns[1].addr, 2)
	m.slot(&slot{id: 1}, slotFilled) // the loops stop: their counts stay
	m.slot(&slot{id: 1}, slotVacant)
	dial(lns[0].addr, 3)
	want := map[string]uint64{lns[0].name: 1, "api": 2, "web": 0}
	if have := m.accepted(); !maps.Equal(want, have) {
		t.Errorf("accepted %v, want %v", have, want)
	}
}

// A reuseport state as the image before several listeners wrote it (its
// one group kept as mainListener, no Listeners nor Mode) restores as the
// group of this image's first listener, under its name.
func TestReusePortRestoreOneGroupState(t *testing.T) {
	ln1, fd1 := dupListener(t)
	_, fd2 := dupListener(t)
	st := &upgradeState{Format: 1, Listener: -1, Ports: []int{fd1, fd2}, PortSlots: []int{1, 2}, Slots: []slotState{{ID: 1}, {ID: 2}},
		FDs: []fdRole{{FD: fd1, Role: rolePort, Slot: 1, Name: mainListener}, {FD: fd2, Role: rolePort, Slot: 2, Name: mainListener}}}
	cfg := testConfig()
	cfg.Mode, cfg.Listen = ipc.ModeReusePort, settings.Listeners{"web=" + ln1.Addr().String()}
	if err := restoreCheck(cfg, st); err != nil {
		t.Fatal(err)
	}
	kept := keptOf(st)
	m, err := restoreReusePort(cfg, zap.NewNop(), st, kept)
	if err != nil {
		t.Fatal(err)
	}
	defer m.stopAccepting()
	lns := m.listeners()
	if len(lns) != 1 || lns[0].name != "web" || lns[0].addr != ln1.Addr().String() || len(kept.fds) != 0 {
		t.Fatalf("restored %+v, left %+v", lns, kept.fds)
	}
	if g := m.groups[0]; g == nil || len(g.order) != 2 || g.order[0].id != 1 || g.order[1].id != 2 {
		t.Errorf("group %+v, want slots 1 and 2 in order", g)
	}
}
