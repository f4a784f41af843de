package live

import (
	"testing"
	"time"
)

// A frame reads the sockets again once the last read's cost is within the
// CPU share of the time since it began; the first and the final frame
// always do, and a share of 1 reads every frame.
func TestInventoryDue(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name  string
		share float64
		done  bool
		cost  time.Duration
		since time.Duration
		final bool
		reads bool
	}{
		{"first frame", 0.05, false, 0, 0, false, true},
		{"cheap read, next frame", 0.05, true, 10 * time.Millisecond, time.Second, false, true},
		{"costly read, next frame", 0.05, true, 100 * time.Millisecond, time.Second, false, false},
		{"costly read, 2 s on", 0.05, true, 100 * time.Millisecond, 2 * time.Second, false, true},
		{"costly read, final frame", 0.05, true, 100 * time.Millisecond, time.Second, true, true},
		{"every frame", 1, true, time.Second, 0, false, true},
	} {
		s := &session{cfg: Config{InventoryCPU: tc.share}}
		s.read = inventoryRead{sc: scan{start: t0}, cost: tc.cost, done: tc.done}
		if got := s.inventoryDue(t0.Add(tc.since), tc.final); got != tc.reads {
			t.Errorf("%s: due %v, want %v", tc.name, got, tc.reads)
		}
	}
}
