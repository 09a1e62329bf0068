// Package settings is the one description of how a primary runs its
// workers: the [Settings] type, the supervisor's command line that fills
// it ([Parse]), and the checks on it ([Settings.Validate]). The public
// cluster package exports the type as cluster.Settings and the engine
// (internal/supervisor) runs it as it is, so a setting is declared,
// documented and checked once.
//
// A command line's errors name its flags, a Go caller's errors name the
// fields (each field is the flag of the same name in kebab case):
//
//	st, err := settings.Parse([]string{"-workers", "0"})
//	// invalid value 0 for flag -workers: must be from 1 to 1024
//	st.Workers = 0
//	err = st.Validate()
//	// invalid value 0 for Settings.Workers: must be from 1 to 1024
//
// A -config file sets the same flags, one key each, and the command line
// overrides it; its errors name the file, the line and the key:
//
//	prefork.toml:3: workers: want an integer, not a TOML string
//
// The package is a leaf: a worker-only program that links the cluster
// package links this, never the engine.
//
//	settings.go  the Settings type, its defaults and the worker protocols
//	parse.go     the command line: flags, COMMAND, -version, -config, sizes
//	file.go      the -config file: TOML, one key per flag, set through the flag
//	print.go     Settings as a -config file (-print-config)
//	reread.go    reading the file again: what a reload applies, and what not
//	validate.go  the checks, worded for a flag or for a field
//	sticky.go    -sticky and -proxy-protocol: the fields, flags and checks
//	listen.go    -listen, repeatable (Listeners, a flag.Value whose Set
//	             appends), and the socket file's -listen-mode, owner, group
//	admin.go     the admin listener's: loopback without auth, the auth file's mode
//	canary.go    a reload's canary: -canary, -bake and the gates, their defaults
//	usage.go     the command line's help text
package settings

import _ "github.com/prefork/prefork/internal/linuxonly" // fails to build on any other GOOS
