package listener

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// Networks of a Spec.
const (
	TCP  = "tcp"  // HOST:PORT, :PORT, [v6]:PORT
	Unix = "unix" // unix:/path/to.sock
	FD   = "fd"   // fd:N, a descriptor the supervisor inherited
)

// maxUnixPath is the longest path a sockaddr_un holds, without its NUL.
const maxUnixPath = 107

// Spec is one listener as the operator gave it: -listen NAME=ADDRESS, or
// ADDRESS with the name derived from it.
type Spec struct {
	Name    string // given, or the address as written (Address)
	Network string // TCP, Unix or FD
	Addr    string // HOST:PORT, or the socket file's absolute path; "" for FD
	FD      int    // the inherited descriptor, for FD
}

// Address is the address as -listen takes it: HOST:PORT, unix:/path or
// fd:N. A listener without a name of its own is named by it.
func (s Spec) Address() string {
	switch s.Network {
	case Unix:
		return "unix:" + s.Addr
	case FD:
		return "fd:" + strconv.Itoa(s.FD)
	}
	return s.Addr
}

// ParseSpec parses one -listen value: NAME=ADDRESS or ADDRESS, where
// ADDRESS is HOST:PORT, :PORT, [v6]:PORT, unix:PATH (a relative PATH is
// made absolute) or fd:N. A NAME is 1 to 64 letters, digits, '.', '_' or
// '-' (a valid LISTEN_FDNAMES entry).
func ParseSpec(v string) (Spec, error) {
	addr := v
	var s Spec
	if name, rest, ok := strings.Cut(v, "="); ok && !strings.ContainsAny(name, ":/[") {
		if !ValidName(name) {
			return s, fmt.Errorf("%w %q: a name is 1 to 64 letters, digits, '.', '_' or '-'", ErrAddr, name)
		}
		s.Name, addr = name, rest
	}
	switch {
	case strings.HasPrefix(addr, "unix:"):
		p := strings.TrimPrefix(addr, "unix:")
		if p == "" {
			return s, fmt.Errorf("%w %q: unix: needs a path", ErrAddr, addr)
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return s, fmt.Errorf("%w %q: %v", ErrAddr, addr, err)
		}
		if len(abs) > maxUnixPath {
			return s, fmt.Errorf("%w %q: a socket path is at most %d bytes", ErrAddr, addr, maxUnixPath)
		}
		s.Network, s.Addr = Unix, abs
	case strings.HasPrefix(addr, "fd:"):
		n, err := strconv.Atoi(strings.TrimPrefix(addr, "fd:"))
		if err != nil || n < 3 {
			return s, fmt.Errorf("%w %q: fd: needs a descriptor number of 3 or more", ErrAddr, addr)
		}
		s.Network, s.FD = FD, n
	default:
		if err := ParseAddr(addr); err != nil {
			return s, err
		}
		s.Network, s.Addr = TCP, addr
	}
	if s.Name == "" {
		s.Name = s.Address()
	}
	return s, nil
}

// ValidName reports whether name may name a listener: 1 to 64 letters,
// digits, '.', '_' or '-', which also makes it a valid LISTEN_FDNAMES
// entry.
func ValidName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, r := range name {
		if !(r == '-' || r == '.' || r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// ParseSpecs parses every value of a repeated -listen and refuses two
// listeners with one name or one address (a TCP port 0 excepted, which
// binds a new port each time).
func ParseSpecs(vs []string) ([]Spec, error) {
	specs := make([]Spec, 0, len(vs))
	names := map[string]string{}
	addrs := map[string]string{}
	for _, v := range vs {
		s, err := ParseSpec(v)
		if err != nil {
			return nil, err
		}
		key := s.Address()
		if s.Network == TCP && strings.HasSuffix(key, ":0") {
			key = ""
		}
		if prev, ok := addrs[key]; ok && key != "" {
			return nil, fmt.Errorf("%w %q: duplicate address, given as %q already", ErrAddr, v, prev)
		}
		addrs[key] = v
		if prev, ok := names[s.Name]; ok {
			return nil, fmt.Errorf("%w %q: the name %q is taken by %q", ErrAddr, v, s.Name, prev)
		}
		names[s.Name] = v
		specs = append(specs, s)
	}
	return specs, nil
}
