package probe

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/prefork/prefork/internal/cli"
)

// Main runs the probe with command-line args (without the "probe" word) and
// returns the exit code: 0 success (even if some requests failed; failures
// are reported), 1 the target could not be reached at all (no request
// succeeded and no connection could be opened: refused, bad host...), 2 usage
// error (bad flag or URL; the message names it). -h prints usage and returns 0.
//
// Flags may come before or after the URL. An interrupt (Ctrl-C) stops the run
// early and the partial report is still printed.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", DefaultRequests, fmt.Sprintf("number of requests, 1..%d", MaxRequests))
	c := fs.Int("c", DefaultConcurrency, fmt.Sprintf("requests in flight at once, 1..%d", MaxConcurrency))
	keepAlive := fs.Bool("keepalive", false, "reuse connections (default: a new TCP connection per request)")
	timeout := fs.Duration("timeout", DefaultTimeout, "per-request timeout")
	duration := fs.Duration("duration", DefaultDuration, "overall time bound: stop issuing requests after it and report")
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "usage: supervisor probe [flags] [URL]\n\n")
		fmt.Fprintf(out, "Sends GET requests to URL (default %s), counts the answers by body\n", DefaultURL)
		fmt.Fprintf(out, "(each worker answers with its pid) and shows how evenly they were spread.\n\nflags:\n")
		fs.PrintDefaults()
	}

	pos, err := cli.Parse(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2 // the flag package has printed the error and usage
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "probe: "+format+"\n", a...)
		fmt.Fprintln(stderr, "run 'supervisor probe -h' for usage")
		return 2
	}
	if len(pos) > 1 {
		return usage("too many arguments %q: want at most one URL", pos)
	}
	o := Options{
		URL:         DefaultURL,
		Requests:    *n,
		Concurrency: *c,
		KeepAlive:   *keepAlive,
		Timeout:     *timeout,
		Duration:    *duration,
	}
	if len(pos) == 1 {
		o.URL = pos[0]
	}
	switch {
	case *n < 1 || *n > MaxRequests:
		return usage("-n must be between 1 and %d (got %d)", MaxRequests, *n)
	case *c < 1 || *c > MaxConcurrency:
		return usage("-c must be between 1 and %d (got %d)", MaxConcurrency, *c)
	case *timeout <= 0:
		return usage("-timeout must be positive (got %v)", *timeout)
	case *duration <= 0:
		return usage("-duration must be positive (got %v)", *duration)
	}
	if err := checkURL(o.URL); err != nil {
		return usage("%v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := Run(ctx, o)
	if err != nil {
		return usage("%v", err)
	}
	res.Print(stdout)
	if res.Unreachable() {
		why, most := "", 0
		for k, cnt := range res.Failures {
			if e := res.FailureExamples[k]; e != "" && (cnt > most || cnt == most && e < why) {
				why, most = e, cnt
			}
		}
		if why != "" {
			why = ": " + why
		}
		fmt.Fprintf(stderr, "probe: could not reach %s%s\n", res.URL, why)
		return 1
	}
	return 0
}
