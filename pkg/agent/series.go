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
	// perRequest holds the series judged per-request in the last frame,
	// with their call site when it is known.
	perRequest map[pair]site
	// unnamed holds the counts of rows in a pod the CRI has not named
	// yet (see nameGrace).
	unnamed map[aggregate.Key]*held
}

// held is a row's counts waiting for its pod's names.
type held struct {
	aggregate.Counts
	w     pair // its labels without the names
	since time.Time
}

// nameGrace is how long a pod's row waits for the CRI to name it (the
// engine lists the CRI within a second of a miss) before its counts go
// to a series without names: counted under one label set from the first,
// not split between the ids and the names.
const nameGrace = 30 * time.Second

func newSeriesTable(max int, ttl time.Duration) *seriesTable {
	return &seriesTable{max: max, ttl: ttl, m: map[pair]*tally{}, perRequest: map[pair]site{},
		unnamed: map[aggregate.Key]*held{}}
}

// awaitingNames tells whether row is in a pod its cgroup names (by uid)
// but the CRI has not named yet.
func awaitingNames(row *live.Row) bool {
	return !row.Other && row.Owner.PodUID != "" && row.Owner.Pod == ""
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

// site is a per-request series' call site and client library; empty
// when not known.
type site struct{ callSite, library string }

// siteOf is row's first call site, as labels.
func siteOf(row *live.Row) site {
	s := site{library: row.Library}
	if len(row.CallSites) > 0 {
		s.callSite = labelValue(row.CallSites[0].Site.String())
	}
	return s
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
		recent := row.Recent
		if awaitingNames(row) {
			t.hold(row, f.Time)
			continue
		}
		if h := t.unnamed[row.Key]; h != nil {
			recent.Add(&h.Counts)
			delete(t.unnamed, row.Key)
		}
		w := labelsOf(row)
		s := t.count(w, &recent, f.Time)
		if s != nil && s != &t.other && row.Verdict.Verdict == verdict.PerRequest {
			t.perRequest[w] = siteOf(row)
		}
	}
	for k, h := range t.unnamed {
		if f.Time.Sub(h.since) >= nameGrace {
			t.count(h.w, &h.Counts, f.Time)
			delete(t.unnamed, k)
		}
	}
	for w, s := range t.m {
		if f.Time.Sub(s.seen) > t.ttl {
			delete(t.m, w)
		}
	}
}

// hold keeps the recent counts of a row whose pod is not named yet.
func (t *seriesTable) hold(row *live.Row, now time.Time) {
	h := t.unnamed[row.Key]
	if h == nil {
		h = &held{w: labelsOf(row), since: now}
		t.unnamed[row.Key] = h
	}
	h.Add(&row.Recent)
}

// count adds c to w's series (made if there is room, else other's) and
// returns it; nil when c is zero and w has no series.
func (t *seriesTable) count(w pair, c *aggregate.Counts, now time.Time) *tally {
	s := t.m[w]
	if *c == (aggregate.Counts{}) {
		return s
	}
	if s == nil && w != other && len(t.m) < t.max {
		s = &tally{}
		t.m[w] = s
	}
	if s == nil {
		s = &t.other
		if w != other {
			t.folded += c.Events() + c.Connects
		}
	}
	s.Add(c)
	s.seen = now
	return s
}
