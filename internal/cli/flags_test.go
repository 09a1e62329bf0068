package cli

import (
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		pos     []string
		n       int
		verbose bool
	}{
		{nil, nil, 1, false},
		{[]string{"a"}, []string{"a"}, 1, false},
		{[]string{"-n", "3", "a"}, []string{"a"}, 3, false},
		{[]string{"a", "-n", "3", "b", "-v"}, []string{"a", "b"}, 3, true},
		{[]string{"a", "--", "-n", "3"}, []string{"a", "-n", "3"}, 1, false},
		{[]string{"--", "-v"}, []string{"-v"}, 1, false},
		{[]string{"scale", "-1"}, []string{"scale", "-1"}, 1, false},
		{[]string{"-1", "-n", "-2"}, []string{"-1"}, -2, false},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		n := fs.Int("n", 1, "")
		v := fs.Bool("v", false, "")
		pos, err := Parse(fs, tc.args)
		if err != nil || !slices.Equal(pos, tc.pos) || *n != tc.n || *v != tc.verbose {
			t.Errorf("Parse(%q) = %q, %v, n=%d v=%v; want %q, n=%d v=%v", tc.args, pos, err, *n, *v, tc.pos, tc.n, tc.verbose)
		}
		if want := slices.Contains(tc.args, "-n") && !slices.Contains(tc.args, "--"); IsSet(fs, "n") != want {
			t.Errorf("IsSet(%q, n) = %v, want %v", tc.args, !want, want)
		}
	}
}

func TestParseErrorsNameTheFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"a", "-bogus"}, "-bogus"},
		{[]string{"a", "--verbose"}, "-verbose"},
		{[]string{"-n", "x"}, `"x"`},
		{[]string{"a", "-n"}, "-n"},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.Int("n", 1, "")
		_, err := Parse(fs, tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q): %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := Parse(fs, []string{"a", "-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
}
