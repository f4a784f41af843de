package headroom

import (
	"math/rand/v2"
	"testing"
)

// TestRecount: on random namespaces, PortsAvailable is never negative and
// is what a recount of all 65536 ports finds, and so are the other figures
// (see checkReport).
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
		if t.Failed() {
			t.Fatalf("namespace %d, from %x", i, data)
		}
	}
}
