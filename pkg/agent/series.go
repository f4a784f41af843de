package agent

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/twtrace/twtrace/pkg/aggregate"
	"github.com/twtrace/twtrace/pkg/live"
	"github.com/twtrace/twtrace/pkg/verdict"
)

// pair is the label set of a workload x destination series: what
// Prometheus tells apart. Rows of the engine that share it are summed.
type pair struct {
	comm, namespace, pod, container string
	daddr, dport                    string
}

// other is the series the pairs beyond --max-series fold into.
var other = pair{comm: "other"}

// tally is one series' counts, cumulative since it was made, and the
// frame time it last counted.
type tally struct {
	aggregate.Counts
	seen time.Time
}

// seriesTable sums the engine's rows into series, at most max of them
// (the rest fold into other), and drops those quiet for ttl. Its
// counters grow by each frame's Recent counts, never by a row's
// cumulative ones: rows come and go (the engine expires them), series
// stay monotonic.
type seriesTable struct {
	max    int
	ttl    time.Duration
	m      map[pair]*tally
	other  tally
	folded uint64 // counts (events and connect attempts) folded into other
	// perRequest holds the series judged per-request in the last frame.
	perRequest map[pair]bool
}

func newSeriesTable(max int, ttl time.Duration) *seriesTable {
	return &seriesTable{max: max, ttl: ttl, m: map[pair]*tally{}, perRequest: map[pair]bool{}}
}

// labelsOf is row's label set.
func labelsOf(row *live.Row) pair {
	if row.Other {
		return other
	}
	w := pair{
		comm:      labelValue(row.Comm),
		namespace: row.Owner.PodNamespace, pod: row.Owner.Pod, container: row.Owner.Container,
	}
	if row.Key.Daddr.IsValid() && row.Key.Daddr != netip.IPv4Unspecified() && row.Key.Daddr != netip.IPv6Unspecified() {
		w.daddr = row.Key.Daddr.String()
	}
	if row.Key.Port != 0 {
		w.dport = strconv.Itoa(int(row.Key.Port))
	}
	return w
}

// labelValue makes a process-chosen comm a valid label value.
func labelValue(s string) string {
	return strings.ToValidUTF8(s, "\uFFFD")
}

// add counts one frame's rows.
func (t *seriesTable) add(f *live.Frame) {
	clear(t.perRequest)
	for i := range f.Rows {
		row := &f.Rows[i]
		w := labelsOf(row)
		s := t.m[w]
		if row.Recent != (aggregate.Counts{}) {
			if s == nil && w != other && len(t.m) < t.max {
				s = &tally{}
				t.m[w] = s
			}
			if s == nil {
				s = &t.other
				if w != other {
					t.folded += row.Recent.Events() + row.Recent.Connects
				}
			}
			s.Add(&row.Recent)
			s.seen = f.Time
		}
		if s != nil && s != &t.other && row.Verdict.Verdict == verdict.PerRequest {
			t.perRequest[w] = true
		}
	}
	for w, s := range t.m {
		if f.Time.Sub(s.seen) > t.ttl {
			delete(t.m, w)
		}
	}
}
