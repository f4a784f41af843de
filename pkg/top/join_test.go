package top

import (
	"net/netip"
	"testing"
	"time"
)

func tup(sport uint16) tuple {
	return tuple{netns: 7, saddr: netip.MustParseAddr("10.0.0.1"), sport: sport,
		daddr: netip.MustParseAddr("10.0.0.2"), dport: 80}
}

func TestJoinLookupExpireEvict(t *testing.T) {
	j := newJoin(3)
	t0 := time.Unix(1000, 0)
	a, b, c, d := tup(1), tup(2), tup(3), tup(4)
	j.add(&a, 0, t0)
	j.add(&b, 1, t0.Add(time.Second))
	j.add(&c, 2, t0.Add(2*time.Second))
	if r, ok := j.lookup(&b); !ok || r != 1 {
		t.Fatalf("lookup b = %d, %v; want 1", r, ok)
	}
	other := b
	other.netns = 8
	if _, ok := j.lookup(&other); ok {
		t.Fatal("a tuple of another namespace joined")
	}
	j.add(&d, 3, t0.Add(3*time.Second)) // full: a goes
	if _, ok := j.lookup(&a); ok || j.evicted != 1 {
		t.Fatalf("a still joined or evicted = %d, want gone and 1", j.evicted)
	}
	j.expire(t0.Add(joinHold + 1500*time.Millisecond)) // b (at 1 s) is 65.5 s old
	if _, ok := j.lookup(&b); ok {
		t.Fatal("b outlived joinHold")
	}
	if r, ok := j.lookup(&c); !ok || r != 2 || j.n != 2 || j.evicted != 1 {
		t.Fatalf("c = %d, %v with %d entries, %d evicted; want 2, true, 2, 1", r, ok, j.n, j.evicted)
	}
}

// A port reused toward the same destination within the minute: the newer
// entry owns the tuple, and the older one leaving does not unjoin it.
func TestJoinReusedTuple(t *testing.T) {
	j := newJoin(10)
	t0 := time.Unix(1000, 0)
	a := tup(1)
	j.add(&a, 0, t0)
	j.add(&a, 5, t0.Add(30*time.Second))
	j.expire(t0.Add(joinHold + time.Second))
	if r, ok := j.lookup(&a); !ok || r != 5 {
		t.Fatalf("lookup = %d, %v; want 5", r, ok)
	}
	j.expire(t0.Add(30*time.Second + joinHold + time.Second))
	if _, ok := j.lookup(&a); ok || j.n != 0 || len(j.index) != 0 {
		t.Fatalf("entries left: %d, index %d", j.n, len(j.index))
	}
}

// The ring grows on demand up to max and wraps correctly.
func TestJoinGrowAndWrap(t *testing.T) {
	j := newJoin(5000)
	t0 := time.Unix(1000, 0)
	for i := range 12000 {
		tp := tup(uint16(i))
		j.add(&tp, int32(i), t0)
	}
	if j.n != 5000 || len(j.index) != 5000 || j.evicted != 7000 {
		t.Fatalf("n=%d index=%d evicted=%d; want 5000, 5000, 7000", j.n, len(j.index), j.evicted)
	}
	for i := 7000; i < 12000; i++ {
		tp := tup(uint16(i))
		if r, ok := j.lookup(&tp); !ok || r != int32(i) {
			t.Fatalf("lookup %d = %d, %v", i, r, ok)
		}
	}
}

func BenchmarkJoinAdd(b *testing.B) {
	j := newJoin(DefaultJoinEntries)
	t0 := time.Unix(1000, 0)
	b.ReportAllocs()
	for i := range b.N {
		tp := tup(uint16(i))
		tp.netns = uint32(i >> 16)
		j.add(&tp, 1, t0)
	}
}
