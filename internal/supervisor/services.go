package supervisor

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/admin"
	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/httpserve"
	"github.com/prefork/prefork/internal/metrics"
	"github.com/prefork/prefork/internal/reaper"
)

// services are what the supervisor serves besides the workers: the
// control socket, metrics, admin, the reaper and systemd's watchdog. They
// are the field svc of a Supervisor, owned by its owner goroutine.
type services struct {
	s *Supervisor

	ctlsvc     *controlService // the control socket, whose listener an upgrade keeps
	metricsSrv *metrics.Server // the metrics listener, which an upgrade keeps too
	adminSrv   *admin.Server   // the admin listener (-admin), kept by an upgrade too
	sdDropped  uint64          // notify.Dropped at the last tick
	pinged     time.Time       // last WATCHDOG=1
}

// startServices starts what runs beside the workers: the control socket,
// the metrics listener and the reaper of orphaned grandchildren. The
// returned function stops them.
func (sv *services) startServices(bus *control.Broadcaster) (func(), error) {
	ctx, cancel := context.WithCancel(context.Background())
	var stops []func()
	stop := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		cancel()
	}
	if path := sv.controlPath(); path != "" {
		cs := &controlService{s: sv.s, path: path, bus: bus, log: sv.s.log.Named("control"), inherit: sv.s.up.kept}
		sv.ctlsvc = cs
		if err := cs.listen(); err != nil {
			stop()
			return nil, err
		}
		done := make(chan struct{})
		go func() { defer close(done); cs.run(ctx) }()
		stops = append(stops, func() { cancel(); cs.close(); <-done })
		sv.s.log.Info("control socket", zap.String("path", path))
	}
	if sv.s.cfg.Metrics != "" || sv.s.cfg.Admin != "" {
		closeMetrics, err := sv.serveMetrics(bus)
		if err != nil {
			stop()
			return nil, err
		}
		stops = append(stops, closeMetrics)
	}
	// As PID 1 in a container, orphaned grandchildren are re-parented to
	// us; reap them without taking the exit status of our own workers.
	// Outside PID 1 the supervisor is a subreaper too, on purpose: what a
	// worker leaves behind (a helper it forked, a double-forked daemon)
	// stays in the supervisor's tree, its cgroup and its reaping, instead
	// of drifting to an init that may not reap (a container's sh). The
	// processes it starts itself beside workers (the upgrade's check) run
	// in process groups of their own, killed once they end, so nothing
	// of theirs lingers as its child.
	if err := reaper.SetSubreaper(); err != nil {
		sv.s.log.Warn("cannot become a child subreaper", zap.Error(err))
	}
	go reaper.Run(ctx, sv.s.notOrphan, func(pid int) {
		sv.s.log.Info("reaped orphaned process", zap.Int("pid", pid))
		sv.s.emit(nil, control.Event{Kind: control.EventReap, PID: pid})
	})
	return stop, nil
}

// controlService keeps the control socket serving: if Serve fails (the
// socket stopped working), it is logged, closed and listened on again with
// a backoff, while the workers go on serving and signals still work.
type controlService struct {
	s    *Supervisor
	path string
	bus  *control.Broadcaster
	log  *zap.Logger

	mu  sync.Mutex
	srv *control.Server

	inherit *keptFDs // what an upgrade kept, for the first listen
}

func (c *controlService) listen() error {
	var srv *control.Server
	var err error
	if f, ok := c.inherit.take(roleCtlSock, c.path); ok {
		srv, err = control.Inherit(c.path, file(f.FD, "control-socket"), c.log)
		c.inherit = nil
	} else {
		srv, err = control.Listen(c.path, c.log)
	}
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.srv = srv
	c.mu.Unlock()
	return nil
}

// save keeps the control socket's listener in st, for an upgrade.
func (c *controlService) save(st *upgradeState) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return st.keepListener(c.srv.Listener(), roleCtlSock, c.path, 0)
}

// run serves until ctx is done, listening again after a failure.
func (c *controlService) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for {
		c.mu.Lock()
		srv := c.srv
		c.mu.Unlock()
		if ctx.Err() != nil { // stopped while listening again
			srv.Close()
			return
		}
		err := srv.Serve(handler{c.s}, c.bus)
		if err == nil || ctx.Err() != nil {
			return
		}
		c.log.Error("control socket failed; listening again", zap.Error(err))
		srv.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			if err := c.listen(); err == nil {
				break
			} else {
				backoff = min(2*backoff, 10*time.Second)
				c.log.Error("cannot listen on the control socket; retrying", zap.Error(err), zap.Duration("in", backoff))
			}
		}
	}
}

func (c *controlService) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.srv.Close()
}

func (sv *services) controlPath() string {
	switch sv.s.cfg.Control {
	case "none":
		return ""
	case "":
		return control.DefaultPath(sv.s.cfg.Listen.First())
	}
	return sv.s.cfg.Control
}

