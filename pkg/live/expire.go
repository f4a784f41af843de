package live

import (
	"time"
)

// twCount is the timewait entries toward one destination from one source
// address: n cumulative, prev at the last frame, frame the last frame in
// which it grew.
type twCount struct {
	n, prev uint64
	frame   uint64
}

// minExpire: rows must outlive the timewait sockets they hold (60 s),
// with a frame of slack.
const minExpire = time.Minute

// expire drops what has been quiet for cfg.Expire: rows (with their
// owners and join entries), per-destination timewait counters. It runs
// every quarter of cfg.Expire, between frames: the previous snapshot
// drops the same rows, so the next frame's deltas stay exact.
func (s *session) expire() {
	if s.cfg.Expire <= 0 {
		return
	}
	idle := uint64(max(s.cfg.Expire, minExpire) / s.cfg.Interval)
	if s.frames-s.expired < max(idle/4, 1) {
		return
	}
	s.expired = s.frames
	gone := s.table.Expire(idle)
	s.prev.Drop(gone)
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, c := range s.twDest {
		if s.frames-c.frame > idle {
			delete(s.twDest, k)
		}
	}
	for k := range s.owners {
		if !s.table.Has(k) {
			delete(s.owners, k)
		}
	}
	s.compactJoinKeys()
}

// compactJoinKeys forgets the join's keys whose row is gone, with their
// entries (a row quiet for a minute holds no timewait socket), and
// renumbers the rest; s.mu is held.
func (s *session) compactJoinKeys() {
	renumber := make([]int32, len(s.keys))
	kept := s.keys[:0]
	for i, k := range s.keys {
		if !s.table.Has(k) {
			renumber[i] = -1
			delete(s.keyIdx, k)
			continue
		}
		renumber[i] = int32(len(kept))
		s.keyIdx[k] = renumber[i]
		kept = append(kept, k)
	}
	if len(kept) == len(s.keys) {
		return
	}
	clear(s.keys[len(kept):])
	s.keys = kept
	s.join.renumber(renumber)
}
