package top

import (
	"github.com/twtrace/twtrace/pkg/workload"
	"net/netip"
	"testing"
	"time"

	"github.com/twtrace/twtrace/pkg/aggregate"
	"github.com/twtrace/twtrace/pkg/live"
	"github.com/twtrace/twtrace/pkg/tracer"
)

// The view ranks the engine's rows by the sort, keeps k and folds the
// rest with the engine's own Other row into one row: its rates summed
// and rounded once, Folded counting only the rows cut.
func TestViewRanksAndFolds(t *testing.T) {
	row := func(pid uint32, tw, conn float64, n uint64) live.Row {
		k := aggregate.Key{Group: workload.Group{PID: pid}, Netns: 7, Daddr: netip.MustParseAddr("10.0.0.2"), Port: 80}
		copy(k.Comm[:], "c")
		return live.Row{Key: k, PID: pid, Comm: "c", Processes: 1, TimewaitPerS: tw, ConnectsPerS: conn, Counts: aggregate.Counts{Timewait: n, Connects: n}}
	}
	f := &live.Frame{
		Interval: 999999 * time.Microsecond, Uptime: 12 * time.Second, Tier: tracer.TierPrecise,
		Rows: []live.Row{row(1, 1.0004, 9, 10), row(2, 5.1234, 1, 50), row(3, 2.0004, 0, 20),
			{Other: true, TimewaitPerS: 0.0004, Counts: aggregate.Counts{Timewait: 3, ConnectErrors: 2}}},
	}
	v := View(f, ByTimewaitRate, 2)
	if v.IntervalS != 1 || v.UptimeS != 12 || v.Sort != "timewait" || v.Tier != "precise" {
		t.Errorf("frame %+v", v)
	}
	if len(v.Rows) != 3 || v.Rows[0].PID != 2 || v.Rows[1].PID != 3 || !v.Rows[2].Other {
		t.Fatalf("rows %+v, want pids 2 and 3, then other", v.Rows)
	}
	if r := v.Rows[0]; r.TimewaitPerS != 5.123 || r.Role != "client" || r.Comm != "c" || r.Advice == nil {
		t.Errorf("row %+v", r)
	}
	// 1.0 (row 1, rounded) + 0.0004 (the engine's, unrounded) = 1.0004 → 1.0.
	if o := v.Rows[2]; o.Folded != 1 || o.TimewaitPerS != 1 || o.ConnectsPerS != 9 || o.Timewait != 13 || o.ConnectErrors != 2 || o.Comm != "(other)" {
		t.Errorf("other %+v", o)
	}
	if v := View(f, ByConnectRate, 5); v.Rows[0].PID != 1 || len(v.Rows) != 4 || v.Rows[3].Folded != 0 {
		t.Errorf("by connects: %+v", v.Rows)
	}
}
