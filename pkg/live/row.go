package live

import (
	"cmp"
	"slices"
	"time"

	"github.com/twtrace/twtrace/pkg/aggregate"
	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/report"
	"github.com/twtrace/twtrace/pkg/symbol"
	"github.com/twtrace/twtrace/pkg/verdict"
	"github.com/twtrace/twtrace/pkg/workload"
)

// rows makes a row of every snapshot row, each judged; the Other row
// only has its counts and rates.
func (s *session) rows(snap *aggregate.Snapshot, tw joined, worstOf map[rowDest]*worst) []Row {
	uptime := snap.Time.Sub(s.start)
	rows := make([]Row, 0, len(snap.Rows))
	for i := range snap.Rows {
		r := &snap.Rows[i]
		row := Row{
			Key: r.Key, Other: r.Other, Counts: r.Counts, Recent: r.Recent,
			ConnectsPerS: snap.PerSecond(r.Recent.Connects),
			TimewaitPerS: snap.PerSecond(r.Recent.Timewait),
		}
		if !r.Other {
			row.Owner, row.ParentComm = s.ownerOf(r.Key)
			if !s.cfg.Select.Match(&row.Owner) {
				continue
			}
			row.Processes, row.PID, row.PPID = r.Processes, r.FirstPID, r.FirstPPID
			row.Comm = event.CommString(&r.FirstComm)
			row.TimewaitNow = tw.now[r.Key]
			row.CallSites, row.CallSitesOther = s.callSites(r)
			ev := evidence(r, snap.Time, uptime)
			if len(row.CallSites) > 0 && row.CallSites[0].Site != nil {
				row.Library = row.CallSites[0].Site.Library
			}
			if p := verdict.Proxy(row.Comm); p != "" && row.Library == "" {
				row.Library = p
			}
			ev.Library = row.Library
			judge(&row, r, ev, tw.bound, worstOf)
		}
		rows = append(rows, row)
	}
	return rows
}

// callSites are r's stacks as call sites: stacks of one site (two
// processes of a program) summed, most connections first.
func (s *session) callSites(r *aggregate.Row) ([]CallSite, uint64) {
	if s.sites == nil || r.Stacks[0].Stack == 0 {
		return nil, r.StacksOther
	}
	var out []CallSite
	for _, sc := range r.Stacks {
		if sc.Stack == 0 {
			break
		}
		site := s.sites.Site(sc.Stack)
		i := slices.IndexFunc(out, func(c CallSite) bool { return c.Site == site && site != nil })
		if i < 0 {
			out = append(out, CallSite{Site: site})
			i = len(out) - 1
		}
		out[i].Connects += sc.N
	}
	slices.SortStableFunc(out, func(a, b CallSite) int { return cmp.Compare(b.Connects, a.Connects) })
	return out, r.StacksOther
}

// evidence is what the verdict weighs of r, but the destination's.
func evidence(r *aggregate.Row, now time.Time, uptime time.Duration) verdict.Evidence {
	ev := verdict.Evidence{
		Window: window(r, now, uptime), Connects: r.Connects,
		ClientTimewait: r.Roles[event.RoleClient], ServerTimewait: r.Roles[event.RoleServer],
		ConnectErrors: r.ConnectErrors, BindErrors: r.BindErrors,
	}
	// A connection closed first with no timewait socket (the table was
	// full) is evidence like one that got one.
	if r.Key.Server {
		ev.ServerTimewait += r.TimewaitOverflow
	} else {
		ev.ClientTimewait += r.TimewaitOverflow
	}
	return ev
}

