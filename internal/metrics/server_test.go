package metrics

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestIndexLinksMetrics(t *testing.T) {
	s := serve(t, New((&fakeSource{}).Snapshot))

	resp, err := client.Get("http://" + s.Addr() + "/")
	if err != nil {
		t.Fatalf("GET /: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("GET /: %v", err)
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `href="/metrics"`) {
		t.Errorf("GET / = %s %q, want 200 and a link to /metrics", resp.Status, body)
	}

	resp, err = client.Get("http://" + s.Addr() + "/elsewhere")
	if err != nil {
		t.Fatalf("GET /elsewhere: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /elsewhere = %s, want 404", resp.Status)
	}
}

func TestCloseFreesPort(t *testing.T) {
	s, err := Serve("127.0.0.1:0", New((&fakeSource{}).Snapshot), nil)
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
	addr := s.Addr()
	scrape(t, s) // leaves a keep-alive connection for Close to deal with

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s after Close: %v", addr, err)
	}
	ln.Close()
}

func TestServeReportsListenError(t *testing.T) {
	s := serve(t, New((&fakeSource{}).Snapshot))
	_, err := Serve(s.Addr(), New((&fakeSource{}).Snapshot), nil)
	if err == nil || !strings.HasPrefix(err.Error(), "metrics: ") {
		t.Errorf("Serve on a port in use: err = %v, want a metrics: error", err)
	}
}
