package reaper

import (
	"os/exec"
	"testing"
)

func TestOwned(t *testing.T) {
	var o Owned
	if o.Has(1) {
		t.Error("zero Owned claims pid 1")
	}
	o.Add(1)
	if !o.Has(1) || o.Has(2) {
		t.Error("Add(1): want Has(1) && !Has(2)")
	}
	o.Forget(1)
	o.Forget(1)
	if o.Has(1) {
		t.Error("Forget(1): still claimed")
	}
	if err := o.Start(exec.Command("/nonexistent/prefork-reaper-test")); err == nil {
		t.Error("Start of a missing binary: want an error")
	}
}
