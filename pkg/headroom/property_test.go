package headroom

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/twtrace/twtrace/pkg/inventory"
)

// TestRecount: on random namespaces, PortsAvailable is never negative and
// is what a recount of all 65536 ports finds, and so are the other figures
// (see checkReport); the namespace grouped gives the same report
// (checkCompact).
func TestRecount(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		data := make([]byte, rng.IntN(6*64))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		ns := decodeNamespace(data)
		r := Compute(ns)
		for _, d := range r.Destinations {
			if d.PortsAvailable < 0 {
				t.Fatalf("namespace %d: %v has %d ports available", i, d.Key, d.PortsAvailable)
			}
		}
		checkReport(t, ns, r)
		checkCompact(t, ns)
		if t.Failed() {
			t.Fatalf("namespace %d, from %x", i, data)
		}
	}
}

// checkCompact: Compute gives the same report whether a namespace's
// connections are Sockets or grouped Conns (as a scan gives them), timers
// taken to the millisecond as a Conn keeps them.
func checkCompact(t *testing.T, ns *inventory.Namespace) {
	t.Helper()
	plain := *ns
	plain.Sockets = slices.Clone(ns.Sockets)
	for i := range plain.Sockets {
		s := &plain.Sockets[i]
		s.Remaining = min(s.Remaining.Truncate(time.Millisecond), (1<<16-1)*time.Millisecond)
		if s.Remaining < 0 {
			s.Remaining = 0
		}
	}
	grouped := plain
	grouped.Sockets = slices.Clone(plain.Sockets)
	inventory.Compact(&grouped)
	want, got := Compute(&plain), Compute(&grouped)
	if !reflect.DeepEqual(want, got) {
		t.Errorf("grouped (%d sockets, %d conns in %d groups):\n%+v\nas Sockets:\n%+v",
			len(grouped.Sockets), len(grouped.Conns), len(grouped.Groups), got, want)
	}
}
