package sqlstore

import "time"

// Joining a batch that holds its keys.
//
// On PostgreSQL a batch's first statement locks its key rows, and on a key
// that other replicas also serve it waits there for their batches to
// commit. The calls that queue at this replica meanwhile are on the keys it
// is about to hold, most of them on the one hot key. Left in the queue,
// they wait for this batch to commit, then for their own batch to take
// the lock again behind the other replicas': a whole extra round of the
// lock. So once the locks are granted, the batch takes them in (join):
// every queued op whose key it now holds, up to the batch size, in arrival
// order, after the ops it started with. They are decided against the same
// running totals, under the same locks, exactly as if they had arrived a
// moment earlier.
//
// No new lock is taken for a joined op (taking one now, out of id order,
// could deadlock with another replica's batch), so only ops on keys the
// batch already holds join:
//   - a decision on a held key;
//   - a settlement whose call is on a held key. Its Settlement.KeyID says
//     which key that is, but only as a hint: once the call's row is read,
//     a settlement whose call is on another key leaves the batch again
//     (admitJoined).
//
// Every other op taken from the queue is carried into the next batch,
// ahead of the queue, in the order it arrived; so is one whose caller has
// given up or whose deadline is earlier than the batch's (the batch must
// end by each op's deadline, and it has already set its own). SQLite's one
// writer never waits for a lock, so nothing joins there.

// join takes from the queue the ops that may join the batch ops, which
// holds h's keys, and claims them.
func (s *Store) join(deadline time.Time, h *held, ops []*op) []*op {
	b := s.batch
	if b == nil || !s.dialect.Arrays || s.dialect.LockKey == "" {
		return nil
	}
	var joined []*op
	// The carry is bounded by a batch, so the queue's bound still bounds
	// what waits.
	for len(ops)+len(joined) < b.size && len(b.carry) < b.size {
		var o *op
		select {
		case o = <-b.queue:
		default:
			return joined
		}
		if !joinable(o, h, deadline) || !o.state.CompareAndSwap(opQueued, opStarted) {
			// The batcher claims it in the next batch, or skips it there
			// if its caller has withdrawn it.
			b.carry = append(b.carry, o)
			continue
		}
		joined = append(joined, o)
	}
	return joined
}

// joinable: o's key is held by the batch (a settlement's as its caller
// says), its caller still waits, and the batch ends by o's deadline.
func joinable(o *op, h *held, deadline time.Time) bool {
	if o.ctx.Err() != nil {
		return false
	}
	if dl, ok := o.ctx.Deadline(); ok && dl.Before(deadline) {
		return false
	}
	switch {
	case o.attempt != nil:
		return o.attempt.KeyID != "" && h.keys[o.attempt.KeyID] != nil
	case o.settlement != nil:
		return o.settlement.KeyID != "" && h.keys[o.settlement.KeyID] != nil
	}
	return false
}

// admitJoined drops from joined, back into the carry, a settlement whose
// call (read by callsClockAndDays) is on a key the batch does not hold:
// its caller's hint was wrong. Its call row stays locked until the batch
// commits, which blocks nothing this batch waits for: it takes no lock
// after its calls'.
func (s *Store) admitJoined(h *held, joined []*op) []*op {
	kept := joined[:0]
	for _, o := range joined {
		if o.settlement != nil {
			if c := h.calls[o.settlement.CallID]; c != nil && h.keys[c.keyID] == nil {
				o.state.Store(opQueued) // claimed again by the next batch
				s.batch.carry = append(s.batch.carry, o)
				continue
			}
		}
		kept = append(kept, o)
	}
	return kept
}

// decisions counts the decisions among ops.
func decisions(ops []*op) int {
	n := 0
	for _, o := range ops {
		if o.attempt != nil {
			n++
		}
	}
	return n
}

// settled lists the calls that the ops settle.
func settled(lists ...[]*op) []int64 {
	var ids []int64
	for _, ops := range lists {
		for _, o := range ops {
			if o.settlement != nil {
				ids = append(ids, o.settlement.CallID)
			}
		}
	}
	return ids
}
