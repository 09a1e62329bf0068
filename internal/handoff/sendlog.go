package handoff

// logFrames is how many frames sendLog remembers. The socket's send buffer
// holds fewer (see sendLog); if more are untaken anyway (a raised
// net.core.wmem_default), the worker counts as full.
const logFrames = 512

// sendLog measures what a worker has taken from its frame channel's queue.
//
// How deep that queue is: on a socketpair each end is the other's peer, and
// for such connected SEQPACKET sockets Linux does not apply
// net.unix.max_dgram_qlen (that limit is for senders the receiver is not
// connected back to). Only the sender's SO_SNDBUF bounds the queue: each
// frame charges its skb's truesize (768 bytes for a small frame) to the
// sender until the receiver reads it, so a default 212,992-byte buffer
// takes 278 frames, up to 17,792 descriptors, before EAGAIN. Hence
// maxUntaken.
//
// What is taken: SIOCINQ on the receiving end (keep) returns, for
// SEQPACKET, the payload bytes of every frame still queued. Frames leave
// the queue in order, so the bytes sent minus those queued is a prefix of
// the frames sent; the log of the last logFrames frames' cumulative bytes
// and connections turns that prefix into connections, exactly. (SIOCOUTQ on
// the sending end counts truesize, which does not tell connections apart.)
// Guarded by the target's mu.
type sendLog struct {
	bytes     uint64 // payload bytes of the conns frames sent
	conns     uint64 // connections in them
	frames    uint64 // how many
	taken     uint64 // connections out of the queue when last measured
	reclaimed uint64 // of those, connections the supervisor read back
	ends      [logFrames]struct{ bytes, conns uint64 }
}

// add records a frame of n connections and size payload bytes, sent.
func (q *sendLog) add(size, n int) {
	q.bytes += uint64(size)
	q.conns += uint64(n)
	q.ends[q.frames%logFrames] = struct{ bytes, conns uint64 }{q.bytes, q.conns}
	q.frames++
}

// settle updates taken given queued, the payload bytes still in the queue.
func (q *sendLog) settle(queued uint64) {
	if queued > q.bytes {
		// Frames sent outside the handoff (control frames on a channel
		// lent by the worker's control link) are queued too: nothing is
		// known taken.
		return
	}
	out := q.bytes - queued // bytes taken: the first frames' whole
	oldest := q.frames - min(q.frames, logFrames)
	i := q.frames
	for i > oldest && q.ends[(i-1)%logFrames].bytes > out {
		i--
	}
	if i > oldest {
		q.taken = max(q.taken, q.ends[(i-1)%logFrames].conns)
	}
	// Otherwise no frame is taken yet, or more than logFrames frames are
	// queued: the last measure stands, and says no fewer are untaken.
}

// untaken is the connections sent and not taken, as last measured.
func (q *sendLog) untaken() int { return int(q.conns - q.taken) }
