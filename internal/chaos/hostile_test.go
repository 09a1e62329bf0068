package chaos

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/proctest"
)

// TestHostileWorker runs testdata/hostile_worker.py as every worker: it
// serves, then sends garbage, unknown types, lying lengths, descriptors,
// ready twice and a message flood; one of them goes past the protocol-error
// limit. The supervisor stays up, answers status within a second, keeps N
// workers (the one over the limit is replaced, not lost), keeps serving,
// and keeps none of the descriptors sent to it.
func TestHostileWorker(t *testing.T) {
	eachMode(t, hostile)
}

// replacing is the supervisor's log message for a worker over the limit.
const replacing = "replacing a worker that keeps breaking the protocol"

func hostile(t *testing.T, mode string) {
	const workers = 2
	dir := t.TempDir()
	goFile, onceFile := filepath.Join(dir, "go"), filepath.Join(dir, "once")
	s := start(t, opts{mode: mode, workers: workers,
		command: []string{"python3", hostileScript, "--go", goFile, "--once", onceFile}})
	if _, err := get(s.addr, "/pid", 2*time.Second); err != nil {
		t.Fatalf("the Python worker does not serve before the attack: %v", err)
	}
	fd0 := s.FDs()
	l := startLoad(s.addr, loadSpec{fresh: 4, every: 20 * time.Millisecond, d: 60 * time.Second})
	defer l.finish()
	if err := os.WriteFile(goFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	// Until every worker has attacked and the one over the limit has been
	// replaced, status must answer within a second each time it is asked.
	watch := watchStatus(s)
	// The one over the limit may be killed before it logs that it is done;
	// its replacement attacks below the limit like the others. The load
	// runs a while longer, across the replacement.
	attacked := time.Now()
	done := func() bool {
		return s.count(`"over_limit":false`) >= workers && s.count(`"cause":"protocol"`) >= 1 &&
			time.Since(attacked) >= pick(2*time.Second, 10*time.Second)
	}
	if !proctest.Poll(pick(20*time.Second, 40*time.Second), func() bool { return done() || !s.Running() }) {
		t.Errorf("attack not over within the deadline: %d workers done, %d replaced for protocol errors",
			s.count(`"over_limit":false`), s.count(replacing))
	}
	settle := s.waitSettled(workers, 15*time.Second)
	slow, maxStatus := watch()
	rs := l.finish()
	sum := summarize(rs)
	st, _, err := s.status(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fd1 := s.FDs()
	replaced := s.count(replacing)
	_, stray := attribute(rs, s.times(replacing))
	figure(t, "hostile", mode, "protocol_errors_logged", s.count("worker broke the worker protocol"),
		"replaced", replaced, "unexpected_exits", s.count("worker exited unexpectedly"),
		"restarts", restarts(st), "status_max", maxStatus, "status_over_1s", slow,
		"requests", sum.total, "failed", sum.failed, "failed_in_flight_at_replacement", sum.failed-stray, "fds_before", fd0, "fds_after", fd1,
		"fds_sent", 8*3+100, "settle", settle)
	if replaced != 1 {
		t.Errorf("%d workers replaced for protocol errors, want exactly 1 (the one over the limit)", replaced)
	}
	if n := s.count("worker exited unexpectedly"); n > 0 {
		t.Errorf("%d workers exited unexpectedly: a worker replaced for the protocol is replaced, not lost", n)
	}
	if slow > 0 {
		t.Errorf("status took more than 1s %d times (max %s)", slow, maxStatus)
	}
	// The worker over the limit is killed (SIGKILL, as for a hang): only
	// requests in flight in it at that moment may fail.
	if stray > 0 {
		t.Errorf("%d of %d requests failed that were not in flight at the replacement (errors: %v; %s)", stray, sum.total, sum.errs, sum.failWindow())
	}
	if fd1 > fd0+2 {
		t.Errorf("supervisor descriptors grew from %d to %d after %d descriptors were sent to it", fd0, fd1, 8*3+100)
	}
	if n := s.count(`"msg":"abuse interrupted"`); n > 0 {
		t.Errorf("%d workers could not finish the attack: %s", n, grepLines(s.Out.String(), "abuse interrupted"))
	}
	s.stop()
}

// watchStatus asks for the status every 100ms until the returned function
// is called, which reports how many answers took over a second (or failed)
// and the slowest.
func watchStatus(s *sup) func() (slow int, worst time.Duration) {
	stop, done := make(chan struct{}), make(chan struct{})
	var slow int
	var worst time.Duration
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 6000; i++ { // ten minutes at most
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			_, took, err := s.status(2 * time.Second)
			if err != nil || took > time.Second {
				slow++
			}
			worst = max(worst, took)
		}
	}()
	return func() (int, time.Duration) {
		close(stop)
		<-done
		return slow, worst
	}
}

// grepLines returns the lines of text that contain sub.
func grepLines(text, sub string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
