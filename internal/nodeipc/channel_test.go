package nodeipc

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/fdtest"
)

// rawPair returns a Channel and its peer as a bare socket, to write and read
// exact bytes.
func rawPair(t *testing.T) (*Channel, *net.UnixConn) {
	t.Helper()
	c, remote, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.FileConn(remote)
	remote.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); nc.Close() })
	return c, nc.(*net.UnixConn)
}

// readLine reads one line from p and the descriptors that came with it.
func readLine(t *testing.T, p *net.UnixConn, br *bytes.Buffer) (string, []int) {
	t.Helper()
	p.SetReadDeadline(time.Now().Add(deadline))
	var fds []int
	for !bytes.Contains(br.Bytes(), []byte{'\n'}) {
		b, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*4))
		n, oobn, _, _, err := p.ReadMsgUnix(b, oob)
		if err != nil {
			t.Fatalf("peer read: %v", err)
		}
		br.Write(b[:n])
		fds = append(fds, parseRights(oob[:oobn])...)
	}
	line, _ := br.ReadString('\n')
	return line, fds
}

func pipeFD(t *testing.T) int {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { r.Close() })
	return int(r.Fd())
}

// waitOpen polls until this process has want descriptors open.
func waitOpen(t *testing.T, want int) {
	t.Helper()
	for end := time.Now().Add(deadline); ; {
		have := fdtest.Open(t)
		if have == want {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%d descriptors open, want %d", have, want)
		}
		time.Sleep(time.Millisecond) // polling, not synchronisation
	}
}

// TestHandleInFlight checks Node's rule: after a handle, nothing but ACKs
// and NACKs is written until the peer acknowledges it; a NACK sends it again,
// three times at most; the channel's duplicate is closed at the end.
func TestHandleInFlight(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answers []string // the peer's answers to the handle
		sends   int      // how often the handle is written
	}{
		{"ack", []string{cmdHandleAck}, 1},
		{"nack then ack", []string{cmdHandleNack, cmdHandleAck}, 2},
		{"nacks exhausted", []string{cmdHandleNack, cmdHandleNack, cmdHandleNack, cmdHandleNack}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, p := rawPair(t)
			fd := pipeFD(t)
			open := fdtest.Open(t)
			go func() {
				for {
					if _, err := c.Recv(); err != nil {
						return
					}
				}
			}()
			if err := c.Send(map[string]int{"n": 1}, fd); err != nil {
				t.Fatal(err)
			}
			if err := c.Send(map[string]int{"n": 2}, -1); err != nil {
				t.Fatal(err)
			}
			var br bytes.Buffer
			for i := 0; i < tc.sends; i++ {
				line, fds := readLine(t, p, &br)
				if want := `{"cmd":"NODE_HANDLE","type":"net.Native","msg":{"n":1}}` + "\n"; line != want || len(fds) != 1 {
					t.Fatalf("send %d: %q with %d fds, want %q with 1", i, line, len(fds), want)
				}
				closeFDs(fds)
				// Held back until the answer: nothing more to read.
				p.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				if n, err := p.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("read %d bytes (%v) before the handle was answered", n, err)
				}
				if _, err := p.Write([]byte(`{"cmd":"` + tc.answers[i] + `"}` + "\n")); err != nil {
					t.Fatal(err)
				}
			}
			if line, fds := readLine(t, p, &br); line != `{"n":2}`+"\n" || len(fds) != 0 {
				t.Errorf("then %q with %d fds, want {\"n\":2}", line, len(fds))
			}
			waitOpen(t, open) // the duplicate is closed
		})
	}
}

func TestSendQueueBound(t *testing.T) {
	c, _ := rawPair(t)
	if err := c.Send(1, pipeFD(t)); err != nil { // never acknowledged
		t.Fatal(err)
	}
	var err error
	for i := 0; i <= MaxQueued && err == nil; i++ {
		err = c.Send(i, -1)
	}
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Send: %v, want ErrQueueFull", err)
	}
	c.Close()
	if err := c.Send(1, -1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v, want ErrClosed", err)
	}
}

type recvResult struct {
	body   string // the message's Body, or the error's text
	handle string
	hasFD  bool
}

