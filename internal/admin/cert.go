package admin

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"
)

// Certificate is the admin listener's TLS certificate (-admin-tls-cert,
// -admin-tls-key), read again by Reload: the supervisor calls it on
// SIGHUP, so a renewed certificate needs no restart. Connections already
// open keep the one they started with.
type Certificate struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// LoadCertificate reads a PEM certificate (chain) and its key.
func LoadCertificate(certFile, keyFile string) (*Certificate, error) {
	c := &Certificate{certFile: certFile, keyFile: keyFile}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again. On error the certificate in use stays.
func (c *Certificate) Reload() error {
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("admin: tls: %w", err)
	}
	c.cur.Store(&pair)
	return nil
}

// config is a server configuration that serves the current certificate.
func (c *Certificate) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.cur.Load(), nil
		},
	}
}
