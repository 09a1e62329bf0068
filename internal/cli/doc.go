// Package cli holds what the supervisor's subcommands share in parsing
// their command lines: flags interleaved with positional arguments.
//
//	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
//	n := fs.Int("n", 1000, "requests")
//	pos, err := cli.Parse(fs, []string{"http://127.0.0.1:3000/pid", "-n", "10"})
//	// pos == ["http://127.0.0.1:3000/pid"], *n == 10
package cli
