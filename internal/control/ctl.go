package control

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/prefork/prefork/internal/cli"
)

const ctlUsage = `usage: supervisor ctl [flags] COMMAND

Commands:
  status    show the supervisor and one row per worker
  reload    replace every worker, slot by slot; returns when done. With
            -canary N: replace N slots first, let them serve for -bake,
            compare them with the old generation over the same window,
            then go on or roll them back to the release that was serving;
            returns with the verdict and why (waits for the bake)
  scale N   run N workers; returns when done
  stop      stop the supervisor gracefully
  events    print events as JSON lines until interrupted
  upgrade [PATH]
            re-execute the supervisor in place from PATH (default: its own
            binary), keeping its pid, workers and sockets; returns when the
            new version serves, or exits 1 with the reason it did not

Flags, before or after the command:
  -control PATH  the supervisor's control socket (default: derived from
                 -listen, PORT.sock or HOST-PORT.sock in the private
                 directory $XDG_RUNTIME_DIR/prefork, or /tmp/prefork-UID
                 without XDG_RUNTIME_DIR)
  -listen ADDR   the supervisor's -listen address, only to derive the
                 socket (default ":3000")
  -json          machine-readable output
  -timeout D     give up after D (default 10s for status, 2m for reload,
                 plus the bake for a canary, scale and stop; events run
                 until interrupted)

Reload flags (default: the supervisor's own -canary, -bake and
-canary-insufficient):
  -canary N      slots to replace first and judge; 0: a plain rolling reload
  -bake D        how long the canary serves before the verdict
  -canary-insufficient continue|rollback
                 what too little traffic in the bake means
  -force         reload even the release a canary rolled back

Exit status: 0 done; 1 the supervisor answered with an error or could not
be reached; 2 usage error.`

// Default -timeout per command. A reload or scale is answered only when
// every slot has been replaced or started, so theirs must outlast a rolling
// reload of a slow-starting application.
const (
	statusTimeout = 10 * time.Second
	actionTimeout = 2 * time.Minute
)

// ctl is one parsed `supervisor ctl` invocation.
type ctl struct {
	path    string
	json    bool
	timeout time.Duration // 0: the command's default
	cmd     Command
	n       int
	path_   string  // upgrade's PATH, absolute; "" for the running binary
	reload  Request // reload's canary options

	stdout, stderr io.Writer
}

// Main implements `supervisor ctl`; args are what follows "ctl". It returns
// the exit status: 0 on success, 1 if the supervisor answered with an error
// or could not be reached, 2 for a usage error. SIGINT and SIGTERM end
// "events" with status 0, and abandon any other command with status 1.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runCtl(ctx, args, stdout, stderr)
}

func runCtl(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c, err := parseCtl(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stderr, ctlUsage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "ctl: %v\nrun 'supervisor ctl -h' for usage\n", err)
		return 2
	}
	c.stdout, c.stderr = stdout, stderr
	switch c.cmd {
	case CmdStatus:
		return c.status(ctx)
	case CmdEvents:
		return c.events(ctx)
	}
	return c.action(ctx)
}

func parseCtl(args []string) (*ctl, error) {
	var c ctl
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed by runCtl, usage by -h
	control := fs.String("control", "", "")
	listen := fs.String("listen", ":3000", "")
	fs.BoolVar(&c.json, "json", false, "")
	fs.DurationVar(&c.timeout, "timeout", 0, "")
	canary := fs.Int("canary", 0, "")
	bake := fs.Duration("bake", 0, "")
	fs.StringVar(&c.reload.Insufficient, "canary-insufficient", "", "")
	fs.BoolVar(&c.reload.Force, "force", false, "")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return nil, err
	}

	if c.timeout < 0 || c.timeout == 0 && cli.IsSet(fs, "timeout") {
		return nil, fmt.Errorf("invalid value %q for flag -timeout: must be positive", fs.Lookup("timeout").Value)
	}
	if len(pos) == 0 {
		return nil, errors.New("missing command: status, reload, scale N, stop, upgrade or events")
	}
	c.cmd, pos = Command(pos[0]), pos[1:]
	switch c.cmd {
	case CmdStatus, CmdReload, CmdStop, CmdEvents:
		if len(pos) > 0 {
			return nil, fmt.Errorf("%s takes no argument, got %q", c.cmd, pos[0])
		}
	case CmdScale:
		if len(pos) == 0 {
			return nil, errors.New("scale needs a worker count, as in: scale 4")
		}
		if len(pos) > 1 {
			return nil, fmt.Errorf("scale takes one worker count, got also %q", pos[1])
		}
		n, err := strconv.Atoi(pos[0])
		if err != nil || n < 1 {
			return nil, fmt.Errorf("invalid worker count %q for scale: want a whole number of at least 1", pos[0])
		}
		c.n = n
	case CmdUpgrade:
		if len(pos) > 1 {
			return nil, fmt.Errorf("upgrade takes one binary path, got also %q", pos[1])
		}
		if len(pos) == 1 {
			// The supervisor runs in another directory: send it an
			// absolute path.
			abs, err := filepath.Abs(pos[0])
			if err != nil {
				return nil, fmt.Errorf("upgrade: %w", err)
			}
			c.path_ = abs
		}
	default:
		return nil, fmt.Errorf("unknown command %q: want status, reload, scale N, stop, upgrade or events", c.cmd)
	}
	if err := c.reloadFlags(fs, *canary, *bake); err != nil { // canary.go
		return nil, err
	}
	c.path = *control
	if c.path == "" {
		c.path = DefaultPath(*listen)
	}
	return &c, nil
}

