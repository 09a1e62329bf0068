package probe

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

const maxKeyDisplay = 24 // runes of a non-pid body shown in the table

// Print writes the human-readable report:
//
//	probe http://127.0.0.1:3000/pid: 1000 requests, concurrency 16, new connection per request
//	pid      count   share
//	41872      501   50.1%  ##############################
//	41873      499   49.9%  #############################
//	max/min 1.00   req/s 8123   latency p50 1.2ms p99 3.4ms max 7.8ms
//	failures: none
//	connections opened 1000   elapsed 123.1ms
//
// Bars are scaled to the largest count (30 characters); pids are sorted
// numerically.
func (r *Result) Print(w io.Writer) {
	mode := "new connection per request"
	if r.KeepAlive {
		mode = "keep-alive connections"
	}
	fmt.Fprintf(w, "probe %s: %d requests, concurrency %d, %s\n", r.URL, r.Requests, r.Concurrency, mode)

	keys := r.Pids()
	if len(keys) == 0 || r.OK == 0 {
		fmt.Fprintln(w, "no successful responses")
	} else {
		width := len("pid")
		hi := 0
		nonPid := false
		for _, k := range keys {
			width = max(width, len([]rune(displayKey(k))))
			hi = max(hi, r.Counts[k])
			if _, err := strconv.ParseUint(k, 10, 64); err != nil {
				nonPid = true
			}
		}
		fmt.Fprintf(w, "%-*s%9s%8s\n", width, "pid", "count", "share")
		for _, k := range keys {
			c := r.Counts[k]
			bar := 0
			if hi > 0 {
				bar = c * barWidth / hi
			}
			if bar == 0 && c > 0 {
				bar = 1
			}
			share := 100 * float64(c) / float64(r.OK)
			fmt.Fprintf(w, "%-*s%9d%7.1f%%  %s\n", width, displayKey(k), c, share, strings.Repeat("#", bar))
		}
		if nonPid {
			fmt.Fprintf(w, "note: some 2xx bodies are not pids; is %s a worker's /pid endpoint?\n", r.URL)
		}
	}

	if r.OK > 0 {
		fmt.Fprintf(w, "max/min %.2f   req/s %.0f   latency p50 %s p99 %s max %s\n",
			r.MaxMinRatio(), r.RequestsPerSecond(),
			fmtDuration(r.Percentile(50)), fmtDuration(r.Percentile(99)), fmtDuration(r.MaxLatency))
	} else {
		fmt.Fprintln(w, "max/min -   req/s 0   latency -")
	}

	if r.Failed == 0 {
		fmt.Fprintln(w, "failures: none")
	} else {
		kinds := make([]string, 0, len(r.Failures))
		for k := range r.Failures {
			kinds = append(kinds, k)
		}
		slices.SortFunc(kinds, func(a, b string) int {
			return cmp.Or(cmp.Compare(r.Failures[b], r.Failures[a]), cmp.Compare(a, b))
		})
		parts := make([]string, len(kinds))
		for i, k := range kinds {
			parts[i] = fmt.Sprintf("%s %d", k, r.Failures[k])
		}
		fmt.Fprintf(w, "failures: %d (%s)\n", r.Failed, strings.Join(parts, ", "))
		for _, k := range kinds {
			if k == KindOther {
				if e := r.FailureExamples[k]; e != "" {
					fmt.Fprintf(w, "  other, e.g.: %s\n", e)
				}
			}
		}
	}

	if r.Stopped != "" {
		why := "interrupted"
		if r.Stopped == "duration" {
			why = "duration " + r.Duration.String() + " reached"
		}
		fmt.Fprintf(w, "stopped early (%s): %d of %d requests completed, %d in flight abandoned\n",
			why, r.OK+r.Failed, r.Requests, r.Aborted)
	}
	fmt.Fprintf(w, "connections opened %d   elapsed %s\n", r.Dials, fmtDuration(r.Elapsed))
}

// displayKey makes a Counts key safe and short for the table.
func displayKey(k string) string {
	if k == "" {
		return "(empty)"
	}
	if strings.IndexFunc(k, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		k = strconv.Quote(k)
	}
	if r := []rune(k); len(r) > maxKeyDisplay {
		k = string(r[:maxKeyDisplay-3]) + "..."
	}
	return k
}

// sortKeys orders numeric keys by value (ties lexically), then the rest lexically.
func sortKeys(keys []string) {
	slices.SortFunc(keys, func(a, b string) int {
		na, ea := strconv.ParseUint(a, 10, 64)
		nb, eb := strconv.ParseUint(b, 10, 64)
		switch {
		case ea == nil && eb == nil:
			return cmp.Or(cmp.Compare(na, nb), cmp.Compare(a, b))
		case ea == nil:
			return -1
		case eb == nil:
			return 1
		}
		return cmp.Compare(a, b)
	})
}

// fmtDuration prints 850µs, 1.2ms or 1.23s.
func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}
