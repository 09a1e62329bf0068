package control

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// ctl reload passes its canary flags in the request, waits past the bake
// for the answer, and refuses bad values, or the flags with another
// command, with exit 2 naming the flag.
func TestCtlReloadCanary(t *testing.T) {
	checkLeaks(t)
	var mu sync.Mutex
	var got Request
	_, path := serve(t, HandlerFunc(func(_ context.Context, req Request) Response {
		mu.Lock()
		got = req
		mu.Unlock()
		return Response{Error: "reload: canary of generation 2 rolled back to generation 1 after 2s: fail: error rate 20.00%"}
	}), nil)
	code, _, errOut := ctlRun(t, t.Context(), "-control", path, "reload", "-canary", "2", "-bake", "1500ms", "-canary-insufficient", "continue", "-force")
	if code != 1 || !strings.Contains(errOut, "rolled back") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	mu.Lock()
	if got.Canary == nil || *got.Canary != 2 || got.Bake() != 1500*time.Millisecond || got.Insufficient != InsufficientContinue || !got.Force {
		t.Fatalf("request %+v", got)
	}
	mu.Unlock()
	code, _, _ = ctlRun(t, t.Context(), "-control", path, "reload")
	mu.Lock()
	if code != 1 || got.Canary != nil || got.BakeMS != 0 {
		t.Fatalf("reload without flags sent %+v: the supervisor's defaults must apply", got)
	}
	mu.Unlock()
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"reload", "-canary", "-1"}, "-canary"},
		{[]string{"reload", "-canary", "x"}, "-canary"},
		{[]string{"reload", "-bake", "0s"}, "-bake"},
		{[]string{"reload", "-canary-insufficient", "maybe"}, "-canary-insufficient"},
		{[]string{"status", "-canary", "1"}, "-canary"},
		{[]string{"scale", "2", "-force"}, "-force"},
	} {
		code, _, errOut := ctlRun(t, t.Context(), append([]string{"-control", path}, tc.args...)...)
		if code != 2 || !strings.Contains(errOut, tc.flag) {
			t.Errorf("ctl %v: exit %d, %q; want 2 naming %s", tc.args, code, errOut, tc.flag)
		}
	}
}

// ctl status shows a canary: its state, both generations side by side,
// and the verdict.
func TestCtlStatusCanary(t *testing.T) {
	st := *testStatus
	st.Canary = &CanaryStatus{State: CanaryBaking, Slots: []int{1}, Generation: 4, OldGeneration: 3, BakeS: 30, BakedS: 12,
		Old: GenFigures{Workers: 2, Requests: 1000, ErrorRate: 0, P99S: 0.002},
		New: GenFigures{Workers: 1, Requests: 500, Errors: 100, ErrorRate: 0.2, P99S: -1}}
	var b strings.Builder
	if err := WriteStatus(&b, &st); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"canary baking: slots [1], generation 4 against 3, baked 12.0s of 30.0s",
		"3 (old)     2        1000      0       0.00    2.00ms", "4 (canary)  1        500       100     20.00   -"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
}
