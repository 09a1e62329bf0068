package primary

import (
	"errors"
	"testing"
	"time"

	ctl "github.com/prefork/prefork/internal/control"
)

// Reload's options make the request the supervisor's reload reads, and a
// rolled-back canary is ErrRolledBack.
func TestReloadOptions(t *testing.T) {
	req := ctl.Request{Cmd: ctl.CmdReload}
	for _, o := range []ReloadOption{Canary(2, 1500*time.Millisecond), CanaryInsufficient(false), Force()} {
		o(&req)
	}
	if req.Canary == nil || *req.Canary != 2 || req.BakeMS != 1500 || req.Insufficient != ctl.InsufficientContinue || !req.Force {
		t.Fatalf("request %+v", req)
	}
	if err := req.Validate(); err != nil {
		t.Fatal(err)
	}
	err := rolledBack(ctl.Response{Error: "x", Canary: &ctl.CanaryStatus{State: ctl.CanaryRolledBack}}, errors.New("primary: x"))
	if !errors.Is(err, ErrRolledBack) {
		t.Fatalf("%v is not ErrRolledBack", err)
	}
	if err := rolledBack(ctl.Response{Error: "x"}, errors.New("primary: x")); errors.Is(err, ErrRolledBack) {
		t.Fatalf("%v is ErrRolledBack without a canary", err)
	}
}
