package live

import (
	"cmp"
	"slices"
	"time"

	"github.com/twtrace/twtrace/pkg/aggregate"
	"github.com/twtrace/twtrace/pkg/headroom"
	"github.com/twtrace/twtrace/pkg/inventory"
	"github.com/twtrace/twtrace/pkg/report"
)

// worst is a destination over every source address, as its rows see it:
// the least headroom, the soonest exhaustion.
type worst struct {
	headroom   float64
	exhaustion *float64
	exhausting bool
	reuse      bool
}

// destinations fills f's namespaces (with their TcpExt rates) and
// destinations (with their forecasts), and returns the worst of each
// destination over its source addresses, for the rows.
//
// The headroom is the last read's (sc): its forecasts are made from it,
// then shortened by the time since it (a destination heading for
// exhaustion is that much closer).
func (s *session) destinations(f *Frame, sc scan, snap *aggregate.Snapshot, tw joined, fresh bool) map[rowDest]*worst {
	connRate := connectRates(snap)
	worstOf := map[rowDest]*worst{}
	age := max(snap.Time.Sub(sc.start).Seconds(), 0)
	if fresh {
		age = 0
	}
	for _, sd := range sc.all {
		nsView, dests, _ := report.FromNamespace(sd.ns, &sd.r)
		nsView.Owner = report.OwnerOf(s.cfg.Owners, nsView.PID)
		if r, ok := s.nsRates[sd.ns.Inode]; ok {
			nsView.TWPerS, nsView.RecycledPerS, nsView.OverflowPerS = r.tw, r.recycled, r.overflow
		}
		f.Namespaces = append(f.Namespaces, nsView)
		for i := range dests {
			d := &sd.r.Destinations[i]
			k := destKey{Netns: d.Netns, Saddr: d.Saddr, Daddr: d.Daddr, Dport: d.Dport}
			rd := rowDest{d.Netns, d.Daddr, d.Dport}
			var ex *float64
			if secs, ok := forecast(d, tw.rate[k], connRate[rd]); ok {
				secs = max(secs-age, 0)
				ex = &secs
			}
			live := report.Live(dests[i], connRate[rd], tw.rate[k], tw.unattributed[k], ex)
			f.Destinations = append(f.Destinations, live)
			w := worstOf[rd]
			if w == nil {
				w = &worst{headroom: 101}
				worstOf[rd] = w
			}
			w.headroom = min(w.headroom, dests[i].HeadroomPct)
			if ex != nil && (w.exhaustion == nil || *ex < *w.exhaustion) {
				w.exhaustion = live.ExhaustionInS
			}
			w.exhausting = w.exhausting || ex != nil || d.PortsAvailable == 0
			w.reuse = w.reuse || d.Reuse
		}
	}
	sortDestinations(f.Destinations)
	return worstOf
}

// connectRates are the connect attempts per second toward each
// destination, over every source address.
func connectRates(snap *aggregate.Snapshot) map[rowDest]float64 {
	rates := map[rowDest]float64{}
	for i := range snap.Rows {
		r := &snap.Rows[i]
		if !r.Other && !r.Key.Server {
			rates[rowDest{r.Key.Netns, r.Key.Daddr, r.Key.Port}] += snap.PerSecond(r.Recent.Connects)
		}
	}
	return rates
}

// nsCounters are a namespace's TcpExt counters as one read found them.
type nsCounters struct {
	c  inventory.Counters
	at time.Time
}

// nsRates are the rates of a namespace's TcpExt timewait counters
// between its last two reads.
type nsRates struct{ tw, recycled, overflow *float64 }

// namespaceRates takes the rates of ns's TcpExt timewait counters since
// its previous read (none on its first).
func (s *session) namespaceRates(ns *inventory.Namespace) {
	cur := nsCounters{ns.Counters, ns.Time}
	if p, ok := s.prevNs[ns.Inode]; ok {
		if secs := cur.at.Sub(p.at).Seconds(); secs > 0 {
			c := ns.Counters
			tw := report.Round3(float64(c.TW-p.c.TW) / secs)
			rec := report.Round3(float64(c.TWRecycled-p.c.TWRecycled) / secs)
			ovf := report.Round3(float64(c.TCPTimeWaitOverflow-p.c.TCPTimeWaitOverflow) / secs)
			s.nsRates[ns.Inode] = nsRates{&tw, &rec, &ovf}
		}
	}
	s.prevNs[ns.Inode] = cur
}

// sortDestinations puts the soonest exhaustion first, then the least
// headroom.
func sortDestinations(d []report.LiveDestination) {
	slices.SortStableFunc(d, func(a, b report.LiveDestination) int {
		ea, eb := a.ExhaustionInS, b.ExhaustionInS
		switch {
		case ea != nil && eb != nil:
			if c := cmp.Compare(*ea, *eb); c != 0 {
				return c
			}
		case ea != nil:
			return -1
		case eb != nil:
			return 1
		}
		return cmp.Compare(a.HeadroomPct, b.HeadroomPct)
	})
}

// forecast is when connect() toward d starts failing: at the rate ports
// enter timewait toward it (with tcp_tw_reuse where it applies), or now
// when no port is left while processes still try (failed attempts make no
// timewait, so the timewait rate alone would say "never").
func forecast(d *headroom.Destination, twRate, connRate float64) (float64, bool) {
	f := headroom.Forecast
	if d.Reuse {
		f = headroom.ForecastWithReuse
	}
	if secs, ok := f(d, twRate); ok {
		return secs, true
	}
	free := d.PortsAvailable
	if d.Reuse {
		free = d.PortsAvailableWithReuse
	}
	if free == 0 && connRate > 0 {
		return 0, true
	}
	return 0, false
}
