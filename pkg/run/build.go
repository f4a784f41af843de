package run

import (
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/twtrace/twtrace/pkg/top"
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
func Build(argv []string, code int, signal string, start time.Time, d time.Duration, frames []*top.Frame, th Thresholds) *Report {
	r := &Report{
		Command: argv, ExitCode: code, Signal: signal, Start: start,
		DurationS:    math.Round(d.Seconds()*1000) / 1000,
		Destinations: []Destination{}, Processes: []Process{}, Rows: []top.Row{},
		Thresholds: []Threshold{},
	}
	if len(frames) == 0 {
		r.Passed = true
		return r
	}
	last := frames[len(frames)-1]
	r.Losses = last.Losses
	r.Errors = last.Errors
	r.Tier = last.Tier
	l := last.Losses
	r.Totals.Lost = l.Records + l.Untracked + l.Missed + l.UncountedConnects + l.UnfollowedForks

	dests := map[destID]*Destination{}
	procs := map[uint32]*Process{}
	var procOrder []uint32
	for _, row := range last.Rows {
		if row.Connects == 0 && row.Timewait == 0 && row.ConnectErrors == 0 && row.BindErrors == 0 &&
			row.TimewaitOverflow == 0 && row.TimewaitReused == 0 {
			continue
		}
		r.Rows = append(r.Rows, row)
		t := &r.Totals
		t.Connects += row.Connects
		t.Timewait += row.Timewait
		t.ConnectErrors += row.ConnectErrors
		t.BindErrors += row.BindErrors
		t.TimewaitOverflow += row.TimewaitOverflow
		t.TimewaitReused += row.TimewaitReused
		if row.Role == "server" {
			t.TimewaitServer += row.Timewait
		} else {
			t.TimewaitClient += row.Timewait
		}
		if !row.Other {
			p := procs[row.PID]
			if p == nil {
				p = &Process{PID: row.PID, Comm: row.Comm, Verdict: "ok"}
				procs[row.PID] = p
				procOrder = append(procOrder, row.PID)
			}
			p.Connects += row.Connects
			p.Timewait += row.Timewait
			p.ConnectErrors += row.ConnectErrors
			p.BindErrors += row.BindErrors
			p.TimewaitOverflow += row.TimewaitOverflow
			p.TimewaitReused += row.TimewaitReused
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

	// Port ceilings: the least roomy source address, from the latest
	// frame that read the destination's namespace.
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
	// Samples: the timewait sockets held, joined to the command's rows.
	for _, f := range frames {
		t := math.Round(f.Time.Sub(start).Seconds()*1000) / 1000
		held := map[destID]int{}
		for _, row := range f.Rows {
			if row.Role != "server" && !row.Other {
				held[destID{row.Netns, row.Daddr, row.Dport}] += row.TimewaitNow
			}
		}
		for id, dd := range dests {
			n := held[id]
			dd.Series = append(dd.Series, Sample{T: max(t, 0), Held: n})
			dd.TimewaitPeak = max(dd.TimewaitPeak, n)
		}
	}
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
	for _, pid := range procOrder {
		r.Processes = append(r.Processes, *procs[pid])
	}
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
