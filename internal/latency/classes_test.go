package latency

import "testing"

func TestOutcomes(t *testing.T) {
	for code, want := range map[int]Class{100: ClassOK, 200: ClassOK, 204: ClassOK, 301: ClassRedirect, 404: ClassClientError, 499: ClassClientError, 500: ClassServerError, 503: ClassServerError} {
		if have := ClassOf(code); have != want {
			t.Errorf("ClassOf(%d) = %d, want %d", code, have, want)
		}
	}
	var r OutcomeRecorder
	for _, c := range []Class{ClassOK, ClassOK, ClassServerError, ClassPanic} {
		r.Count(c)
	}
	old := r.Snapshot()
	r.Count(ClassServerError)
	now := r.Snapshot()
	if d := now.Since(&old); d.Total() != 1 || d.Errors() != 1 {
		t.Fatalf("since: %v, want one 5xx", d)
	}
	if now.Total() != 5 || now.Errors() != 3 {
		t.Fatalf("%v: want 5 requests, 3 errors", now)
	}
	// A restarted worker's counts go down: Since is the new counts.
	restarted := Outcomes{ClassOK: 1}
	if d := restarted.Since(&now); d != restarted {
		t.Fatalf("since after a restart: %v", d)
	}
	var sum Outcomes
	sum.Add(&now)
	sum.Add(&restarted)
	if sum.Total() != 6 {
		t.Fatalf("sum %v", sum)
	}
}