// TestRecv feeds Recv exact bytes, some writes carrying a descriptor, and
// checks what it returns, what it answers, and that no descriptor is left.
func TestRecv(t *testing.T) {
	type write struct {
		data string
		fd   bool
	}
	for _, tc := range []struct {
		name    string
		writes  []write
		want    []recvResult // then the final error
		final   error
		answers []string // lines Recv writes back
	}{
		{"two lines in one write", []write{{`{"a":1}` + "\n" + `{"cmd":"NODE_X"}` + "\n", false}},
			[]recvResult{{body: `{"a":1}`}, {body: `{"cmd":"NODE_X"}`}}, io.EOF, nil},
		{"split line", []write{{`{"a":`, false}, {"1}\n", false}},
			[]recvResult{{body: `{"a":1}`}}, io.EOF, nil},
		{"not objects", []write{{"5\n\"s\"\n[1]\nnull\n{\"cmd\":5}\n", false}},
			[]recvResult{{body: "5"}, {body: `"s"`}, {body: "[1]"}, {body: "null"}, {body: `{"cmd":5}`}}, io.EOF, nil},
		{"garbage then a message", []write{{"{oops\n\n{\"a\":1}\n", false}},
			[]recvResult{{body: ErrBadMessage.Error()}, {body: ErrBadMessage.Error()}, {body: `{"a":1}`}}, io.EOF, nil},
		{"handle", []write{{`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"b":2}}` + "\n", true}},
			[]recvResult{{body: `{"b":2}`, handle: HandleSocket, hasFD: true}}, io.EOF, []string{cmdHandleAck}},
		{"handle split, descriptor on its first part", []write{{`{"x":0}` + "\n" + `{"cmd":"NODE_HANDLE",`, true}, {`"type":"net.Native","msg":{"b":2}}` + "\n", false}},
			[]recvResult{{body: `{"x":0}`}, {body: `{"b":2}`, handle: HandleNative, hasFD: true}}, io.EOF, []string{cmdHandleAck}},
		{"handle without its descriptor", []write{{`{"cmd":"NODE_HANDLE","type":"net.Native","msg":{}}` + "\n{\"a\":1}\n", false}},
			[]recvResult{{body: `{"a":1}`}}, io.EOF, []string{cmdHandleNack}},
		{"descriptor on a plain message", []write{{`{"a":1}` + "\n", true}},
			[]recvResult{{body: `{"a":1}`}}, io.EOF, nil},
		{"handle of unknown type", []write{{`{"cmd":"NODE_HANDLE","type":"fs.File","msg":{}}` + "\n", true}},
			[]recvResult{{body: ErrBadMessage.Error()}}, io.EOF, []string{cmdHandleAck}},
		{"handle without msg", []write{{`{"cmd":"NODE_HANDLE","type":"net.Native"}` + "\n", true}},
			[]recvResult{{body: ErrBadMessage.Error()}}, io.EOF, []string{cmdHandleAck}},
		{"ack of nothing", []write{{`{"cmd":"NODE_HANDLE_ACK"}` + "\n" + `{"cmd":"NODE_HANDLE_NACK"}` + "\n", false}},
			nil, io.EOF, nil},
		{"end inside a line", []write{{`{"a":1}` + "\n" + `{"a"`, false}},
			[]recvResult{{body: `{"a":1}`}}, io.ErrUnexpectedEOF, nil},
		{"line too long", []write{{strings.Repeat("x", MaxLine+1), true}},
			nil, ErrLineTooLong, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, p := rawPair(t)
			fd := pipeFD(t)
			open := fdtest.Open(t)
			go func() {
				for _, w := range tc.writes {
					var oob []byte
					if w.fd {
						oob = unix.UnixRights(fd)
					}
					n, _, err := p.WriteMsgUnix([]byte(w.data), oob, nil)
					if err == nil {
						_, err = p.Write([]byte(w.data[n:])) // after a short write
					}
					if err != nil {
						return // the channel gave up reading (too long)
					}
				}
				p.CloseWrite()
			}()
			var have []recvResult
			var final error
			for i := 0; i < 20; i++ {
				m, err := c.Recv()
				if errors.Is(err, ErrBadMessage) {
					have = append(have, recvResult{body: ErrBadMessage.Error()})
					continue
				}
				if err != nil {
					final = err
					break
				}
				have = append(have, recvResult{string(m.Body), m.Handle, m.FD >= 0})
				if m.FD >= 0 {
					unix.Close(m.FD)
				}
			}
			if !errors.Is(final, tc.final) {
				t.Errorf("final error %v, want %v", final, tc.final)
			}
			if len(have) != len(tc.want) {
				t.Fatalf("got %+v, want %+v", have, tc.want)
			}
			for i := range have {
				if have[i] != tc.want[i] {
					t.Errorf("message %d: %+v, want %+v", i, have[i], tc.want[i])
				}
			}
			var br bytes.Buffer
			for _, a := range tc.answers {
				if line, _ := readLine(t, p, &br); line != `{"cmd":"`+a+`"}`+"\n" {
					t.Errorf("answer %q, want %s", line, a)
				}
			}
			c.Close()
			waitOpen(t, open-1) // the channel's own socket is gone too
		})
	}
}

