package cli

import (
	"flag"
	"strconv"
)

// Parse parses flags both before and after positional arguments
// (`ctl status -json`, `probe URL -n 10`), where fs.Parse alone stops at
// the first positional one, and returns the positional arguments in order.
// Everything after "--" is positional. So is a negative number, so that
// `scale -1` is reported as a bad count rather than an unknown flag "-1".
// Errors are fs.Parse's, which name the bad flag; flag.ErrHelp for -h.
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if _, err := strconv.Atoi(args[0]); err == nil {
			pos, args = append(pos, args[0]), args[1:]
			continue
		}
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	return pos, nil
}

// IsSet reports whether the flag name was given on the command line, as
// opposed to keeping its default.
func IsSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
