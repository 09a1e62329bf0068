package handoff

// TargetState is what an upgrade keeps of a target besides its transport's
// descriptors: its counts, and whether the worker paused itself (it does
// not say so again).
type TargetState struct {
	Handed   uint64 // sent, returned ones included
	Returned uint64
	Closed   uint32
	Peers    bool
	Paused   bool
	// Listeners: the worker takes its connections' listener indexes.
	Listeners bool `json:",omitempty"`
}

// State is t's counts, for an upgrade to keep.
func (t *Target) State() TargetState {
	return TargetState{Handed: t.handed.Load(), Returned: t.returned.Load(), Closed: t.closed.Load(),
		Peers: t.peers.Load(), Paused: t.off.Load()&offPaused != 0, Listeners: t.lnIndex.Load()}
}

// RestoreTarget is the target an upgrade kept: in slot, over tr, with st's
// counts.
func RestoreTarget(slot int, tr Transport, st TargetState) *Target {
	t := NewTarget(slot, tr)
	t.handed.Store(st.Handed)
	t.returned.Store(st.Returned)
	t.closed.Store(st.Closed)
	t.peers.Store(st.Peers)
	t.lnIndex.Store(st.Listeners)
	if st.Paused {
		t.off.Store(offPaused)
	}
	return t
}

// FramesOf is t's frame transport, nil if t is reached otherwise.
func FramesOf(t *Target) *Frames {
	if t == nil {
		return nil
	}
	f, _ := t.tr.(*Frames)
	return f
}
