package run

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/twtrace/twtrace/pkg/top"
)

// The precise tier's overflow and reuse counts reach the totals, the
// process and the text report; a row with only those is kept.
func TestBuildPreciseCounts(t *testing.T) {
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	dst := netip.MustParseAddr("10.0.0.2")
	f := &top.Frame{Time: start.Add(2 * time.Second), Tier: "precise", Rows: []top.Row{
		{PID: 10, Comm: "churn", Netns: 7, Daddr: dst, Dport: 80, Role: "client", Connects: 12, Timewait: 4,
			TimewaitOverflow: 8, Verdict: "per-request", Advice: []string{}},
		{PID: 11, Comm: "reuser", Netns: 7, Daddr: dst, Dport: 80, Role: "client", TimewaitReused: 3, Verdict: "ok", Advice: []string{}},
	}}
	r := Build([]string{"cmd"}, 0, "", start, 2*time.Second, []*top.Frame{f}, Thresholds{})
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
