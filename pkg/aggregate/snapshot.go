package aggregate

import (
	"cmp"
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
	// Destinations is set on the result of ByDestination: its keys have
	// PID 0 and an empty Comm.
	Destinations bool
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
		rows = append(rows, *r)
	}
	overflowed := t.other.Events()
	if overflowed > 0 || t.other.Connects > 0 {
		rows = append(rows, t.other)
	}
	now := t.now()
	t.mu.Unlock()
	*s = Snapshot{Time: now, Rows: rows, Overflowed: overflowed}
}

// ErrNotEarlier is returned by Delta when prev is not an earlier snapshot
// of the same Table (or of its destination roll-up) as the receiver.
var ErrNotEarlier = errors.New("aggregate: not an earlier snapshot of the same table")

// Delta sets s.Interval to the time from prev to s and each row's Recent to
// the counts added since prev: rates per second are Recent/Interval (see
// PerSecond). prev must be an earlier snapshot of the same Table, both
// plain or both from ByDestination; otherwise Delta returns ErrNotEarlier
// and leaves s as it was.
//
// A zero Snapshot as prev stands for an empty table at the zero time: every
// row's Recent becomes its cumulative count, and Interval is meaningless;
// take a first snapshot when tracing starts instead.
//
// Rows are matched by position, which is stable because a Table never
// removes or reorders rows; the keys are checked, not looked up.
func (s *Snapshot) Delta(prev *Snapshot) error {
	if len(prev.Rows) > len(s.Rows) || prev.Destinations != s.Destinations ||
		s.Time.Before(prev.Time) {
		return ErrNotEarlier
	}
	for i := range prev.Rows {
		r, p := &s.Rows[i], &prev.Rows[i]
		if r.Key != p.Key || r.Other != p.Other || !r.Counts.covers(&p.Counts) {
			return ErrNotEarlier
		}
	}
	for i := range s.Rows {
		r := &s.Rows[i]
		r.Recent = r.Counts
		if i < len(prev.Rows) {
			r.Recent.sub(&prev.Rows[i].Counts)
		}
	}
	s.Interval = s.Time.Sub(prev.Time)
	return nil
}

// PerSecond converts a count over s.Interval to a rate; 0 when Interval is.
func (s Snapshot) PerSecond(n uint64) float64 {
	if s.Interval <= 0 {
		return 0
	}
	return float64(n) / s.Interval.Seconds()
}

// Total sums every row, the Other row included.
func (s Snapshot) Total() Row {
	var t Row
	for i := range s.Rows {
		t.merge(&s.Rows[i])
	}
	return t
}

// ByDestination sums s over processes: one row per destination (netns,
// family, address, port and the Server flag), keys with PID 0 and an empty
// Comm, Merged set to the number of rows summed, in the order destinations
// first appear in s. The Other row, whose destinations are unknown, stays
// the last row. The result's rows alias nothing in s.
//
// Destinations first appear in the same order in every snapshot of a
// Table, so Delta works between two roll-ups, and rolling up a snapshot on
// which Delta was called sums the Recent counts too.
func (s Snapshot) ByDestination() Snapshot {
	d := Snapshot{
		Time:         s.Time,
		Interval:     s.Interval,
		Overflowed:   s.Overflowed,
		Destinations: true,
	}
	index := make(map[Key]int)
	var other []int
	for i := range s.Rows {
		r := &s.Rows[i]
		if r.Other {
			other = append(other, i)
			continue
		}
		k := r.Key
		k.PID, k.Comm = 0, [16]byte{}
		j, ok := index[k]
		if !ok {
			j = len(d.Rows)
			index[k] = j
			d.Rows = append(d.Rows, Row{Key: k})
		}
		d.Rows[j].merge(r)
		d.Rows[j].Merged++
	}
	for _, i := range other {
		d.Rows = append(d.Rows, s.Rows[i])
	}
	return d
}

// SortKey is what Top ranks rows by.
type SortKey uint8

