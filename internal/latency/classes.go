package latency

import "sync/atomic"

// Class is how a request ended, as a worker's heartbeat counts it: by the
// class of its response's status, or a panic of its handler.
type Class uint8

// Classes of outcome. 1xx and anything below 300 count as ClassOK.
const (
	ClassOK          Class = iota // 1xx, 2xx
	ClassRedirect                 // 3xx
	ClassClientError              // 4xx
	ClassServerError              // 5xx
	ClassPanic                    // the handler panicked (not http.ErrAbortHandler)
	NumClasses
)

// ClassOf is the class of a response with status code.
func ClassOf(code int) Class {
	switch {
	case code >= 500:
		return ClassServerError
	case code >= 400:
		return ClassClientError
	case code >= 300:
		return ClassRedirect
	}
	return ClassOK
}

// Outcomes counts requests by Class, cumulative since the recorder
// started.
type Outcomes [NumClasses]uint64

// Total is the number of requests counted.
func (o *Outcomes) Total() uint64 {
	var n uint64
	for _, v := range o {
		n += v
	}
	return n
}

// Errors is the number of requests that failed on the server's side:
// 5xx answers and handler panics.
func (o *Outcomes) Errors() uint64 { return o[ClassServerError] + o[ClassPanic] }

// Add adds b to o, class by class.
func (o *Outcomes) Add(b *Outcomes) {
	for i, v := range b {
		o[i] += v
	}
}

// Since returns what was counted between old and o, two snapshots of one
// recorder; o itself if any class went down (the worker restarted).
func (o *Outcomes) Since(old *Outcomes) Outcomes {
	var d Outcomes
	for i, v := range o {
		if v < old[i] {
			return *o
		}
		d[i] = v - old[i]
	}
	return d
}

// OutcomeRecorder counts requests by Class. It is safe for concurrent use,
// does not allocate, and its zero value is ready.
type OutcomeRecorder struct {
	n [NumClasses]atomic.Uint64
}

// Count counts one request of class c.
func (r *OutcomeRecorder) Count(c Class) { r.n[c%NumClasses].Add(1) }

// Snapshot returns what r has counted.
func (r *OutcomeRecorder) Snapshot() Outcomes {
	var o Outcomes
	for i := range r.n {
		o[i] = r.n[i].Load()
	}
	return o
}
