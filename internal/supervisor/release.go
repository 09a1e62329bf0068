package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/settings"
)

// release is what one generation's workers run: the worker's executable,
// its content kept in a memfd when it is a binary, so that a rollback
// starts the release that was serving even after the file on disk was
// replaced. A script worker (node app.js, a #! script) keeps its command
// line and working directory only: its interpreter reads the code from
// disk, whatever is there now.
type release struct {
	gen  int
	args []string // the command line it was started with (Settings.Command)
	path string   // the executable, resolved as exec does
	dir  string   // the working directory its workers start in
	id   string   // the files' identity on disk when kept: see identity
	mem  *os.File // the executable's content; nil for a script worker
}

// releases are the releases the live generations run, by generation: the
// one serving, and while a reload rolls, the new one. It is the field
// releases of a Supervisor, owned by its owner goroutine.
type releases struct {
	s     *Supervisor
	byGen map[int]*release
	// rejected is the identity of the release a canary rolled back, and
	// why: a reload of it, unchanged on disk, is refused unless forced.
	rejected, rejectedWhy string
	rejectedAt            time.Time
	hasRejected           bool
}

// keep records what is on disk now as generation gen's release. When its
// content cannot be kept (no such file: the spawn will say so), the
// release is its command line, as a script worker's.
func (rs *releases) keep(gen int) *release {
	cmd := rs.s.cfg.Command
	path := rs.pathNow()
	dir, _ := os.Getwd()
	r := &release{gen: gen, args: append([]string(nil), cmd...), path: path, dir: dir, id: identity(cmd, path)}
	if rs.binary(path) {
		var err error
		if r.mem, err = copyToMemfd(path); err != nil {
			rs.s.log.Warn("cannot keep the release's binary: a rollback will run what is on disk", zap.String("path", path), zap.Error(err))
		}
	}
	if rs.byGen == nil {
		rs.byGen = map[int]*release{}
	}
	rs.drop(gen)
	rs.byGen[gen] = r
	return r
}

// binary reports whether the worker at path is kept by content: an ELF
// executable spoken to over the prefork or plain protocol. The systemd
// protocol starts it through an exec shim that must find it by path, and
// node's executable is the interpreter.
func (rs *releases) binary(path string) bool {
	switch rs.s.cfg.WorkerProtocol {
	case settings.ProtocolNode, settings.ProtocolSystemd:
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, 4)
	_, err = io.ReadFull(f, head)
	return err == nil && bytes.Equal(head, []byte("\x7fELF"))
}

// copyToMemfd copies the file at path into a new memfd (copy_file_range:
// the kernel copies, the supervisor's heap does not grow).
func copyToMemfd(path string) (*os.File, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	mem, err := newMemfd("prefork-release")
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(mem, src); err != nil {
		mem.Close()
		return nil, err
	}
	return mem, nil
}

// identity names the files a release is made of as they are on disk:
// the executable and every argument that is a regular file (app.js), by
// device, inode, size and modification time. A file replaced or rewritten
// has another identity; the same bytes copied again do too.
func identity(cmd []string, path string) string {
	var b strings.Builder
	for i, name := range append([]string{path}, cmd[1:]...) {
		st, err := os.Stat(name)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		sys, _ := st.Sys().(*syscall.Stat_t)
		if sys == nil {
			continue
		}
		fmt.Fprintf(&b, "%d:%s:%d:%d:%d:%d;", i, name, sys.Dev, sys.Ino, st.Size(), st.ModTime().UnixNano())
	}
	return b.String()
}

// of is generation gen's release; nil if none was kept.
func (rs *releases) of(gen int) *release { return rs.byGen[gen] }

// drop forgets generation gen's release.
func (rs *releases) drop(gen int) {
	if r := rs.byGen[gen]; r != nil {
		if r.mem != nil {
			r.mem.Close()
		}
		delete(rs.byGen, gen)
	}
}

// prune forgets the releases that neither serve (the supervisor's
// generation) nor run in a live worker or a rollout.
func (rs *releases) prune() {
	used := map[int]bool{rs.s.gen: true}
	for _, p := range rs.s.live {
		used[p.gen] = true
	}
	if r := rs.s.reloader.roll; r != nil {
		used[r.gen] = true
	}
	for gen := range rs.byGen {
		if !used[gen] {
			rs.drop(gen)
		}
	}
}

// exec is where r runs from: the kept content when the file on disk is
// no longer the one kept.
func (r *release) exec() (path string, dir string) {
	if r.mem == nil || identity(r.args, r.path) == r.id {
		return r.path, r.dir
	}
	return fdPath(int(r.mem.Fd())), r.dir
}

// errRejected: a reload of the release a canary rolled back.
var errRejected = errors.New("reload: refused")

// refuse reports why a reload of what is on disk now is refused: it is
// the release a canary rolled back, unchanged. force overrides.
func (rs *releases) refuse(force bool) error {
	if !rs.hasRejected || force {
		return nil
	}
	if identity(rs.s.cfg.Command, rs.pathNow()) != rs.rejected {
		return nil
	}
	return fmt.Errorf("%w: nothing new on disk since the canary of %s was rolled back at %s (%s); replace the release, or reload with -force",
		errRejected, rs.s.cfg.Command[0], rs.rejectedAt.UTC().Format(time.TimeOnly), rs.rejectedWhy)
}

// reject records r as the release a canary rolled back, and why.
func (rs *releases) reject(r *release, why string) {
	if r == nil {
		return
	}
	rs.rejected, rs.rejectedWhy, rs.rejectedAt, rs.hasRejected = r.id, why, rs.s.sys.Now(), true
	rs.s.log.Info("release rejected: a reload of it unchanged is refused", zap.String("path", r.path), zap.String("why", why))
}

func (rs *releases) pathNow() string {
	path, err := exec.LookPath(rs.s.cfg.Command[0])
	if err != nil {
		return rs.s.cfg.Command[0]
	}
	abs, _ := filepath.Abs(path)
	return abs
}
