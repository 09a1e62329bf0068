package settings

import (
	"net"
	"net/netip"
	"os"
)

// validateAdmin checks the admin listener's settings. Without AdminAuth
// it may only listen on loopback, where nobody but this machine's users
// reach it; the auth file must be readable by its owner only, and checked
// now, so that a secret left open is refused at start. (What the file
// holds, and the certificate, the admin listener reads when it starts;
// the supervisor reports them as usage errors too.)
func (c *Settings) validateAdmin(n naming) error {
	if c.Admin == "" {
		for _, f := range []struct{ field, v string }{{"AdminAuth", c.AdminAuth}, {"AdminTLSCert", c.AdminTLSCert}, {"AdminTLSKey", c.AdminTLSKey}} {
			if f.v != "" {
				return usagef("%s needs %s", n.the(f.field), n.ref("Admin"))
			}
		}
		return nil
	}
	if c.AdminAuth == "" && !loopbackHost(c.Admin) {
		return usagef("invalid value %q for %s: without %s the admin listener must be on a loopback address (127.0.0.1, [::1] or localhost): anyone who reaches it sees pids and load, and with %s can reload and scale",
			c.Admin, n.the("Admin"), n.ref("AdminAuth"), n.ref("AdminActions"))
	}
	if c.AdminAuth != "" {
		fi, err := os.Stat(c.AdminAuth) // follows links, as a Kubernetes secret's
		switch {
		case err != nil:
			return usagef("invalid value %q for %s: %v", c.AdminAuth, n.the("AdminAuth"), err)
		case !fi.Mode().IsRegular():
			return usagef("invalid value %q for %s: not a regular file", c.AdminAuth, n.the("AdminAuth"))
		case fi.Mode().Perm()&0o077 != 0:
			return usagef("invalid value %q for %s: mode %04o: it must be readable by its owner only (chmod 600)", c.AdminAuth, n.the("AdminAuth"), fi.Mode().Perm())
		}
	}
	switch {
	case c.AdminTLSCert != "" && c.AdminTLSKey == "":
		return usagef("%s needs %s", n.the("AdminTLSCert"), n.ref("AdminTLSKey"))
	case c.AdminTLSKey != "" && c.AdminTLSCert == "":
		return usagef("%s needs %s", n.the("AdminTLSKey"), n.ref("AdminTLSCert"))
	}
	return nil
}

// loopbackHost reports whether HOST:PORT names only loopback addresses: a
// loopback IP literal or localhost. An empty host is every address.
func loopbackHost(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
