// Package proctest runs the real prefork binaries for the test suites that
// cross a process boundary: the end-to-end tests (internal/e2e), the fault
// suite (internal/chaos) and the dashboard's browser tests (dashboard/, a
// module of its own that imports this package through its replace
// directive). It is imported only by tests.
//
// What it gives them:
//
//   - Build: a main package of the module built once, cached by a hash of
//     the sources, the go version and the flags, so that every suite and
//     every run of `make test` on the same sources links it once;
//   - FreeAddr: a 127.0.0.1 address with a free port;
//   - Proc: a process started with its output collected (Output), its pid,
//     Signal, Running, WaitExit with a deadline, ExitCode, Children and
//     FDs; it is killed, with every child it left, when the test ends;
//   - Output: the collected output, with WaitJSON for a log line and Tail;
//   - Follow: a supervisor's event stream recorded (Events), with Wait for
//     an event with a deadline;
//   - Poll, Eventually and WaitGone: polling with a deadline, never a sleep
//     used as synchronisation;
//   - Run: TestMain's m.Run that fails the run when a test left a child.
//
// A suite builds its binaries in TestMain and starts a supervisor per test:
//
//	var supervisorBin string
//
//	func TestMain(m *testing.M) {
//		supervisorBin = proctest.MustBuild("./cmd/supervisor", "-race")
//		proctest.MustBuild("./cmd/worker", "-race") // its default worker, beside it
//		os.Exit(proctest.Run(m))
//	}
//
//	func TestStop(t *testing.T) {
//		addr, ctl := proctest.FreeAddr(t), filepath.Join(t.TempDir(), "ctl.sock")
//		p := proctest.Start(t, exec.Command(supervisorBin, "-listen", addr, "-control", ctl, "-log-format", "json"))
//		events := proctest.Follow(ctl, p.Done())
//		defer events.Stop()
//		if _, ok := events.Wait(10*time.Second, func(e proctest.Event) bool { return e.Kind == control.EventRunning }); !ok {
//			t.Fatalf("not running; events:\n%s", events)
//		}
//		p.Signal(syscall.SIGTERM)
//		if code := p.WaitExit(10 * time.Second); code != 0 {
//			t.Fatalf("exit status %d", code)
//		}
//	}
//
// Binaries are cached in $TMPDIR/prefork-proctest-UID (not the user's cache
// directory, so that workers run as another user reach them); an entry
// unused for an hour is removed by the next Build.
//
// Linux only, as the supervisor is.
package proctest
