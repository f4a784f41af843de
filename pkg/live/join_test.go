package live

import (
	"net/netip"
	"testing"
	"time"
)

func tup(sport uint16) tuple {
	return tuple{netns: 7, saddr: netip.MustParseAddr("10.0.0.1"), sport: sport,
		daddr: netip.MustParseAddr("10.0.0.2"), dport: 80}
}

// testJoin is a join whose clock starts an hour before t0, as newJoin's
// starts an hour before now.
func testJoin(max int, t0 time.Time) *join {
	j := newJoin(max)
	j.epoch = t0.Add(-time.Hour)
	return j
}

func TestJoinFindAndRefuse(t *testing.T) {
	t0 := time.Unix(1000, 0)
	j := testJoin(3, t0)
	a, b, c, d := tup(1), tup(2), tup(3), tup(4)
	j.add(&a, 0, t0)
	j.add(&b, 1, t0)
	j.add(&c, 2, t0)
	if r, ok := j.find(&b, j.beginScan()); !ok || r != 1 {
		t.Fatalf("find b = %d, %v; want 1", r, ok)
	}
	other := b
	other.netns = 8
	if _, ok := j.find(&other, 1); ok {
		t.Fatal("a tuple of another namespace joined")
	}
	j.add(&d, 3, t0) // full: refused, counted
	if _, ok := j.find(&d, 1); ok || j.refused != 1 {
		t.Fatalf("d joined or refused = %d; want refused, 1", j.refused)
	}
	j.add(&a, 9, t0) // a port reused toward the same destination: replaced
	if r, ok := j.find(&a, 1); !ok || r != 9 || j.refused != 1 {
		t.Fatalf("find a = %d, %v, refused %d; want 9, true, 1", r, ok, j.refused)
	}
}

// Entries a complete scan did not find are dropped once they are older
// than the scan by a second (their socket is gone); younger ones and found
// ones stay, until joinHold.
func TestJoinPrune(t *testing.T) {
	t0 := time.Unix(1000, 0)
	j := testJoin(10, t0)
	gone, found, young, late := tup(1), tup(2), tup(3), tup(4)
	j.add(&gone, 0, t0)
	j.add(&found, 1, t0)
	j.add(&young, 2, t0.Add(10*time.Second))
	scanStart := t0.Add(10 * time.Second)
	scan := j.beginScan()
	j.add(&late, 3, t0) // an old event read while the scan runs
	j.find(&found, scan)
	j.prune(scan, scanStart, scanStart)
	if _, ok := j.find(&gone, 8); ok {
		t.Error("an entry the scan did not find survived")
	}
	if _, ok := j.find(&found, 8); !ok {
		t.Error("an entry the scan found was dropped")
	}
	if _, ok := j.find(&young, 8); !ok {
		t.Error("an entry younger than the scan was dropped")
	}
	if _, ok := j.find(&late, 8); !ok {
		t.Error("an entry made while the scan ran was dropped")
	}
	j.prune(j.beginScan(), scanStart, t0.Add(joinHold+2*time.Second))
	if _, ok := j.find(&found, 9); ok || len(j.index) != 1 {
		t.Errorf("after joinHold: %d entries, want only the young one", len(j.index))
	}
}

func BenchmarkJoinAdd(b *testing.B) {
	j := newJoin(DefaultJoinEntries)
	t0 := time.Now()
	b.ReportAllocs()
	for i := range b.N {
		tp := tup(uint16(i))
		tp.netns = uint32(i >> 16)
		j.add(&tp, 1, t0)
		if len(j.index) == DefaultJoinEntries {
			clear(j.index)
		}
	}
}
