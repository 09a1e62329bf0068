// Package sdnotify tells systemd about the supervisor's state with the
// sd_notify(3) datagram protocol: READY=1 once the first generation of
// workers serves, RELOADING=1 while a rolling reload runs, STOPPING=1 while
// workers drain, free-form STATUS= lines, and WATCHDOG=1 keep-alives.
//
// It depends on the standard library and golang.org/x/sys only (and on
// internal/linuxonly, which is empty on Linux). A Notifier
// built without $NOTIFY_SOCKET (not started by systemd, or started with
// Type=simple) turns every call into a no-op that returns nil, so callers
// never branch on how they were started.
//
// The environment is read once, by New. Call Unsetenv right after New and
// before the first worker is spawned: with NotifyAccess=main systemd ignores
// (and logs) datagrams from any other pid, and a worker that inherited
// WATCHDOG_USEC would wrongly believe it is being watched.
//
//	n := sdnotify.New()
//	sdnotify.Unsetenv()
//	// every n.WatchdogInterval(), from the loop whose liveness it vouches for:
//	n.Notify("WATCHDOG=1")
//	// ... spawn workers, wait until they are ready ...
//	n.Ready(fmt.Sprintf("%d workers ready", len(workers)))
//	// on SIGHUP:
//	n.Reloading() // then Ready(...) again when the new generation serves
//	// on SIGTERM:
//	n.Stopping()
//
// Linux only.
package sdnotify

import _ "github.com/prefork/prefork/internal/linuxonly" // fails to build on any other GOOS
