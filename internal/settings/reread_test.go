package settings

import (
	"os"
	"testing"
	"time"
)

// A reload applies what it can and lists the rest with what it needs.
func TestReload(t *testing.T) {
	path := writeConfig(t, "workers = 2\ngrace = \"5s\"\nmode = \"rr\"\n")
	st, err := Parse([]string{"-config", path, "-max-crashes", "3"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("workers = 4\ngrace = \"9s\"\nmode = \"shared\"\nqueue-max = 7\nmax-crashes = 8\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	next, err := st.Reread()
	if err != nil {
		t.Fatal(err)
	}
	have, changes, err := st.Reload(next)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"workers": NeedsNothing, "grace": NeedsNothing, "mode": NeedsRestart, "queue-max": NeedsUpgrade}
	if len(changes) != len(want) {
		t.Errorf("changes %v, want %v (max-crashes is the command line's)", changes, want)
	}
	for _, c := range changes {
		if n, ok := want[c.Key]; !ok || n != c.Needs {
			t.Errorf("change %v needs %q; want %q", c, c.Needs, n)
		}
	}
	if have.Workers != 4 || have.Grace != 9*time.Second || have.Mode != "rr" || have.QueueMax != DefaultQueueMax || have.MaxCrashes != 3 {
		t.Errorf("reloaded: %+v", have)
	}
	if have.ConfigFile() != path {
		t.Errorf("the reloaded settings lost their file: %q", have.ConfigFile())
	}
	// Applied alone, a setting the running ones rule out is refused.
	if err := os.WriteFile(path, []byte("worker-protocol = \"plain\"\nmode = \"shared\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	plain, err := st.Reread()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("worker-protocol = \"prefork\"\nmode = \"shared\"\nmax-requests = 10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	next, err = plain.Reread()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := plain.Reload(next); err == nil {
		t.Error("max-requests applied to plain workers, whose protocol only a restart changes")
	}
	if _, err := (Settings{}).Reread(); err != ErrNoConfigFile {
		t.Errorf("Reread without a file: %v", err)
	}
}