// serveMetrics starts the Prometheus listener (-metrics) and the admin
// listener (-admin), which serves the same metrics. Scrapes ask the owner
// goroutine for a snapshot, so the numbers agree with each other.
func (sv *services) serveMetrics(bus *control.Broadcaster) (func(), error) {
	m := metrics.New(func(ctx context.Context) (snapshot, error) {
		return ask(ctx, sv.s, func(reply chan snapshot) any { return evSnapshot{reply: reply} })
	})
	sv.s.mode.handoff().Observe(m)
	var closers []func() error
	stop := func() {
		for _, c := range closers {
			c()
		}
	}
	if sv.s.cfg.Metrics != "" {
		srv, err := sv.listenMetrics(m) // upgrade_restore.go: bound, or kept by an upgrade
		if err != nil {
			return nil, err
		}
		closers = append(closers, srv.Close)
		sv.s.log.Info("metrics", zap.String("addr", "http://"+srv.Addr()+"/metrics"))
	}
	if sv.s.cfg.Admin != "" {
		if err := sv.checkAdminFiles(); err != nil {
			stop()
			return nil, err
		}
		srv, err := sv.listenAdmin(admin.Options{
			Control:  handler{sv.s},
			Events:   bus,
			Metrics:  m.Handler(),
			Actions:  sv.s.cfg.AdminActions,
			AuthFile: sv.s.cfg.AdminAuth,
			TLSCert:  sv.s.cfg.AdminTLSCert,
			TLSKey:   sv.s.cfg.AdminTLSKey,
			Registry: m.Registerer(),
			Log:      sv.s.log.Named("admin"),
		})
		if err != nil {
			stop()
			return nil, err
		}
		closers = append(closers, srv.Close)
		scheme := "http://"
		if sv.s.cfg.AdminTLSCert != "" {
			scheme = "https://"
		}
		sv.s.log.Info("admin", zap.String("addr", scheme+srv.Addr()+"/"), zap.Bool("actions", sv.s.cfg.AdminActions), zap.Bool("auth", sv.s.cfg.AdminAuth != ""))
	}
	return stop, nil
}

// keepAlive pings systemd's watchdog (WatchdogSec=) from the owner loop, so
// that a stuck loop stops the pings and systemd restarts the supervisor; a
// ping from a goroutine of its own would only prove the runtime alive. It
// pings on the first tick once WatchdogInterval (half the timeout) is less
// than a tick away, so pings stay within the timeout whenever that exceeds
// two ticks.
func (sv *services) keepAlive(now time.Time) {
	if every := sv.s.notify.WatchdogInterval(); every > 0 && now.Sub(sv.pinged) >= every-tickEvery {
		sv.s.notify.Notify("WATCHDOG=1")
		sv.pinged = now
	}
	// A notification systemd's full queue could not take is dropped, never
	// waited for (sdnotify.ErrQueueFull): said at powers of two.
	if d := sv.s.notify.Dropped(); d != sv.sdDropped {
		sv.sdDropped = d
		if d&(d-1) == 0 {
			sv.s.log.Warn("systemd's notify socket is full: notifications dropped", zap.Uint64("dropped", d))
		}
	}
}

// checkAdminFiles reads what the admin listener will (its auth file and
// certificate) before it starts: what is wrong with them is a usage
// error, exit status 2, as a wrong flag is.
func (sv *services) checkAdminFiles() error {
	if p := sv.s.cfg.AdminAuth; p != "" {
		if _, err := admin.LoadAuth(p); err != nil {
			return usagef("invalid value %q for flag -admin-auth: %v", p, err)
		}
	}
	if p := sv.s.cfg.AdminTLSCert; p != "" {
		if _, err := admin.LoadCertificate(p, sv.s.cfg.AdminTLSKey); err != nil {
			return usagef("invalid value %q for flag -admin-tls-cert: %v", p, err)
		}
	}
	return nil
}

// reloadAdmin reads the admin listener's auth file and certificate again
// (SIGHUP), off the owner goroutine: a renewed certificate or a changed
// password needs no restart. What cannot be read is logged, and the one in
// use stays.
func (sv *services) reloadAdmin() {
	srv := sv.adminSrv
	if srv == nil {
		return
	}
	go func() {
		if err := srv.Reload(); err != nil {
			sv.s.log.Error("admin: cannot reload the auth file or certificate; keeping the ones in use", zap.Error(err))
		}
	}()
}

// listenMetrics serves m on the listener the upgrade that started this
// image kept, or on a new one bound at -metrics.
func (sv *services) listenMetrics(m *metrics.Metrics) (*metrics.Server, error) {
	var err error
	if ln := sv.s.up.keptListener(roleMetrics, sv.s.cfg.Metrics); ln != nil {
		sv.metricsSrv = metrics.ServeListener(ln, m, sv.s.log.Named("metrics"))
	} else {
		sv.metricsSrv, err = metrics.Serve(sv.s.cfg.Metrics, m, sv.s.log.Named("metrics"))
	}
	return sv.metricsSrv, err
}

// listenAdmin serves the admin listener on the listener the upgrade that
// started this image kept, or on a new one bound at -admin.
func (sv *services) listenAdmin(o admin.Options) (*admin.Server, error) {
	var err error
	if ln := sv.s.up.keptListener(roleAdmin, sv.s.cfg.Admin); ln != nil {
		sv.adminSrv, err = admin.ServeListener(ln, sv.s.cfg.Admin, o)
		if err != nil {
			ln.Close()
		}
	} else {
		sv.adminSrv, err = admin.Serve(sv.s.cfg.Admin, o)
	}
	return sv.adminSrv, err
}

// adminServer is the admin listener's HTTP server, nil without -admin.
func (sv *services) adminServer() *httpserve.Server {
	if sv.adminSrv == nil {
		return nil
	}
	return sv.adminSrv.Server
}
