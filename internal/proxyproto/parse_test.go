package proxyproto

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/prefork/prefork/internal/filemap"
)

func TestDocNamesEveryFile(t *testing.T) { filemap.Check(t, ".") }

func TestParse(t *testing.T) {
	v2 := "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\x7f\x00\x00\x01\x1f\x90\x00\x50"
	v26 := "\r\n\r\n\x00\r\nQUIT\n\x21\x21\x00\x24" + "\x20\x01\x0d\xb8" + string(make([]byte, 12)) + string(make([]byte, 16)) + "\x00\x07\x00\x50"
	for _, c := range []struct {
		in   string
		n    int
		want string
		err  error
	}{
		{"PROXY TCP4 192.0.2.1 127.0.0.1 8080 80\r\nGET", 40, "192.0.2.1:8080", nil},
		{"PROXY TCP6 2001:db8::1 ::1 7 80\r\n", 33, "[2001:db8::1]:7", nil},
		{"PROXY UNKNOWN\r\n", 15, "invalid AddrPort", nil},
		{v2 + "GET", 28, "192.0.2.1:8080", nil},
		{v26, 52, "[2001:db8::]:7", nil},
		{"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00", 16, "invalid AddrPort", nil}, // LOCAL
		{"PROXY TCP4 192.0.2.1", 0, "", ErrIncomplete},
		{v2[:20], 0, "", ErrIncomplete},
		{"\r\n\r\n", 0, "", ErrIncomplete},
		{"GET / HTTP/1.1\r\n", 0, "", ErrInvalid},
		{"PROXY TCP4 192.0.2.1 x 1\r\n", 0, "", ErrInvalid},
		{"PROXY TCP4 ::1 ::1 1 2\r\n", 0, "", ErrInvalid},
		{"PROXY TCP4 192.0.2.1 127.0.0.1 99999 80\r\n", 0, "", ErrInvalid},
		{"PROXY " + string(make([]byte, 120)), 0, "", ErrInvalid},
		{"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c", 0, "", ErrInvalid},
		{"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff", 0, "", ErrInvalid},
		{"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x02ab", 0, "", ErrInvalid},
		{"\r\nX", 0, "", ErrInvalid},
	} {
		n, src, err := Parse([]byte(c.in))
		if !errors.Is(err, c.err) || (err == nil && (n != c.n || src.String() != c.want)) {
			t.Errorf("Parse(%q) = %d, %v, %v; want %d, %s, %v", c.in, n, src, err, c.n, c.want, c.err)
		}
	}
}

func TestTrust(t *testing.T) {
	tr, err := ParseTrust("10.0.0.0/8, 192.0.2.7,::1")
	if err != nil {
		t.Fatal(err)
	}
	for a, want := range map[string]bool{"10.1.2.3": true, "192.0.2.7": true, "192.0.2.8": false, "::1": true, "::ffff:10.0.0.1": true, "11.0.0.1": false} {
		if have := tr.Allows(netip.MustParseAddr(a)); have != want {
			t.Errorf("%s: %v, want %v", a, have, want)
		}
	}
	if _, err := ParseTrust("10.0.0.0/33"); err == nil {
		t.Error("bad CIDR accepted")
	}
	if empty, _ := ParseTrust(""); !empty.Allows(netip.MustParseAddr("1.2.3.4")) {
		t.Error("no -proxy-from should trust every source")
	}
}
