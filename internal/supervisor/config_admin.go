package supervisor

import (
	"net"
	"net/netip"

	"github.com/prefork/prefork/internal/admin"
)

// validateAdmin checks the admin listener's flags: without -admin-auth
// it may only listen on loopback, where nobody but this machine's users
// reach it; the auth file and certificate must be readable now, so that a
// mistake is a usage error at start rather than a failure later.
func (c *Config) validateAdmin() error {
	if c.Admin == "" {
		for _, f := range []struct{ name, v string }{{"admin-auth", c.AdminAuth}, {"admin-tls-cert", c.AdminTLSCert}, {"admin-tls-key", c.AdminTLSKey}} {
			if f.v != "" {
				return usagef("flag -%s needs -admin", f.name)
			}
		}
		return nil
	}
	if c.AdminAuth == "" && !loopbackHost(c.Admin) {
		return usagef("invalid value %q for flag -admin: without -admin-auth the admin listener must be on a loopback address (127.0.0.1, [::1] or localhost), since anyone who reaches it sees pids and load, and with -admin-actions can reload and scale", c.Admin)
	}
	if c.AdminAuth != "" {
		if _, err := admin.LoadAuth(c.AdminAuth); err != nil {
			return usagef("invalid value %q for flag -admin-auth: %v", c.AdminAuth, err)
		}
	}
	switch {
	case c.AdminTLSCert != "" && c.AdminTLSKey == "":
		return usagef("flag -admin-tls-cert needs -admin-tls-key")
	case c.AdminTLSKey != "" && c.AdminTLSCert == "":
		return usagef("flag -admin-tls-key needs -admin-tls-cert")
	case c.AdminTLSCert != "":
		if _, err := admin.LoadCertificate(c.AdminTLSCert, c.AdminTLSKey); err != nil {
			return usagef("invalid value %q for flag -admin-tls-cert: %v", c.AdminTLSCert, err)
		}
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
