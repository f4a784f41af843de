package run

import (
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/twtrace/twtrace/pkg/aggregate"
	"github.com/twtrace/twtrace/pkg/live"
	"github.com/twtrace/twtrace/pkg/report"
	"github.com/twtrace/twtrace/pkg/workload"
)

// destID is a destination as rows name it (every source address).
type destID struct {
	netns uint32
	daddr netip.Addr
	dport uint16
}

// Build makes the report from the frames of a run, the last one final
// (cumulative counts after the drain). The samples' times are taken from
// the frames, relative to the command's start.
func Build(argv []string, code int, signal string, start time.Time, d time.Duration, frames []*live.Frame, th Thresholds) *Report {
	r := &Report{
		Command: argv, ExitCode: code, Signal: signal, Start: start,
		DurationS:    math.Round(d.Seconds()*1000) / 1000,
		Destinations: []Destination{}, Processes: []Process{}, Rows: []report.Row{},
		Workloads: []Workload{}, Thresholds: []Threshold{},
	}
	if len(frames) == 0 {
		r.Passed = true
		return r
	}
	last := frames[len(frames)-1]
	r.Losses = last.Losses
	r.Errors = last.Errors
	r.Tier = last.Tier.String()
	l := last.Losses
	r.Totals.Lost = l.Records + l.Untracked + l.Missed + l.UncountedConnects + l.UnfollowedForks

	r.By = last.By.String()
	dests := r.tally(reportRows(last))
	if last.Processes != nil {
		r.Processes = processes(last)
	}
	r.Workloads = workloads(last)
	ceilings(frames, dests)
	samples(frames, start, dests)
	for _, dd := range dests {
		if r.DurationS > 0 {
			dd.ConnectsPerS = math.Round(float64(dd.Connects)/r.DurationS*10) / 10
		}
		r.Destinations = append(r.Destinations, *dd)
	}
	slices.SortFunc(r.Destinations, func(a, b Destination) int {
		return cmp.Or(cmp.Compare(b.Timewait, a.Timewait), cmp.Compare(b.Connects, a.Connects),
			a.Daddr.Compare(b.Daddr), cmp.Compare(a.Dport, b.Dport), cmp.Compare(a.Netns, b.Netns))
	})
	slices.SortFunc(r.Processes, func(a, b Process) int {
		return cmp.Or(cmp.Compare(b.Timewait, a.Timewait), cmp.Compare(b.Connects, a.Connects), cmp.Compare(a.PID, b.PID))
	})
	r.Thresholds = judge(r, th)
	r.Passed = true
	for _, t := range r.Thresholds {
		if t.Result != "pass" {
			r.Passed = false
		}
	}
	return r
}

// reportRows are the rows of f as the report lists them: by timewait
// rate, then the engine's Other row.
func reportRows(f *live.Frame) []report.Row {
	rows := make([]report.Row, 0, len(f.Rows))
	var other []report.Row
	for i := range f.Rows {
		if f.Rows[i].Other {
			other = append(other, f.Rows[i].Report())
			continue
		}
		rows = append(rows, f.Rows[i].Report())
	}
	report.SortRows(rows, func(r *report.Row) float64 { return r.TimewaitPerS })
	return append(rows, other...)
}

// tally adds the rows that counted anything to the report, its totals and
// its processes (in the order the rows name them), and returns the
// client destinations they name.
func (r *Report) tally(rows []report.Row) map[destID]*Destination {
	dests := map[destID]*Destination{}
	procs := map[uint32]int{} // index in r.Processes
	for _, row := range rows {
		if row.Connects == 0 && row.Events() == 0 {
			continue
		}
		r.Rows = append(r.Rows, row)
		r.Totals.Add(&row.Counts)
		if row.Role == "server" {
			r.Totals.TimewaitServer += row.Timewait
		} else {
			r.Totals.TimewaitClient += row.Timewait
		}
		if !row.Other {
			i, ok := procs[row.PID]
			if !ok {
				i = len(r.Processes)
				procs[row.PID] = i
				r.Processes = append(r.Processes, Process{PID: row.PID, Comm: row.Comm, Verdict: "ok"})
			}
			p := &r.Processes[i]
			p.Add(&row.Counts)
			if row.Verdict == "per-request" {
				p.Verdict = row.Verdict
			}
		}
		if row.Role == "server" || row.Other || !row.Daddr.IsValid() {
			continue
		}
		id := destID{row.Netns, row.Daddr, row.Dport}
		dd := dests[id]
		if dd == nil {
			dd = &Destination{Netns: id.netns, Daddr: id.daddr, Dport: id.dport, Series: []Sample{}}
			dests[id] = dd
		}
		dd.Connects += row.Connects
		dd.Timewait += row.Timewait
		dd.ConnectErrors += row.ConnectErrors
	}
	return dests
}

