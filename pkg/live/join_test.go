package live

import (
	"math/rand/v2"
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
	if _, ok := j.find(&found, 9); ok || j.n != 1 {
		t.Errorf("after joinHold: %d entries, want only the young one", j.n)
	}
}

// An entry whose time is ahead of the clock (an event's time converted
// from the kernel's) is young, not 65,535 seconds old.
func TestJoinPruneEventAhead(t *testing.T) {
	t0 := time.Unix(1000, 0)
	j := testJoin(10, t0)
	ahead := tup(1)
	j.add(&ahead, 0, t0.Add(1500*time.Millisecond))
	scan := j.beginScan()
	j.prune(scan, t0, t0)
	if _, ok := j.find(&ahead, scan); !ok {
		t.Fatal("an entry a second and a half ahead of the clock was pruned")
	}
}

// The open-addressed table against a map, through random adds, finds,
// prunes and renumberings, growing from its first size: every entry the
// map has is found with its row, and no other.
func TestJoinTableMatchesMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	t0 := time.Unix(1000, 0)
	j := testJoin(0, t0)
	model := map[tuple]int32{}
	check := func(step int) {
		t.Helper()
		if j.n != len(model) {
			t.Fatalf("step %d: %d entries, want %d", step, j.n, len(model))
		}
		for tp, row := range model {
			if r, ok := j.find(&tp, j.scan); !ok || r != row {
				t.Fatalf("step %d: find %v = %d, %v; want %d", step, tp, r, ok, row)
			}
		}
	}
	for step := range 40 {
		for range rng.IntN(3000) {
			tp := tup(uint16(rng.IntN(6000)))
			row := int32(rng.IntN(50))
			j.add(&tp, row, t0)
			model[tp] = row
		}
		check(step)
		// Renumber: drop the odd rows, halve the even ones.
		if step%5 == 4 {
			to := make([]int32, 50)
			for r := range to {
				to[r] = int32(r / 2)
				if r%2 == 1 {
					to[r] = -1
				}
			}
			j.renumber(to)
			for tp, row := range model {
				if to[row] < 0 {
					delete(model, tp)
				} else {
					model[tp] = to[row]
				}
			}
			check(step)
		}
		// A complete scan that finds a random half.
		scan := j.beginScan()
		for tp := range model {
			if rng.IntN(2) == 0 {
				j.find(&tp, scan)
				continue
			}
			delete(model, tp)
		}
		j.prune(scan, t0.Add(10*time.Second), t0.Add(10*time.Second))
		check(step)
	}
	if len(j.slots) <= 1024 {
		t.Fatalf("the table never grew: %d slots", len(j.slots))
	}
}

// The join holds what the namespaces' tcp_max_tw_buckets allow, at least
// DefaultJoinEntries, unless its size was set.
func TestJoinMax(t *testing.T) {
	j := newJoin(0)
	if j.max != DefaultJoinEntries {
		t.Fatalf("max %d", j.max)
	}
	j.setMax(2_000_000)
	if j.max != 2_000_000 {
		t.Fatalf("max %d after setMax(2M)", j.max)
	}
	j.setMax(1000)
	if j.max != DefaultJoinEntries {
		t.Fatalf("max %d after setMax(1000)", j.max)
	}
	j = newJoin(5)
	j.setMax(2_000_000)
	if j.max != 5 {
		t.Fatalf("a configured max became %d", j.max)
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
		if j.n == DefaultJoinEntries {
			clear(j.slots)
			j.n = 0
		}
	}
}

// BenchmarkJoinFind looks up each of a quarter of a million timewait
// sockets, as a frame's attribution does (a group's addresses hashed
// once, the ports mixed in per socket): no allocation.
func BenchmarkJoinFind(b *testing.B) {
	const n, dests = 250_000, 40
	j := newJoin(0)
	t0 := time.Now()
	bases := make([]uint64, dests)
	for d := range dests {
		bases[d] = j.base(7, netip.MustParseAddr("10.0.0.1"), netip.AddrFrom4([4]byte{10, 0, 1, byte(d)}))
	}
	for i := range n {
		tp := tuple{netns: 7, saddr: netip.MustParseAddr("10.0.0.1"), daddr: netip.AddrFrom4([4]byte{10, 0, 1, byte(i % dests)}),
			sport: uint16(1024 + i/dests), dport: 80}
		j.add(&tp, int32(i%100), t0)
	}
	b.ReportAllocs()
	for b.Loop() {
		found := 0
		for i := range n {
			if _, ok := j.findKey(key(bases[i%dests], uint16(1024+i/dests), 80), 1); ok {
				found++
			}
		}
		if found != n {
			b.Fatalf("found %d of %d", found, n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
	b.ReportMetric(float64(len(j.slots)*16)/(1<<20), "MiB")
}
