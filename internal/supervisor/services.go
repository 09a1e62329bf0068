package supervisor

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/admin"
	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/metrics"
	"github.com/prefork/prefork/internal/reaper"
)

// startServices starts what runs beside the workers: the control socket,
// the metrics listener and the reaper of orphaned grandchildren. The
// returned function stops them.
func (s *Supervisor) startServices(bus *control.Broadcaster) (func(), error) {
	ctx, cancel := context.WithCancel(context.Background())
	var stops []func()
	stop := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		cancel()
	}
	if path := s.controlPath(); path != "" {
		cs := &controlService{s: s, path: path, bus: bus, log: s.log.Named("control"), inherit: s.up.kept}
		s.ctlsvc = cs
		if err := cs.listen(); err != nil {
			stop()
			return nil, err
		}
		done := make(chan struct{})
		go func() { defer close(done); cs.run(ctx) }()
		stops = append(stops, func() { cancel(); cs.close(); <-done })
		s.log.Info("control socket", zap.String("path", path))
	}
	if s.cfg.Metrics != "" || s.cfg.Admin != "" {
		closeMetrics, err := s.serveMetrics(bus)
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
		s.log.Warn("cannot become a child subreaper", zap.Error(err))
	}
	go reaper.Run(ctx, s.notOrphan, func(pid int) {
		s.log.Info("reaped orphaned process", zap.Int("pid", pid))
		s.emit(nil, control.Event{Kind: control.EventReap, PID: pid})
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

func (s *Supervisor) controlPath() string {
	switch s.cfg.Control {
	case "none":
		return ""
	case "":
		return control.DefaultPath(s.cfg.Listen)
	}
	return s.cfg.Control
}

// serveMetrics starts the Prometheus listener (-metrics) and the admin
// listener (-admin), which serves the same metrics. Scrapes ask the owner
// goroutine for a snapshot, so the numbers agree with each other.
func (s *Supervisor) serveMetrics(bus *control.Broadcaster) (func(), error) {
	m := metrics.New(func(ctx context.Context) (snapshot, error) {
		return ask(ctx, s, func(reply chan snapshot) any { return evSnapshot{reply: reply} })
	})
	s.mode.handoff().Observe(m)
	var closers []func() error
	stop := func() {
		for _, c := range closers {
			c()
		}
	}
	if s.cfg.Metrics != "" {
		srv, err := s.listenMetrics(m) // upgrade_restore.go: bound, or kept by an upgrade
		if err != nil {
			return nil, err
		}
		closers = append(closers, srv.Close)
		s.log.Info("metrics", zap.String("addr", "http://"+srv.Addr()+"/metrics"))
	}
	if s.cfg.Admin != "" {
		if err := s.checkAdminFiles(); err != nil {
			stop()
			return nil, err
		}
		srv, err := s.listenAdmin(admin.Options{
			Control:  handler{s},
			Events:   bus,
			Metrics:  m.Handler(),
			Actions:  s.cfg.AdminActions,
			AuthFile: s.cfg.AdminAuth,
			TLSCert:  s.cfg.AdminTLSCert,
			TLSKey:   s.cfg.AdminTLSKey,
			Registry: m.Registerer(),
			Log:      s.log.Named("admin"),
		})
		if err != nil {
			stop()
			return nil, err
		}
		closers = append(closers, srv.Close)
		scheme := "http://"
		if s.cfg.AdminTLSCert != "" {
			scheme = "https://"
		}
		s.log.Info("admin", zap.String("addr", scheme+srv.Addr()+"/"), zap.Bool("actions", s.cfg.AdminActions), zap.Bool("auth", s.cfg.AdminAuth != ""))
	}
	return stop, nil
}

// keepAlive pings systemd's watchdog (WatchdogSec=) from the owner loop, so
// that a stuck loop stops the pings and systemd restarts the supervisor; a
// ping from a goroutine of its own would only prove the runtime alive. It
// pings on the first tick once WatchdogInterval (half the timeout) is less
// than a tick away, so pings stay within the timeout whenever that exceeds
// two ticks.
func (s *Supervisor) keepAlive(now time.Time) {
	if every := s.notify.WatchdogInterval(); every > 0 && now.Sub(s.pinged) >= every-tickEvery {
		s.notify.Notify("WATCHDOG=1")
		s.pinged = now
	}
	// A notification systemd's full queue could not take is dropped, never
	// waited for (sdnotify.ErrQueueFull): said at powers of two.
	if d := s.notify.Dropped(); d != s.sdDropped {
		s.sdDropped = d
		if d&(d-1) == 0 {
			s.log.Warn("systemd's notify socket is full: notifications dropped", zap.Uint64("dropped", d))
		}
	}
}

// checkAdminFiles reads what the admin listener will (its auth file and
// certificate) before it starts: what is wrong with them is a usage
// error, exit status 2, as a wrong flag is.
func (s *Supervisor) checkAdminFiles() error {
	if p := s.cfg.AdminAuth; p != "" {
		if _, err := admin.LoadAuth(p); err != nil {
			return usagef("invalid value %q for flag -admin-auth: %v", p, err)
		}
	}
	if p := s.cfg.AdminTLSCert; p != "" {
		if _, err := admin.LoadCertificate(p, s.cfg.AdminTLSKey); err != nil {
			return usagef("invalid value %q for flag -admin-tls-cert: %v", p, err)
		}
	}
	return nil
}

// reloadAdmin reads the admin listener's auth file and certificate again
// (SIGHUP), off the owner goroutine: a renewed certificate or a changed
// password needs no restart. What cannot be read is logged, and the one in
// use stays.
func (s *Supervisor) reloadAdmin() {
	srv := s.adminSrv
	if srv == nil {
		return
	}
	go func() {
		if err := srv.Reload(); err != nil {
			s.log.Error("admin: cannot reload the auth file or certificate; keeping the ones in use", zap.Error(err))
		}
	}()
}
