package balancer_test

import (
	"fmt"

	"github.com/prefork/prefork/internal/balancer"
)

// worker stands in for a worker process. Its Load is its open connections;
// it is unavailable while its queue is full.
type worker struct {
	name  string
	conns int64
	full  bool
}

func (w *worker) Load() int64     { return w.conns }
func (w *worker) Available() bool { return !w.full }

// picks returns the names of the next n workers b picks.
func picks(b balancer.Balancer[*worker], n int) []string {
	var names []string
	for range n {
		w, _ := b.Pick()
		names = append(names, w.name)
	}
	return names
}

func Example() {
	a, b, c := &worker{name: "a"}, &worker{name: "b"}, &worker{name: "c"}

	rr, err := balancer.New[*worker]("round-robin")
	if err != nil {
		panic(err)
	}
	rr.Add(a)
	rr.Add(b)
	rr.Add(c)
	fmt.Println(picks(rr, 4))

	// A handoff to b failed because its queue is full: b is skipped
	// until it has room again, and its turn falls to c.
	b.full = true
	fmt.Println(picks(rr, 3))
	b.full = false

	lc := balancer.NewLeastConn[*worker]()
	lc.Add(a)
	lc.Add(b)
	lc.Add(c)
	a.conns, b.conns, c.conns = 4, 1, 1 // b and c tie: they take turns
	fmt.Println(picks(lc, 4))

	_, err = balancer.New[*worker]("random")
	fmt.Println(err)
	// Output:
	// [a b c a]
	// [c c a]
	// [b c b c]
	// balancer: unknown policy "random"
}
