package live

import (
	"runtime"
	"testing"
	"time"

	"github.com/twtrace/twtrace/pkg/aggregate"
	"github.com/twtrace/twtrace/pkg/headroom"
)

// The forecast of an exhausted destination is "now" while processes keep
// trying, although failed attempts make no timewait (a timewait rate of 0
// alone would say "never"); idle, it is not heading anywhere.
func TestForecastExhaustedNow(t *testing.T) {
	d := &headroom.Destination{PortsAvailable: 0, Usable: 94}
	if secs, ok := forecast(d, 0, 150); !ok || secs != 0 {
		t.Errorf("exhausted, 150 attempts/s: %v, %v; want 0, true", secs, ok)
	}
	if _, ok := forecast(d, 0, 0); ok {
		t.Error("exhausted but idle: want no forecast")
	}
	d = &headroom.Destination{PortsAvailable: 10, Usable: 94}
	if secs, ok := forecast(d, 5, 5); !ok || secs != 2 {
		t.Errorf("10 free at 5/s: %v, %v; want 2, true", secs, ok)
	}
}

func TestVerdictWindow(t *testing.T) {
	now := time.Date(2026, 11, 24, 15, 0, 0, 0, time.UTC)
	r := &aggregate.Row{}
	if w := window(r, now, time.Hour); w != time.Hour {
		t.Errorf("no event yet: window %s, want the session's hour", w)
	}
	r.First = now.Add(-30 * time.Second)
	if w := window(r, now, time.Hour); w != 30*time.Second {
		t.Errorf("first event 30 s ago in an hour-long session: window %s, want 30s", w)
	}
	r.First = now.Add(-time.Millisecond)
	if w := window(r, now, time.Hour); w != time.Second {
		t.Errorf("first event 1 ms ago: window %s, want the 1 s floor", w)
	}
	r.First = now.Add(-2 * time.Hour) // an event stamped before tracing began
	if w := window(r, now, time.Hour); w != time.Hour {
		t.Errorf("first event before the session: window %s, want the session", w)
	}
}

func TestDefaultRingSize(t *testing.T) {
	got := DefaultRingSize()
	if got&(got-1) != 0 || got < 2<<20 || got > 16<<20 {
		t.Fatalf("DefaultRingSize() = %d: want a power of two from 2 to 16 MiB", got)
	}
	if want := min(runtime.NumCPU(), 16) << 20; got < want {
		t.Errorf("DefaultRingSize() = %d MiB for %d CPUs: want at least %d MiB", got>>20, runtime.NumCPU(), want>>20)
	}
	if got > 2<<20 && got/2 >= runtime.NumCPU()<<20 {
		t.Errorf("DefaultRingSize() = %d MiB for %d CPUs: half of it would do", got>>20, runtime.NumCPU())
	}
}