// judge completes row from r (medians) and its destination (headroom,
// forecast, bound ports), and gives its verdict.
func judge(row *Row, r *aggregate.Row, ev verdict.Evidence, bound map[rowDest]bool, worstOf map[rowDest]*worst) {
	if m := &r.Medians; m.LifetimeN > 0 {
		row.LifetimeP50, row.LifetimeKnown = m.Lifetime, true
		ev.LifetimeP50, ev.LifetimeKnown = m.Lifetime, true
	}
	if m := &r.Medians; m.BytesN > 0 {
		row.BytesP50, row.BytesKnown = m.Bytes, true
		ev.BytesP50, ev.BytesKnown = m.Bytes, true
	}
	if !r.Key.Server {
		rd := rowDest{r.Key.Netns, r.Key.Daddr, r.Key.Port}
		if w := worstOf[rd]; w != nil {
			h := w.headroom
			row.HeadroomPct, row.ExhaustionInS = &h, w.exhaustion
			ev.Exhausting, ev.TwReuse = w.exhausting, w.reuse
		}
		ev.BoundPorts = bound[rd]
	}
	row.Verdict = verdict.Judge(ev)
}

// window is the time over which a row's evidence was gathered: since its
// first event (a process that starts churning an hour into the session is
// judged on its own minute, not diluted by the hour), at least a second,
// at most the session.
func window(r *aggregate.Row, now time.Time, uptime time.Duration) time.Duration {
	if r.First.IsZero() {
		return uptime
	}
	return min(max(now.Sub(r.First), time.Second), uptime)
}

// Report is r as top's frames and run's report show it: rates and the
// lifetime rounded to the thousandth, an Other row named "(other)".
func (r *Row) Report() report.Row {
	out := report.Row{
		Counts:       r.Counts,
		ConnectsPerS: report.Round3(r.ConnectsPerS),
		TimewaitPerS: report.Round3(r.TimewaitPerS),
	}
	if r.Other {
		o := report.OtherRow()
		o.Counts, o.ConnectsPerS, o.TimewaitPerS = out.Counts, out.ConnectsPerS, out.TimewaitPerS
		return o
	}
	out.PID, out.Comm, out.Netns = r.PID, r.Comm, r.Key.Netns
	out.Workload = workload.Name(&r.Key.Group, r.Comm, &r.Owner)
	out.ProcessCount, out.PPID, out.ParentComm = r.Processes, r.PPID, r.ParentComm
	out.Identity = r.Owner
	out.Daddr, out.Dport, out.Role = r.Key.Daddr, r.Key.Port, "client"
	if r.Key.Server {
		out.Role = "server"
	}
	out.TimewaitNow = r.TimewaitNow
	if r.LifetimeKnown {
		ms := report.Round3(float64(r.LifetimeP50) / 1e6)
		out.LifetimeP50Ms = &ms
	}
	if r.BytesKnown {
		b := r.BytesP50
		out.BytesP50 = &b
	}
	out.HeadroomPct, out.ExhaustionInS = copyOf(r.HeadroomPct), copyOf(r.ExhaustionInS)
	out.Verdict, out.Reason, out.Advice = r.Verdict.Verdict, r.Verdict.Reason, r.Verdict.Advice
	if out.Advice == nil {
		out.Advice = []string{}
	}
	r.reportCallSites(&out)
	return out
}

// reportCallSites puts the row's call sites in out: the first (most
// connections) as the row's, with its stack; every one in CallSites
// when there are several.
func (r *Row) reportCallSites(out *report.Row) {
	out.Stack = []symbol.Frame{}
	out.ClientLibrary = r.Library
	for i, c := range r.CallSites {
		rc := report.CallSiteCount{CallSite: c.Site.String(), Connects: c.Connects}
		if c.Site != nil {
			rc.ClientLibrary, rc.CallSiteNote = c.Site.Library, c.Site.Note
		} else {
			rc.CallSiteNote = "too many stacks to keep"
		}
		if i == 0 {
			out.CallSite, out.CallSiteNote = rc.CallSite, rc.CallSiteNote
			if c.Site != nil && c.Site.Frames != nil {
				out.Stack = c.Site.Frames
			}
		}
		out.CallSites = append(out.CallSites, rc)
	}
	if r.CallSitesOther > 0 {
		out.CallSites = append(out.CallSites, report.CallSiteCount{
			CallSiteNote: "stacks past the row's slots", Connects: r.CallSitesOther})
	}
	if len(out.CallSites) < 2 {
		out.CallSites = nil
	}
}

func copyOf[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