// FuzzRecv: whatever the peer writes, Recv returns messages and errors,
// ends with a final error once the peer is gone, and never panics or hangs.
func FuzzRecv(f *testing.F) {
	for _, s := range []string{
		`{"a":1}` + "\n",
		`{"cmd":"NODE_HANDLE","type":"net.Native","msg":{"cmd":"NODE_CLUSTER","act":"newconn"}}` + "\n",
		`{"cmd":"NODE_HANDLE_ACK"}` + "\n",
		"\n\n{\n",
		`{"cmd":"NODE_CLUSTER","act":"queryServer","seq":"x","port":1e400}` + "\n",
		"\xff\xfe\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, p := rawPair(t)
		drained := make(chan struct{})
		go func() { io.Copy(io.Discard, p); close(drained) }() // Recv's answers
		defer func() { c.Close(); <-drained }()
		go func() {
			p.Write(data)
			p.CloseWrite()
		}()
		for i := 0; ; i++ {
			m, err := c.Recv()
			if err == nil {
				if m.FD != -1 {
					t.Fatalf("descriptor %d from a peer that sent none", m.FD)
				}
				continue
			}
			if errors.Is(err, ErrBadMessage) {
				continue
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("final error %v", err)
			}
			if i > bytes.Count(data, []byte{'\n'})+1 {
				t.Fatalf("%d Recvs for %d lines", i, bytes.Count(data, []byte{'\n'}))
			}
			return
		}
	})
}

// A peer that sends handles and reads nothing cannot grow the answers
// waiting for it without bound: past MaxQueued they are not kept. (A Node
// peer waits for the answer to each handle before it sends the next, so it
// never has more than one waiting.)
func TestAnswersBounded(t *testing.T) {
	c, p := rawPair(t)
	// Fill the socket both ways' buffers, so that the writer blocks and
	// the answers stay queued.
	big := strings.Repeat("x", 64<<10)
	for range 40 {
		if err := c.Send(big, -1); err != nil {
			t.Fatal(err)
		}
	}
	const n = MaxQueued + 100
	got := make(chan error, 1)
	go func() {
		for range n {
			m, err := c.Recv()
			if err != nil {
				got <- err
				return
			}
			if m.FD >= 0 {
				unix.Close(m.FD)
			}
		}
		got <- nil
	}()
	fd := pipeFD(t)
	line := []byte(`{"cmd":"NODE_HANDLE","type":"net.Native","msg":{"cmd":"x"}}` + "\n")
	for i := range n {
		if _, _, err := p.WriteMsgUnix(line, unix.UnixRights(fd), nil); err != nil {
			t.Fatalf("handle %d: %v", i, err)
		}
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(deadline):
		t.Fatalf("%d handles not received within %v", n, deadline)
	}
	c.mu.Lock()
	waiting := len(c.acks)
	c.mu.Unlock()
	if waiting > MaxQueued {
		t.Fatalf("%d answers waiting for a peer that reads nothing, want at most %d", waiting, MaxQueued)
	}
}
