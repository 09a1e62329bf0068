package admin

import (
	"crypto/tls"
	"os"
	"testing"

	"github.com/prefork/prefork/internal/admin/admintest"
)

// servedSerial is the serial number of the certificate the server at addr
// presents.
func servedSerial(t *testing.T, addr string) int64 {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) // only its serial is looked at
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// Reload serves a renewed certificate to new connections, with no
// restart; a broken renewal keeps the one in use.
func TestCertificateReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := admintest.WriteCert(t, dir, 1)
	f := start(t, Options{TLSCert: certFile, TLSKey: keyFile})
	if have := servedSerial(t, f.srv.Addr()); have != 1 {
		t.Fatalf("serial %d, want 1", have)
	}
	admintest.WriteCert(t, dir, 2)
	if have := servedSerial(t, f.srv.Addr()); have != 1 {
		t.Fatalf("serial %d before the reload, want 1", have)
	}
	if err := f.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if have := servedSerial(t, f.srv.Addr()); have != 2 {
		t.Fatalf("serial %d after the reload, want 2", have)
	}
	if err := os.WriteFile(keyFile, []byte("broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Reload(); err == nil {
		t.Fatal("Reload of a broken key: no error")
	}
	if have := servedSerial(t, f.srv.Addr()); have != 2 {
		t.Fatalf("serial %d after a broken renewal, want 2", have)
	}
}
