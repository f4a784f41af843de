package run

import (
	"github.com/twtrace/twtrace/pkg/workload"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/twtrace/twtrace/pkg/aggregate"
	"github.com/twtrace/twtrace/pkg/live"
	"github.com/twtrace/twtrace/pkg/tracer"
	"github.com/twtrace/twtrace/pkg/verdict"
)

// The precise tier's overflow and reuse counts reach the totals, the
// process and the text report; a row with only those is kept.
func TestBuildPreciseCounts(t *testing.T) {
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	dst := netip.MustParseAddr("10.0.0.2")
	key := func(pid uint32, comm string) aggregate.Key {
		k := aggregate.Key{Group: workload.Group{PID: pid}, Netns: 7, Daddr: dst, Port: 80}
		copy(k.Comm[:], comm)
		return k
	}
	f := &live.Frame{Time: start.Add(2 * time.Second), Tier: tracer.TierPrecise, Rows: []live.Row{
		{Key: key(10, "churn"), PID: 10, Comm: "churn", Processes: 1, Counts: aggregate.Counts{Connects: 12, Timewait: 4, TimewaitOverflow: 8},
			Verdict: verdict.Result{Verdict: "per-request"}},
		{Key: key(11, "reuser"), PID: 11, Comm: "reuser", Processes: 1, Counts: aggregate.Counts{TimewaitReused: 3}},
	}}
	r := Build([]string{"cmd"}, 0, "", start, 2*time.Second, []*live.Frame{f}, Thresholds{})
	if r.Totals.TimewaitOverflow != 8 || r.Totals.TimewaitReused != 3 || r.Totals.Timewait != 4 {
		t.Errorf("totals %+v, want 8 overflow, 3 reused, 4 timewait", r.Totals)
	}
	if len(r.Processes) != 2 || r.Processes[0].TimewaitOverflow != 8 || r.Processes[1].TimewaitReused != 3 {
		t.Fatalf("processes %+v, want churn with 8 overflow and reuser with 3 reused", r.Processes)
	}
	var b strings.Builder
	if err := WriteText(&b, r); err != nil {
		t.Fatal(err)
	}
	if want := "  8 connections closed first with no timewait socket (tcp_max_tw_buckets full), 3 connects reused a timewait socket\n"; !strings.Contains(b.String(), want) {
		t.Errorf("text report lacks %q:\n%s", want, b.String())
	}
}
