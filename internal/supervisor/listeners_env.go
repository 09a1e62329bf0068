package supervisor

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
)

// listenFDs is what a systemd or plain worker learns of its listeners
// (sd_listen_fds_with_names): LISTEN_FDS, their count from fd 3, and
// LISTEN_FDNAMES, their names in the same order. A name systemd would not
// take (a derived one, the address, has a colon) is "http" for the first
// listener, as when there was only one, and httpN for the Nth.
func listenFDs(lns []listening) []string {
	names := make([]string, len(lns))
	for i, l := range lns {
		switch {
		case listener.ValidName(l.name):
			names[i] = l.name
		case i == 0:
			names[i] = "http"
		default:
			names[i] = "http" + strconv.Itoa(i+1)
		}
	}
	return []string{"LISTEN_FDS=" + strconv.Itoa(len(lns)), "LISTEN_FDNAMES=" + strings.Join(names, ":")}
}

// listenersEnv is ipc.EnvListeners for a prefork worker: its listeners'
// names and addresses in order, as JSON.
func listenersEnv(lns []listening) string {
	out := make([]ipc.ListenerInfo, len(lns))
	for i, l := range lns {
		out[i] = ipc.ListenerInfo{Name: l.name, Addr: l.addr}
	}
	b, _ := json.Marshal(out) // strings only: cannot fail
	return string(b)
}
