package httpserve

import (
	"net"
	"net/http"
	"testing"
	"time"
)

// Close ends a request that would never end by itself, within CloseWait,
// and frees the port.
func TestCloseEndsEndlessRequests(t *testing.T) {
	started := make(chan struct{})
	s, err := Listen("127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		close(started)
		<-r.Context().Done() // an event stream: ends only with its client or Close
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-started
	begun := time.Now()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if took := time.Since(begun); took >= CloseWait {
		t.Fatalf("Close took %v: it waited out the endless request", took)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port still taken after Close: %v", err)
	}
	ln.Close()
}
