package settings

// Usage is the supervisor command line's help text, for -h.
const Usage = `usage: supervisor [flags] [-- COMMAND [ARGS...]]

Runs N copies of COMMAND (default: the worker binary beside the supervisor)
and spreads connections to -listen over them.

flags (each also a key of the -config file, flags winning):
  -config FILE          read settings from a TOML file: one key per flag,
                        workers = 4, grace = "30s", command = ["app", "-x"]
  -print-config         print the effective settings as a -config file and exit
  -listen [NAME=]ADDR   where to listen (default :3000); repeat for several.
                        ADDR: HOST:PORT, :PORT, [v6]:PORT, unix:/path/to.sock,
                        or fd:N (an inherited listening socket). NAME (letters,
                        digits, . _ -) is what workers, logs and metrics call
                        it; default: ADDR. Under systemd socket activation the
                        passed sockets are the listeners, named by LISTEN_FDNAMES.
                        In a -config file: [listeners] NAME = "ADDR"
  -listen-mode OCTAL    a Unix listener's socket file mode, e.g. 0660
  -listen-owner USER, -listen-group GROUP
                        its owner and group (for a front server such as nginx)
  -workers N            worker processes, 1..1024 (default: number of CPUs)
  -mode MODE            rr, shared or reuseport (default rr)
  -balance POLICY       rr mode: round-robin or least-conn (default round-robin)
  -grace DURATION       drain time on stop before SIGKILL (default 30s)
  -ready-timeout DUR    time a new worker has to become ready (default 30s)
  -queue-max N          connections held while no worker is ready (default 4096)
  -queue-timeout DUR    how long a held connection may wait (default 10s)
  -rebalance BOOL       rr: move idle keep-alive connections from busy workers
                        to new ones after a scale-up or respawn (default true)
  -handback BOOL        rr: a draining Go worker hands its idle keep-alive
                        connections back to move to another worker, instead
                        of closing them (default true)
  -max-crashes N        crashes of one slot within -crash-window before giving up (default 10)
  -crash-window DUR     (default 1m)
  -log-format FORMAT    console or json (default console)

  -hang-timeout DUR     a ready worker without a heartbeat this long is hung, at least 2s (default 30s)
  -max-requests N       recycle a worker after N requests (default 0: never)
  -max-requests-jitter J  plus a random 0..J per worker (J at most N)
  -max-rss SIZE         recycle a worker above SIZE resident, e.g. 512MiB
  -control PATH         control socket (default per listening address; none: off)
  -metrics HOST:PORT    Prometheus metrics listener (default off)
  -admin HOST:PORT      dashboard, its API and /metrics (default off); a
                        loopback address unless -admin-auth is given
  -admin-actions        let the dashboard reload and scale
  -admin-auth FILE      require the bearer token or the bcrypt users
                        (htpasswd -nB) in FILE, which must be mode 0600
  -admin-tls-cert FILE, -admin-tls-key FILE
                        serve the admin listener over TLS (re-read on SIGHUP)
  -user NAME, -group NAME  run workers as this user and group
  -worker-output MODE   inherit or capture (default inherit)
  -sched POLICY         batch (SCHED_BATCH) or normal (default batch)
  -defer-accept         TCP listeners: accept a connection only once its
                        client has sent data (TCP_DEFER_ACCEPT), as fasthttp's
                        prefork does; for protocols whose client speaks first
  -worker-protocol P    how workers are spoken to (default node for a node or
                        .js/.mjs/.cjs command, else prefork):
                        prefork  Go workers linking prefork's cluster package
                        node     unmodified Node.js cluster apps: Node's IPC
                                 channel at fd 3 and its cluster protocol
                        systemd  socket at fd 3 with LISTEN_FDS/LISTEN_PID, and a
                                 NOTIFY_SOCKET for READY=1, WATCHDOG=1, STATUS=
                        plain    socket at fd 3; ready once started
                        systemd and plain need -mode shared or reuseport;
                        node takes all three (shared without -mode)
  -strict-listen        node: a worker that listens on an address no -listen
                        serves fails to start (default: a warning)

  -sticky KEY           rr: keep a client on one worker slot by KEY: ip,
                        cookie:NAME, header:NAME, query:NAME or socketio
                        (an app written for @socket.io/sticky, unmodified:
                        node workers that call setupWorker; -mode rr)
  -sticky-wait DUR      how long a connection's first bytes are awaited for
                        its key, then it goes by -balance (default 500ms;
                        5s with -sticky socketio)
  -sticky-hold DUR      how long a keyed connection waits for its slot's
                        restarting worker (default 5s)
  -sticky-table N       keys workers claimed, at most; LRU (default 100000)
  -sticky-table-age DUR a claimed key unused this long is forgotten (default 1h)
  -sticky-forget WHEN   forget a slot's claims on a new generation, any new
                        worker, or never (default generation)
  -proxy-protocol       connections start with a PROXY v1 or v2 header
  -proxy-from CIDR,...  take headers only from these sources (others closed)
  -proxy-wait DUR       how long a PROXY header may take (default 1s)

  -canary N             reloads (SIGHUP, ctl reload) replace N slots first, and
                        judge them against the old generation for -bake before
                        the rest; a failed verdict rolls them back to the
                        release that was serving (default 0: plain reload)
  -bake DUR             how long the canary serves before its verdict (default 30s)
  -canary-insufficient continue|rollback
                        too few requests to judge (default rollback)
  -canary-error-pp P, -canary-error-ratio R
                        fail when the canary's error rate (5xx, panics) is P
                        points above the old one's and R times it (default 1, 2)
  -canary-latency-ratio R  fail when its p99 is R times the old one's (default 1.5)
  -canary-min-requests N  fewer canary requests: not enough traffic (default 100)
  -version              print the version and exit

signals: TERM/INT stop gracefully (twice: at once), HUP rolling reload,
TTIN add a worker, TTOU remove one, USR2 upgrade in place to the binary
the supervisor was started from (see ctl upgrade).

subcommands:
  supervisor ctl [-control PATH] [-json] status|reload|scale N|stop|events|upgrade [PATH]
  supervisor probe [flags] [URL]   send requests and show how they spread over workers`
