package demo

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// serve runs a GET of target through a fresh router and returns the recorder.
func serve(t testing.TB, target string) *httptest.ResponseRecorder {
	t.Helper()
	h := NewRouter(Info{}, zap.NewNop())
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec
}

// decode decodes rec's body into v, rejecting unknown fields.
func decode(t *testing.T, rec *httptest.ResponseRecorder, v any) {
	t.Helper()
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding %q: %v", rec.Body.String(), err)
	}
}

// checkBadParam asserts target is answered 400 with a JSON error naming param.
func checkBadParam(t *testing.T, target, param string) {
	t.Helper()
	rec := serve(t, target)
	if want, have := http.StatusBadRequest, rec.Code; want != have {
		t.Fatalf("GET %s: want status %d, have %d", target, want, have)
	}
	if want, have := "application/json", rec.Header().Get("Content-Type"); want != have {
		t.Errorf("GET %s: want Content-Type %q, have %q", target, want, have)
	}
	var body errorBody
	decode(t, rec, &body)
	if !strings.HasPrefix(body.Error, param+" ") {
		t.Errorf("GET %s: error %q does not name parameter %q", target, body.Error, param)
	}
}