func (c *ctl) status(ctx context.Context) int {
	resp, err := c.call(ctx, Request{Cmd: CmdStatus}, statusTimeout)
	if err != nil {
		return c.fail(err)
	}
	if !resp.OK {
		return c.fail(refusal(CmdStatus, resp))
	}
	if resp.Status == nil {
		return c.fail(errors.New("status: the supervisor sent no status"))
	}
	if c.json {
		err = writeJSON(c.stdout, resp.Status)
	} else {
		err = WriteStatus(c.stdout, resp.Status)
	}
	if err != nil {
		return c.fail(err)
	}
	return 0
}

// action runs reload, scale or stop. With -json the whole Response is
// printed, refusals included.
func (c *ctl) action(ctx context.Context) int {
	req := Request{Cmd: c.cmd, N: c.n, Path: c.path_}
	timeout := actionTimeout
	if c.cmd == CmdReload {
		req.Canary, req.BakeMS, req.Insufficient, req.Force = c.reload.Canary, c.reload.BakeMS, c.reload.Insufficient, c.reload.Force
		timeout += c.reload.Bake() // the answer comes after the verdict
	}
	resp, err := c.call(ctx, req, timeout)
	if err != nil {
		return c.fail(err)
	}
	if c.json {
		if err := writeJSON(c.stdout, resp); err != nil {
			return c.fail(err)
		}
	}
	if !resp.OK {
		return c.fail(refusal(c.cmd, resp))
	}
	if !c.json {
		fmt.Fprintln(c.stdout, printable(cmp.Or(resp.Message, string(c.cmd)+": done")))
	}
	return 0
}

func (c *ctl) events(ctx context.Context) int {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	err := Events(ctx, c.path, func(e Event) error {
		b, err := marshalEvent(e)
		if err != nil {
			return err
		}
		_, err = c.stdout.Write(append(b, '\n'))
		return err
	})
	switch {
	case ctx.Err() != nil: // interrupted, or -timeout is over
		return 0
	case err == nil:
		fmt.Fprintln(c.stderr, "ctl: events: the supervisor ended the stream")
		return 0
	}
	return c.fail(c.unreachable(err))
}

// call sends req with the -timeout, or def, as its deadline, and turns a
// failure to get an answer into a message for the operator.
func (c *ctl) call(ctx context.Context, req Request, def time.Duration) (Response, error) {
	d := cmp.Or(c.timeout, def)
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	resp, err := Call(cctx, c.path, req)
	switch {
	case err == nil:
		return resp, nil
	case ctx.Err() != nil:
		return resp, fmt.Errorf("%s: interrupted", req.Cmd)
	case errors.Is(err, context.DeadlineExceeded):
		return resp, fmt.Errorf("%s: no answer from the supervisor within %v (it may still be at it; raise -timeout)", req.Cmd, d)
	}
	return resp, c.unreachable(err)
}

// unreachable names the socket and the OS error of a failed dial, with a
// hint at the usual cause.
func (c *ctl) unreachable(err error) error {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		return err
	}
	hint := ""
	switch {
	case errors.Is(err, fs.ErrNotExist):
		hint = " (is it running? give its socket with -control PATH, or its address with -listen)"
	case errors.Is(err, syscall.ECONNREFUSED):
		hint = " (nothing listens on it: the supervisor that made it is gone)"
	case errors.Is(err, fs.ErrPermission):
		hint = " (run ctl as the user the supervisor runs as)"
	}
	return fmt.Errorf("cannot reach the supervisor at %s: %v%s", c.path, op.Err, hint)
}

// refusal is the error of a Response with OK false.
func refusal(cmd Command, r Response) error {
	return errors.New(cmp.Or(r.Error, string(cmd)+": failed, without a reason"))
}

func (c *ctl) fail(err error) int {
	fmt.Fprintf(c.stderr, "ctl: %s\n", printable(err.Error())) // it may quote the server
	return 1
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(printableJSON(b), '\n'))
	return err
}
