package aggregate

import (
	"errors"
	"slices"
	"time"
)

// Snapshot is a copy of a Table's rows at one moment.
type Snapshot struct {
	// Time is when the snapshot was taken.
	Time time.Time
	// Interval is the time since the snapshot given to Delta; 0 before.
	Interval time.Duration
	// Rows holds one row per key, in the order the keys first appeared,
	// then the Other row if any event overflowed.
	Rows []Row
	// Overflowed is the number of events in the Other row.
	Overflowed uint64
	// UncountedProcesses counts the PIDs left out of rows' Processes
	// (MaxRowProcesses), cumulative.
	UncountedProcesses uint64
}

// Snapshot returns a copy of every row, counters cumulative since the
// Table was created.
func (t *Table) Snapshot() Snapshot {
	var s Snapshot
	t.SnapshotTo(&s)
	return s
}

// SnapshotTo is Snapshot into s, reusing the memory of s.Rows: a display
// that alternates between two Snapshots stops allocating once they have
// grown. s must not be in use elsewhere.
func (t *Table) SnapshotTo(s *Snapshot) {
	rows := s.Rows[:0]
	t.mu.Lock()
	rows = slices.Grow(rows, len(t.rows)+1)
	for _, r := range t.rows {
		rows = append(rows, r.snapshot())
	}
	overflowed := t.other.Events()
	if overflowed > 0 || t.other.Connects > 0 {
		rows = append(rows, t.other.snapshot())
	}
	now, uncounted := t.now(), t.uncounted
	t.gen++
	t.mu.Unlock()
	*s = Snapshot{Time: now, Rows: rows, Overflowed: overflowed, UncountedProcesses: uncounted}
}

// snapshot is r as a Snapshot holds it: its medians, not its histograms.
func (r *Row) snapshot() Row {
	c := *r
	c.Medians, c.hist = r.hist.medians(), nil
	return c
}

// ErrNotEarlier is returned by Delta when prev is not an earlier snapshot
// of the same Table as the receiver.
var ErrNotEarlier = errors.New("aggregate: not an earlier snapshot of the same table")

// Delta sets s.Interval to the time from prev to s and each row's Recent to
// the counts added since prev: rates per second are Recent/Interval (see
// PerSecond). prev must be an earlier snapshot of the same Table;
// otherwise Delta returns ErrNotEarlier and leaves s as it was.
//
// A zero Snapshot as prev stands for an empty table at the zero time: every
// row's Recent becomes its cumulative count, and Interval is meaningless;
// take a first snapshot when tracing starts instead.
//
// Keyed rows are matched by position, which is stable because a Table
// never reorders rows (and Drop takes from prev the rows Expire removed);
// the keys are checked, not looked up. The Other rows are matched with each
// other: once rows expire, new keys take their room, ahead of Other.
func (s *Snapshot) Delta(prev *Snapshot) error {
	rows, other := splitOther(s.Rows)
	prows, pother := splitOther(prev.Rows)
	if len(prows) > len(rows) || s.Time.Before(prev.Time) || (pother != nil && other == nil) {
		return ErrNotEarlier
	}
	for i := range prows {
		r, p := &rows[i], &prows[i]
		if r.Key != p.Key || !r.Counts.covers(&p.Counts) {
			return ErrNotEarlier
		}
	}
	if pother != nil && !other.Counts.covers(&pother.Counts) {
		return ErrNotEarlier
	}
	for i := range rows {
		r := &rows[i]
		r.Recent = r.Counts
		if i < len(prows) {
			r.Recent.sub(&prows[i].Counts)
		}
	}
	if other != nil {
		other.Recent = other.Counts
		if pother != nil {
			other.Recent.sub(&pother.Counts)
		}
	}
	s.Interval = s.Time.Sub(prev.Time)
	return nil
}

// splitOther splits a snapshot's rows into the keyed ones and the Other
// row (last, if any). Once rows expire, new keys take their room and the
// Other row is no longer at the same position in a later snapshot.
func splitOther(rows []Row) ([]Row, *Row) {
	if n := len(rows); n > 0 && rows[n-1].Other {
		return rows[:n-1], &rows[n-1]
	}
	return rows, nil
}

// Drop removes from s the rows of the keys Expire removed (gone, in the
// order Expire returned them), so that s stays an earlier snapshot of the
// table for Delta.
func (s *Snapshot) Drop(gone []Key) {
	if len(gone) == 0 {
		return
	}
	kept, next := s.Rows[:0], 0
	for i := range s.Rows {
		r := &s.Rows[i]
		if next < len(gone) && !r.Other && r.Key == gone[next] {
			next++
			continue
		}
		kept = append(kept, *r)
	}
	clear(s.Rows[len(kept):])
	s.Rows = kept
}

// PerSecond converts a count over s.Interval to a rate; 0 when Interval is.
func (s Snapshot) PerSecond(n uint64) float64 {
	if s.Interval <= 0 {
		return 0
	}
	return float64(n) / s.Interval.Seconds()
}
