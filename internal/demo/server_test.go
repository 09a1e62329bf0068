package demo

import (
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestNewServer(t *testing.T) {
	h := http.NotFoundHandler()
	core, logs := observer.New(zapcore.DebugLevel)
	srv := NewServer(h, zap.New(core))

	if srv.Handler == nil {
		t.Error("want Handler set, have nil")
	}
	durations := []struct {
		name       string
		want, have time.Duration
	}{
		{"ReadHeaderTimeout", 5 * time.Second, srv.ReadHeaderTimeout},
		{"ReadTimeout", 30 * time.Second, srv.ReadTimeout},
		{"WriteTimeout", 75 * time.Second, srv.WriteTimeout},
		{"IdleTimeout", 60 * time.Second, srv.IdleTimeout},
	}
	for _, d := range durations {
		if d.want != d.have {
			t.Errorf("%s: want %v, have %v", d.name, d.want, d.have)
		}
	}
	if longest := maxSleepMS * time.Millisecond; srv.WriteTimeout <= longest {
		t.Errorf("WriteTimeout %v does not exceed the longest /sleep %v", srv.WriteTimeout, longest)
	}
	if want, have := 64<<10, srv.MaxHeaderBytes; want != have {
		t.Errorf("MaxHeaderBytes: want %d, have %d", want, have)
	}

	if srv.ErrorLog == nil {
		t.Fatal("want ErrorLog set, have nil")
	}
	srv.ErrorLog.Print("http: TLS handshake error")
	entries := logs.All()
	if want, have := 1, len(entries); want != have {
		t.Fatalf("want %d log entries, have %d", want, have)
	}
	if want, have := zapcore.WarnLevel, entries[0].Level; want != have {
		t.Errorf("want level %v, have %v", want, have)
	}
	if want, have := "http: TLS handshake error", entries[0].Message; want != have {
		t.Errorf("want message %q, have %q", want, have)
	}
}

func TestNewServerNilLogger(t *testing.T) {
	srv := NewServer(http.NotFoundHandler(), nil)
	srv.ErrorLog.Print("discarded") // must not panic
}
