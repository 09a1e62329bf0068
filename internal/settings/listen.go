package settings

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"

	"github.com/prefork/prefork/internal/listener"
)

// Listeners is -listen, which may be given several times: each entry is
// NAME=ADDRESS or ADDRESS, ADDRESS one of HOST:PORT, :PORT, [v6]:PORT,
// unix:/path/to.sock or fd:N (see listener.ParseSpec). Order matters: the
// first is the one a worker's plain cluster.Listen serves, and workers get
// them in this order. It is a flag.Value whose Set appends, so a
// configuration file sets it by calling Set once per entry.
type Listeners []string

// Set appends one -listen value, checked as ParseSpec checks it.
func (l *Listeners) Set(v string) error {
	if _, err := listener.ParseSpec(v); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), listener.ErrAddr.Error()+" "))
	}
	*l = append(*l, v)
	return nil
}

// String is the entries joined by commas (flag's default display).
func (l *Listeners) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

// Values are the entries, for a configuration file (a repeatable flag).
func (l *Listeners) Values() []string { return *l }

// Get is the entries, as flag.Getter.
func (l *Listeners) Get() any { return []string(*l) }

// First is the first listener's address: what a one-listener program
// passes on as the address it serves (ignored under a supervisor).
func (l Listeners) First() string {
	if len(l) == 0 {
		return DefaultListen
	}
	s, err := listener.ParseSpec(l[0])
	if err != nil {
		return l[0]
	}
	return s.Address()
}

// Specs parses the listeners, refusing duplicates (listener.ParseSpecs).
func (l Listeners) Specs() ([]listener.Spec, error) { return listener.ParseSpecs(l) }

// Listeners parses st.Listen: the listeners a primary binds, in order.
func (st Settings) Listeners() ([]listener.Spec, error) { return st.Listen.Specs() }

// SocketFile is what a Unix listener's socket file gets: -listen-mode,
// -listen-owner and -listen-group resolved.
func (st Settings) SocketFile() (listener.FileOptions, error) {
	fo := listener.FileOptions{Mode: st.ListenMode, UID: -1, GID: -1}
	if st.ListenOwner != "" {
		id, err := lookupID(st.ListenOwner, func(n string) (string, error) {
			u, err := user.Lookup(n)
			if err != nil {
				return "", err
			}
			return u.Uid, nil
		})
		if err != nil {
			return fo, err
		}
		fo.UID = id
	}
	if st.ListenGroup != "" {
		id, err := lookupID(st.ListenGroup, func(n string) (string, error) {
			g, err := user.LookupGroup(n)
			if err != nil {
				return "", err
			}
			return g.Gid, nil
		})
		if err != nil {
			return fo, err
		}
		fo.GID = id
	}
	return fo, nil
}

// lookupID is a numeric id, or the id of the name by lookup.
func lookupID(s string, lookup func(string) (string, error)) (int, error) {
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return n, nil
	}
	id, err := lookup(s)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(id)
}

// fileMode is -listen-mode: permission bits in octal, such as 0660.
type fileMode struct{ m *os.FileMode }

func (f fileMode) String() string {
	if f.m == nil || *f.m == 0 {
		return ""
	}
	return fmt.Sprintf("%#o", uint32(*f.m))
}

func (f fileMode) Set(v string) error {
	if v == "" { // as -print-config writes the default
		*f.m = 0
		return nil
	}
	n, err := strconv.ParseUint(v, 8, 32)
	if err != nil || n == 0 || n > 0o777 {
		return fmt.Errorf("want octal permission bits from 1 to 0777, such as 0660")
	}
	*f.m = os.FileMode(n)
	return nil
}

// validateListen checks the listeners and the socket file's options.
func (c *Settings) validateListen(n naming) error {
	if len(c.Listen) == 0 {
		return usagef("invalid value \"\" for %s: want at least one listener", n.the("Listen"))
	}
	if _, err := c.Listeners(); err != nil {
		return usagef("invalid value for %s: %v", n.the("Listen"), strings.TrimPrefix(err.Error(), listener.ErrAddr.Error()+" "))
	}
	if c.ListenMode&^os.ModePerm != 0 {
		return usagef("invalid value %#o for %s: want permission bits only", uint32(c.ListenMode), n.the("ListenMode"))
	}
	if _, err := c.SocketFile(); err != nil {
		return usagef("invalid value for %s or %s: %v", n.the("ListenOwner"), n.ref("ListenGroup"), err)
	}
	return nil
}