// The *Rate keys rank by Recent, the counts in the snapshot's Interval;
// rows of equal rate are ranked by the cumulative count.
const (
	ByTimewait      SortKey = iota // timewaits
	ByConnectErrors                // connect() EADDRNOTAVAIL failures
	ByBindErrors                   // bind() EADDRINUSE failures
	ByEvents                       // events of all kinds
	ByBytes                        // bytes sent and received
	ByConnects                     // connect() attempts
	ByTimewaitRate
	ByConnectErrorsRate
	ByBindErrorsRate
	ByEventsRate
	ByBytesRate
	ByConnectsRate
)

var sortKeyNames = [...]string{
	ByTimewait:          "timewait",
	ByConnectErrors:     "connect_errors",
	ByBindErrors:        "bind_errors",
	ByEvents:            "events",
	ByBytes:             "bytes",
	ByConnects:          "connects",
	ByTimewaitRate:      "timewait_rate",
	ByConnectErrorsRate: "connect_errors_rate",
	ByBindErrorsRate:    "bind_errors_rate",
	ByEventsRate:        "events_rate",
	ByBytesRate:         "bytes_rate",
	ByConnectsRate:      "connects_rate",
}

func (k SortKey) String() string {
	if int(k) < len(sortKeyNames) {
		return sortKeyNames[k]
	}
	return "unknown"
}

// ParseSortKey is the inverse of SortKey.String.
func ParseSortKey(s string) (SortKey, bool) {
	for k, name := range sortKeyNames {
		if name == s {
			return SortKey(k), true
		}
	}
	return 0, false
}

// rateOffset maps a *Rate key to its cumulative twin.
const rateOffset = ByTimewaitRate - ByTimewait

func (c *Counts) value(by SortKey) uint64 {
	switch by {
	case ByTimewait:
		return c.Timewait
	case ByConnectErrors:
		return c.ConnectErrors
	case ByBindErrors:
		return c.BindErrors
	case ByEvents:
		return c.Events()
	case ByBytes:
		return c.BytesSent + c.BytesRecv
	case ByConnects:
		return c.Connects
	}
	return 0
}

// Top returns the k rows (k >= 0) of s with the largest by, largest first;
// rows that tie (for a *Rate key, in rate and then in cumulative count)
// keep the order of s, so a refreshing display does not shuffle them. If any row is left out, or s has an
// Other row, one more row flagged Other follows, summing all of them:
// counters, Recent, histograms and time span, with Merged set to the
// number of s's keyed rows it holds. So the result has at most k+1 rows,
// and its totals are those of s. s's Other row is never ranked.
func (s Snapshot) Top(k int, by SortKey) []Row {
	type ranked struct {
		v, tie uint64
		i      int
	}
	order := make([]ranked, 0, len(s.Rows))
	for i := range s.Rows {
		r := &s.Rows[i]
		if r.Other {
			continue
		}
		if by >= ByTimewaitRate {
			order = append(order, ranked{r.Recent.value(by - rateOffset), r.Counts.value(by - rateOffset), i})
		} else {
			order = append(order, ranked{r.Counts.value(by), 0, i})
		}
	}
	slices.SortFunc(order, func(a, b ranked) int {
		if c := cmp.Compare(b.v, a.v); c != 0 {
			return c
		}
		if c := cmp.Compare(b.tie, a.tie); c != 0 {
			return c
		}
		return cmp.Compare(a.i, b.i)
	})

	n := min(max(k, 0), len(order))
	out := make([]Row, n, n+1)
	for j, o := range order[:n] {
		out[j] = s.Rows[o.i]
	}
	other := Row{Other: true}
	folded := false
	for _, o := range order[n:] {
		other.merge(&s.Rows[o.i])
		other.Merged++
		folded = true
	}
	for i := range s.Rows {
		if s.Rows[i].Other {
			other.merge(&s.Rows[i])
			folded = true
		}
	}
	if folded {
		out = append(out, other)
	}
	return out
}
