package control

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"
)

// WriteStatus writes st as `supervisor ctl status` shows it: a header line,
// then a table with one row per worker. Control characters in its strings
// are escaped.
func WriteStatus(w io.Writer, st *Status) error {
	_, err := fmt.Fprintf(w, "supervisor pid=%d listen=%s mode=%s generation=%d uptime=%s workers=%d",
		st.PID, printable(st.Listen), printable(st.Mode), st.Generation, seconds(st.UptimeS), len(st.Workers))
	for _, l := range st.Listeners {
		if err == nil {
			_, err = fmt.Fprintf(w, " listener=%s", printable(l))
		}
	}
	if err == nil && st.Version != "" {
		_, err = fmt.Fprintf(w, " version=%s upgrades=%d", printable(st.Version), st.Upgrades)
	}
	if err == nil && st.AcceptGapMS > 0 {
		_, err = fmt.Fprintf(w, " accept_gap=%.2fms", st.AcceptGapMS)
	}
	if err == nil {
		_, err = fmt.Fprintln(w)
	}
	if err == nil {
		err = writeSticky(w, st)
	}
	if err == nil && st.Canary != nil {
		err = writeCanary(w, st.Canary) // canary.go
	}
	if err != nil {
		return err
	}
	if len(st.Workers) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tPID\tGEN\tSTATE\tUPTIME\tRESTARTS\tCONNS\tREQUESTS\tREQ/S\tP50\tP99\tRSS\tCPU%\tBEAT")
	for _, ws := range st.Workers {
		beat := "-"
		if ws.HeartbeatAgeS >= 0 {
			beat = seconds(ws.HeartbeatAgeS) + " ago"
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%d\t%d\t%d\t%.1f\t%s\t%s\t%s\t%.1f\t%s\n",
			ws.Slot, ws.PID, ws.Generation, printable(string(ws.State)), seconds(ws.UptimeS), ws.Restarts,
			ws.OpenConns, ws.Requests, ws.RequestsPerS, millis(ws.P50S), millis(ws.P99S),
			bytesIEC(ws.RSSBytes), ws.CPUPercent, beat)
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

// millis formats a latency in seconds as milliseconds: 0.42ms, 12.3ms.
// 0 is "-": no requests, or a worker that reports no latency.
func millis(s float64) string {
	switch ms := s * 1000; {
	case s <= 0:
		return "-"
	case ms < 10:
		return strconv.FormatFloat(ms, 'f', 2, 64) + "ms"
	default:
		return strconv.FormatFloat(ms, 'f', 1, 64) + "ms"
	}
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

// printable returns s with its control characters (C0, DEL, C1) escaped as
// in a Go string literal (\x1b, \n, \u009b) and each byte of invalid
// UTF-8 as \xNN, so that a string from the supervisor, or from a worker
// through it, cannot move the cursor, retitle the window or fake a line of
// ctl's output. A C1 byte on its own is invalid UTF-8, and is escaped too:
// a terminal not in UTF-8 mode would take it as a control.
func printable(s string) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsControl(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// printableJSON escapes what encoding/json leaves in strings and a terminal
// takes as a control: DEL and the C1 controls, as \u007f to \u009f. JSON
// has such runes only within strings, where the escape means the same rune.
// (encoding/json escapes the C0 controls itself, and replaces invalid UTF-8.)
func printableJSON(b []byte) []byte {
	if !bytes.ContainsFunc(b, isDelOrC1) {
		return b
	}
	out := make([]byte, 0, len(b)+32)
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if isDelOrC1(r) {
			out = fmt.Appendf(out, `\u%04x`, r)
		} else {
			out = append(out, b[:size]...)
		}
		b = b[size:]
	}
	return out
}

func isDelOrC1(r rune) bool { return r >= 0x7f && r <= 0x9f }
