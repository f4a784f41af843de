package aggregate

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/twtrace/twtrace/pkg/event"
)

// randomEvent draws from a small space so that keys repeat.
func randomEvent(rng *rand.Rand, at time.Duration) event.Event {
	addrs := []netip.Addr{
		netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3"),
		netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("2001:db8::3"),
	}
	d := addrs[rng.IntN(len(addrs))]
	e := event.Event{
		Time:  t0.Add(at),
		Kind:  event.Kind(1 + rng.IntN(3)),
		PID:   uint32(1 + rng.IntN(8)),
		Comm:  comm([]string{"curl", "java"}[rng.IntN(2)]),
		Netns: uint32(netns + rng.IntN(2)),
		IPv6:  d.Is6(),
		Daddr: d,
		Dport: uint16(80 + rng.IntN(3)),
		Sport: uint16(30000 + rng.IntN(1000)),
		Role:  event.Role(rng.IntN(3)),
	}
	if rng.IntN(4) == 0 {
		e.Sport = uint16(443 + rng.IntN(2)) // a server's local port
	}
	if e.Kind == event.KindTimewait {
		e.BytesSent, e.BytesRecv = rng.Uint64N(1e6), rng.Uint64N(1e6)
		if rng.IntN(3) > 0 {
			e.Lifetime = time.Duration(1 + rng.Int64N(int64(time.Minute)))
		}
	}
	return e
}

// model is the obvious implementation Table is checked against.
type model struct {
	maxKeys int
	order   []Key
	counts  map[Key]*Counts
	other   Counts
}

func (m *model) add(e *event.Event) {
	k := KeyOf(e)
	c := m.counts[k]
	if c == nil {
		if len(m.order) >= m.maxKeys {
			c = &m.other
		} else {
			c = new(Counts)
			m.counts[k] = c
			m.order = append(m.order, k)
		}
	}
	one := countsOf(e)
	c.Add(&one)
}

// countsOf returns the counts of the single event e.
func countsOf(e *event.Event) (c Counts) {
	switch e.Kind {
	case event.KindTimewait:
		c.Timewait = 1
		c.Roles[e.Role] = 1
		c.BytesSent, c.BytesRecv = e.BytesSent, e.BytesRecv
	case event.KindConnectError:
		c.ConnectErrors = 1
	case event.KindBindError:
		c.BindErrors = 1
	}
	return c
}

func sumCounts(rows []Row, recent bool) (c Counts) {
	for i := range rows {
		if recent {
			c.Add(&rows[i].Recent)
		} else {
			c.Add(&rows[i].Counts)
		}
	}
	return c
}

// TestRandomEventsAddUp checks, for random events and table sizes, every
// row against a simple model, and that rows + Other account for every event
// in the table and its deltas.
func TestRandomEventsAddUp(t *testing.T) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 99))
		maxKeys := rng.IntN(120)
		n := 1 + rng.IntN(4000)
		tb := New(maxKeys)
		clock(tb)
		m := model{maxKeys: maxKeys, counts: map[Key]*Counts{}}

		var all, second Counts // all events; those after the half-way snapshot
		var half Snapshot
		for i := range n {
			if i == n/2 {
				half = tb.Snapshot()
			}
			e := randomEvent(rng, time.Duration(rng.IntN(1000))*time.Millisecond)
			tb.Add(&e)
			m.add(&e)
			one := countsOf(&e)
			all.Add(&one)
			if i >= n/2 {
				second.Add(&one)
			}
		}
		s := tb.Snapshot()

		// Row by row against the model.
		keyed := len(s.Rows)
		if s.Overflowed > 0 {
			keyed--
			if o := s.Rows[keyed]; !o.Other || o.Counts != m.other || o.Events() != s.Overflowed {
				t.Fatalf("seed %d: other %+v, model %+v", seed, o.Counts, m.other)
			}
		} else if m.other != (Counts{}) {
			t.Fatalf("seed %d: no Other row, model has %+v", seed, m.other)
		}
		if keyed != len(m.order) || keyed != tb.Len() || keyed > maxKeys {
			t.Fatalf("seed %d: %d keyed rows, model %d, maxKeys %d", seed, keyed, len(m.order), maxKeys)
		}
		for i, k := range m.order {
			if r := s.Rows[i]; r.Key != k || r.Counts != *m.counts[k] {
				t.Fatalf("seed %d row %d: %+v %+v, model %+v %+v", seed, i, r.Key, r.Counts, k, *m.counts[k])
			}
		}

		// Totals, however the rows are cut.
		if got := sumCounts(s.Rows, false); got != all || got.Events() != uint64(n) {
			t.Fatalf("seed %d: rows sum to %+v, want %+v (%d events)", seed, got, all, n)
		}

		// The second half, as rates would see it.
		if err := s.Delta(&half); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if got := sumCounts(s.Rows, true); got != second {
			t.Fatalf("seed %d: Recent sums to %+v, want %+v", seed, got, second)
		}
	}
}
