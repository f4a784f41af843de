package aggregate

import (
	"testing"
	"time"

	"github.com/twtrace/twtrace/pkg/workload"
)

// TestExpire: rows that counted nothing since the snapshot idle snapshots
// ago go, in order; the
// snapshot taken before drops them and stays the prev of the next Delta;
// their memory serves new keys, and a full table has room again.
func TestExpire(t *testing.T) {
	tab := New(3)
	a, b, c := timewait(1, "a", "10.0.0.9:80", 1, 0), timewait(2, "b", "10.0.0.9:80", 1, 0), timewait(3, "c", "10.0.0.9:80", 1, 0)
	tab.Add(&a)
	tab.Add(&b)
	tab.Add(&c)
	prev := tab.Snapshot() // gen 1
	tab.Add(&b)
	mid := tab.Snapshot() // gen 2: b counted in gen 1
	if err := mid.Delta(&prev); err != nil {
		t.Fatal(err)
	}
	if gone := tab.Expire(2); len(gone) != 0 {
		t.Fatalf("Expire(2) removed %v: every row counted since the snapshot two ago", gone)
	}
	tab.Add(&c)
	last := tab.Snapshot() // gen 3: a counted last before snapshot 1, b before 2, c before 3
	gone := tab.Expire(1)
	if len(gone) != 2 || gone[0] != KeyOf(&a) || gone[1] != KeyOf(&b) {
		t.Fatalf("Expire(1) removed %v, want a's and b's keys", gone)
	}
	if tab.Len() != 1 || tab.Has(KeyOf(&a)) || !tab.Has(KeyOf(&c)) {
		t.Fatalf("after Expire: len %d, has a %v, has c %v", tab.Len(), tab.Has(KeyOf(&a)), tab.Has(KeyOf(&c)))
	}
	last.Drop(gone)
	if len(last.Rows) != 1 || last.Rows[0].Key != KeyOf(&c) || last.Rows[0].Timewait != 2 {
		t.Fatalf("dropped snapshot rows %+v, want c's alone with 2 timewaits", last.Rows)
	}
	// a comes back as a new row, counted from zero; d fits too.
	d := timewait(4, "d", "10.0.0.9:80", 1, time.Second)
	tab.Add(&a)
	tab.Add(&d)
	next := tab.Snapshot()
	if err := next.Delta(&last); err != nil {
		t.Fatalf("Delta after Drop: %v", err)
	}
	if len(next.Rows) != 3 || next.Overflowed != 0 {
		t.Fatalf("rows %d overflowed %d, want 3 and 0", len(next.Rows), next.Overflowed)
	}
	if r := find(t, next.Rows, KeyOf(&a)); r.Timewait != 1 || r.Recent.Timewait != 1 || r.Processes != 1 {
		t.Errorf("a again: timewait %d recent %d processes %d, want 1 1 1", r.Timewait, r.Recent.Timewait, r.Processes)
	}
	if r := find(t, next.Rows, KeyOf(&c)); r.Recent.Timewait != 0 || r.Timewait != 2 {
		t.Errorf("c: timewait %d recent %d, want 2 0", r.Timewait, r.Recent.Timewait)
	}
}

// TestExpireConnects: connect counts keep a row alive as events do.
func TestExpireConnects(t *testing.T) {
	tab := New(4)
	a := timewait(1, "a", "10.0.0.9:80", 1, 0)
	k := KeyOf(&a)
	p := workload.Process{PID: 1}
	tab.AddConnects(k, &p, 5)
	for range 3 {
		tab.Snapshot()
		tab.AddConnects(k, &p, 1)
	}
	if gone := tab.Expire(1); len(gone) != 0 {
		t.Fatalf("a row counting connects expired: %v", gone)
	}
	tab.Snapshot()
	tab.Snapshot()
	if gone := tab.Expire(1); len(gone) != 1 {
		t.Fatalf("quiet row kept: %v", gone)
	}
}

// TestExpireWithOther: a full table folds into its Other row; rows expire
// and new keys take their room, ahead of Other in the next snapshot: the
// delta still matches Other with Other (the agent's soak stopped on this).
func TestExpireWithOther(t *testing.T) {
	tab := New(2)
	a, b, c := timewait(1, "a", "10.0.0.9:80", 1, 0), timewait(2, "b", "10.0.0.9:80", 1, 0), timewait(3, "c", "10.0.0.9:80", 1, 0)
	tab.Add(&a)
	tab.Add(&b)
	tab.Add(&c) // full: Other
	prev := tab.Snapshot()
	tab.Add(&b)
	tab.Add(&c) // Other again
	mid := tab.Snapshot()
	if err := mid.Delta(&prev); err != nil {
		t.Fatal(err)
	}
	gone := tab.Expire(1) // a: nothing since before the snapshot one ago
	if len(gone) != 1 || gone[0] != KeyOf(&a) {
		t.Fatalf("Expire removed %v, want a's key", gone)
	}
	mid.Drop(gone)
	d := timewait(4, "d", "10.0.0.9:80", 1, 0)
	tab.Add(&d) // a's room
	tab.Add(&c) // still Other: c never got a row
	next := tab.Snapshot()
	if err := next.Delta(&mid); err != nil {
		t.Fatalf("Delta after a new key took an expired row's room: %v", err)
	}
	o := next.Rows[len(next.Rows)-1]
	if !o.Other || o.Timewait != 3 || o.Recent.Timewait != 1 {
		t.Errorf("Other row %+v: want 3 timewaits, 1 recent", o.Counts)
	}
	if r := find(t, next.Rows, KeyOf(&d)); r.Recent.Timewait != 1 {
		t.Errorf("d's recent timewaits %d, want 1", r.Recent.Timewait)
	}
}