// processes are the engine's per-process tally, each judged per-request
// when a row it counted in is.
func processes(f *live.Frame) []Process {
	perRequest := map[aggregate.Key]bool{}
	for i := range f.Rows {
		if row := &f.Rows[i]; !row.Other && row.Verdict.Verdict == "per-request" {
			perRequest[row.Key] = true
		}
	}
	out := make([]Process, 0, len(f.Processes))
	for i := range f.Processes {
		p := &f.Processes[i]
		if p.Connects == 0 && p.Events() == 0 {
			continue
		}
		pr := Process{PID: p.PID, Comm: p.Comm, Counts: p.Counts, Verdict: "ok"}
		for _, k := range p.Rows {
			if perRequest[k] {
				pr.Verdict = "per-request"
			}
		}
		out = append(out, pr)
	}
	return out
}

// workloads folds f's rows by their group: one entry per workload, in the
// order the rows first name it, its processes counted from the engine's
// per-process tally (or, without one, the most any of its rows holds).
func workloads(f *live.Frame) []Workload {
	out := []Workload{}
	index := map[workload.Group]int{}
	for i := range f.Rows {
		row := &f.Rows[i]
		if row.Other || row.Connects == 0 && row.Events() == 0 {
			continue
		}
		j, ok := index[row.Key.Group]
		if !ok {
			j = len(out)
			index[row.Key.Group] = j
			rr := row.Report()
			out = append(out, Workload{Workload: rr.Workload, Comm: rr.Comm, PID: rr.PID, Verdict: "ok", Identity: rr.Identity})
		}
		w := &out[j]
		w.Add(&row.Counts)
		w.ProcessCount = max(w.ProcessCount, row.Processes)
		if row.Verdict.Verdict == "per-request" {
			w.Verdict = "per-request"
		}
	}
	if f.Processes == nil {
		return out
	}
	pids := make([]map[uint32]bool, len(out))
	for i := range f.Processes {
		p := &f.Processes[i]
		for _, k := range p.Rows {
			if j, ok := index[k.Group]; ok {
				if pids[j] == nil {
					pids[j] = map[uint32]bool{}
				}
				pids[j][p.PID] = true
			}
		}
	}
	for j := range out {
		out[j].ProcessCount = max(out[j].ProcessCount, len(pids[j]))
	}
	return out
}

// ceilings sets each destination's port ceiling: the least roomy source
// address, from the latest frame that read the destination's namespace.
func ceilings(frames []*live.Frame, dests map[destID]*Destination) {
	for _, f := range frames {
		for i := range f.Destinations {
			ld := &f.Destinations[i]
			dd := dests[destID{ld.Netns, ld.Daddr, ld.Dport}]
			if dd == nil {
				continue
			}
			if dd.PortsUsable == 0 || ld.PortsUsable < dd.PortsUsable {
				dd.PortsUsable, dd.CeilingPerS = ld.PortsUsable, ld.CeilingPerS
			}
		}
	}
}

// samples gives each destination its series: the timewait sockets the
// command's rows held toward it at each frame.
func samples(frames []*live.Frame, start time.Time, dests map[destID]*Destination) {
	for _, f := range frames {
		t := math.Round(f.Time.Sub(start).Seconds()*1000) / 1000
		held := map[destID]int{}
		for i := range f.Rows {
			if row := &f.Rows[i]; !row.Key.Server && !row.Other {
				held[destID{row.Key.Netns, row.Key.Daddr, row.Key.Port}] += row.TimewaitNow
			}
		}
		for id, dd := range dests {
			n := held[id]
			dd.Series = append(dd.Series, Sample{T: max(t, 0), Held: n})
			dd.TimewaitPeak = max(dd.TimewaitPeak, n)
		}
	}
}

// judge checks each threshold that was set.
func judge(r *Report, th Thresholds) []Threshold {
	out := []Threshold{}
	check := func(name string, limit, value float64, dest string) {
		res := "pass"
		if value > limit {
			res = "fail"
		}
		out = append(out, Threshold{Name: name, Limit: limit, Value: value, Result: res, Destination: dest})
	}
	if th.MaxConnects != nil {
		check("max_connects", float64(*th.MaxConnects), float64(r.Totals.Connects), "")
	}
	if th.MaxTimewait != nil {
		check("max_timewait", float64(*th.MaxTimewait), float64(r.Totals.Timewait), "")
	}
	if th.MaxConnectRate != nil {
		var worst float64
		var at string
		for _, d := range r.Destinations {
			if d.ConnectsPerS > worst || at == "" {
				worst, at = d.ConnectsPerS, netip.AddrPortFrom(d.Daddr, d.Dport).String()
			}
		}
		check("max_connect_rate", *th.MaxConnectRate, worst, at)
	}
	if th.FailOnConnectError {
		check("fail_on_connect_error", 0, float64(r.Totals.ConnectErrors), "")
	}
	return out
}

// String names a destination as address:port.
func (d *Destination) String() string {
	return fmt.Sprint(netip.AddrPortFrom(d.Daddr, d.Dport))
}
