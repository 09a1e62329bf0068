package control

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"text/tabwriter"
	"time"
)

// WriteStatus writes st as `supervisor ctl status` shows it: a header line,
// then a table with one row per worker.
func WriteStatus(w io.Writer, st *Status) error {
	_, err := fmt.Fprintf(w, "supervisor pid=%d listen=%s mode=%s generation=%d uptime=%s workers=%d\n",
		st.PID, st.Listen, st.Mode, st.Generation, seconds(st.UptimeS), len(st.Workers))
	if err != nil {
		return err
	}
	if len(st.Workers) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tPID\tGEN\tSTATE\tUPTIME\tRESTARTS\tCONNS\tREQUESTS\tRSS\tCPU%\tBEAT")
	for _, ws := range st.Workers {
		beat := "-"
		if ws.HeartbeatAgeS >= 0 {
			beat = seconds(ws.HeartbeatAgeS) + " ago"
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%d\t%d\t%d\t%s\t%.1f\t%s\n",
			ws.Slot, ws.PID, ws.Generation, ws.State, seconds(ws.UptimeS), ws.Restarts,
			ws.OpenConns, ws.Requests, bytesIEC(ws.RSSBytes), ws.CPUPercent, beat)
	}
	return tw.Flush()
}

// seconds formats a duration in seconds for a person: 4.2s under a minute,
// 1h2m3s from there on.
func seconds(s float64) string {
	switch {
	case s < 0:
		return "-"
	case s < 60:
		return strconv.FormatFloat(s, 'f', 1, 64) + "s"
	case s >= math.MaxInt64/float64(time.Second): // beyond a Duration
		return strconv.FormatFloat(s, 'f', 0, 64) + "s"
	}
	return time.Duration(s * float64(time.Second)).Truncate(time.Second).String()
}

// bytesIEC formats n in binary units: 512B, 12.3MiB. 0 is "-": the worker
// has not reported its RSS yet.
func bytesIEC(n uint64) string {
	if n == 0 {
		return "-"
	}
	if n < 1024 {
		return strconv.FormatUint(n, 10) + "B"
	}
	f, unit := float64(n)/1024, 0
	for f >= 1024 && unit < 4 {
		f, unit = f/1024, unit+1
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + [...]string{"KiB", "MiB", "GiB", "TiB", "PiB"}[unit]
}
