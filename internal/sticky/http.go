package sticky

import (
	"bytes"
	"errors"
	"strings"

	"github.com/prefork/prefork/internal/ipc"
)

func init() {
	RegisterKey("cookie", httpKind(findCookie))
	RegisterKey("header", httpKind(findHeader))
	RegisterKey("query", httpKind(findQuery))
}

// httpKind is a kind whose key is named NAME and found in the request
// head by find.
func httpKind(find func(head []byte, name string) (string, bool)) func(string) (Key, error) {
	return func(name string) (Key, error) {
		if name == "" || strings.ContainsAny(name, " \t\r\n;:=&") {
			return Key{}, errors.New("needs a NAME after the colon, without spaces or ;:=&")
		}
		return Key{Peek: true, Find: func(head []byte, _ ipc.Peer) (string, bool) {
			return find(head, name)
		}}, nil
	}
}

// more reports whether a head without the key may still get one: it is
// not complete (no empty line yet) and under MaxPeek.
func more(head []byte) bool {
	return len(head) < MaxPeek && !bytes.Contains(head, []byte("\r\n\r\n")) && !bytes.Contains(head, []byte("\n\n"))
}

// findQuery is the value of the query parameter name in the request
// line's target, undecoded.
func findQuery(head []byte, name string) (string, bool) {
	line, _, complete := bytes.Cut(head, []byte("\n"))
	if !complete {
		return "", len(head) < MaxPeek
	}
	fields := bytes.Fields(line)
	if len(fields) < 2 {
		return "", false
	}
	_, query, _ := bytes.Cut(fields[1], []byte("?"))
	query, _, _ = bytes.Cut(query, []byte("#"))
	for len(query) > 0 {
		var pair []byte
		pair, query, _ = bytes.Cut(query, []byte("&"))
		k, v, _ := bytes.Cut(pair, []byte("="))
		if string(k) == name && len(v) > 0 {
			return string(v), false
		}
	}
	return "", false
}

// findHeader is the value of the first header field name (any case).
func findHeader(head []byte, name string) (string, bool) {
	v := ""
	headerLines(head, name, func(val []byte) bool {
		v = string(val)
		return false
	})
	if v != "" {
		return v, false
	}
	return "", more(head)
}

// findCookie is the value of the cookie name in the Cookie header fields.
func findCookie(head []byte, name string) (string, bool) {
	v := ""
	headerLines(head, "cookie", func(val []byte) bool {
		for len(val) > 0 {
			var c []byte
			c, val, _ = bytes.Cut(val, []byte(";"))
			k, cv, _ := bytes.Cut(bytes.TrimSpace(c), []byte("="))
			if string(k) == name && len(cv) > 0 {
				v = string(bytes.Trim(cv, `"`))
				return false
			}
		}
		return true
	})
	if v != "" {
		return v, false
	}
	return "", more(head)
}

// headerLines calls each with the trimmed value of every complete header
// line of head named name (any case), until each returns false.
func headerLines(head []byte, name string, each func(val []byte) bool) {
	_, rest, ok := bytes.Cut(head, []byte("\n")) // the request line
	for ok {
		var line []byte
		line, rest, ok = bytes.Cut(rest, []byte("\n"))
		if !ok {
			return // incomplete: wait for its end
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			return // end of the head
		}
		k, v, found := bytes.Cut(line, []byte(":"))
		if found && strings.EqualFold(string(bytes.TrimSpace(k)), name) && !each(bytes.TrimSpace(v)) {
			return
		}
	}
}
