package headroom

import (
	"cmp"
	"math"
	"net/netip"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/twtrace/twtrace/pkg/inventory"
)

// decodeNamespace builds a namespace from arbitrary bytes, reading zeros
// past their end. Ports, addresses and destination ports are drawn from
// small sets so that they collide: shared ports, ports in and out of the
// range, reserved and bound, listeners on destination ports.
func decodeNamespace(data []byte) *inventory.Namespace {
	next := func() byte {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return b
	}
	saturate := func(base uint16, add byte) uint16 {
		return uint16(min(int(base)+int(add), 65535))
	}
	bases := [...]uint16{0, 1000, 40000, 65400}
	saddrs := [...]netip.Addr{
		netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.0.0.1"),
		netip.MustParseAddr("::1"), netip.MustParseAddr("2001:db8::1"),
	}
	daddrs := [...]netip.Addr{
		netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.0.0.2"),
		netip.MustParseAddr("::1"), netip.MustParseAddr("2001:db8::2"),
		netip.MustParseAddr("10.0.0.3"), netip.IPv4Unspecified(), {},
		netip.MustParseAddr("127.0.0.2"),
	}
	delays := [...]time.Duration{0, time.Second, 5 * time.Second, 90 * time.Second}

	base := bases[next()%4]
	lo := saturate(base, next()%64)
	hi := saturate(lo, next())
	flags := next()
	if flags&1 != 0 {
		lo, hi = hi, lo
	}
	ns := &inventory.Namespace{NamespaceRef: inventory.NamespaceRef{Inode: netns}}
	sc := &ns.Sysctls
	sc.PortRange = inventory.PortSpan{Lo: lo, Hi: hi}
	for range flags >> 1 % 4 {
		l := saturate(base, next())
		sc.Reserved = append(sc.Reserved, inventory.PortSpan{Lo: l, Hi: saturate(l, next()%16)})
	}
	sc.TwReuse = int(flags>>3) % 3
	sc.Timestamps = int(flags>>5) & 1
	sc.TwReuseDelay = delays[flags>>6]
	specialPorts := [...]uint16{0, 22, 443, 8080, 8081, 65535, 1, 40000}
	dports := [...]uint16{0, 22, 443, 8080, 8081, base + 5, base + 100, 80}
	for len(data) > 0 && len(ns.Sockets) < 512 {
		var s inventory.Socket
		s.State = inventory.State(1 + next()%12)
		s.Substate = s.State
		f := next()
		s.Bound, s.RemainingKnown, s.Timestamps = f&1 != 0, f&2 != 0, f&4 != 0
		if s.State == inventory.TimeWait && f&8 != 0 {
			s.Substate = inventory.FinWait2
		}
		s.Saddr = saddrs[f>>4&3]
		s.IPv6 = s.Saddr.Is6()
		if p := next(); p >= 248 {
			s.Sport = specialPorts[p-248]
		} else {
			s.Sport = base + uint16(p) // may wrap: any port will do
		}
		d := next()
		s.Daddr, s.Dport = daddrs[d&7], dports[d>>3&7]
		s.Remaining = time.Duration(next()) * 250 * time.Millisecond // to 63.75 s
		ns.Sockets = append(ns.Sockets, s)
	}
	return ns
}

// checkReport checks r = Compute(ns) against a recount of every port by
// brute force, and checks the forecasts of every destination.
func checkReport(t *testing.T, ns *inventory.Namespace, r Report) {
	t.Helper()
	sc := &ns.Sysctls
	delay := sc.TwReuseDelay
	if delay <= 0 {
		delay = time.Second
	}

	// What connect() may pick toward a destination with nothing in use.
	var reserved, bound, listening, open [1 << 16]bool
	for _, span := range sc.Reserved {
		for p := int(span.Lo); p <= int(span.Hi); p++ {
			reserved[p] = true
		}
	}
	for _, s := range ns.Sockets {
		if s.State == inventory.Listen {
			listening[s.Sport] = true
		}
		if s.Bound || s.State == inventory.Listen {
			bound[s.Sport] = true
		}
	}
	var n Namespace
	var openPorts []uint16
	for p := range 1 << 16 {
		if p < int(sc.PortRange.Lo) || p > int(sc.PortRange.Hi) {
			continue
		}
		n.RangeSize++
		switch {
		case reserved[p]:
			n.Reserved++
		case bound[p]:
			n.Bound++
		default:
			open[p] = true
			openPorts = append(openPorts, uint16(p))
			n.Usable++
		}
	}
	got := r.Namespace
	if got.RangeSize != n.RangeSize || got.Reserved != n.Reserved || got.Bound != n.Bound || got.Usable != n.Usable {
		t.Fatalf("range %d reserved %d bound %d usable %d; recount %d %d %d %d",
			got.RangeSize, got.Reserved, got.Bound, got.Usable, n.RangeSize, n.Reserved, n.Bound, n.Usable)
	}
	if got.Usable < 0 || got.Usable > got.RangeSize || got.RangeSize > 1<<16 {
		t.Fatalf("usable %d of %d", got.Usable, got.RangeSize)
	}

	// Sockets by destination and by server.
	type dest struct {
		ByState
		ports map[uint16][]inventory.Socket
	}
	dests := map[Key]*dest{}
	servers := map[netip.AddrPort]*ByState{}
	timewaits, finWait2s := 0, 0
	for _, s := range ns.Sockets {
		if s.State == inventory.TimeWait {
			if s.Substate == inventory.FinWait2 {
				finWait2s++
			} else {
				timewaits++
			}
		}
		if s.State == inventory.Listen || s.State == inventory.Close ||
			!s.Daddr.IsValid() || s.Daddr.IsUnspecified() || s.Dport == 0 {
			continue
		}
		if listening[s.Sport] {
			k := netip.AddrPortFrom(s.Saddr, s.Sport)
			if servers[k] == nil {
				servers[k] = new(ByState)
			}
			servers[k].add(s.State, s.Substate)
			continue
		}
		k := Key{netns, s.Saddr, s.Daddr, s.Dport}
		if dests[k] == nil {
			dests[k] = &dest{ports: map[uint16][]inventory.Socket{}}
		}
		dests[k].add(s.State, s.Substate)
		dests[k].ports[s.Sport] = append(dests[k].ports[s.Sport], s)
	}
	if got.Timewait != timewaits || got.FinWait2 != finWait2s {
		t.Errorf("timewaits %d/%d, want %d/%d", got.Timewait, got.FinWait2, timewaits, finWait2s)
	}

	if len(r.Destinations) != len(dests) {
		t.Fatalf("%d destinations, want %d", len(r.Destinations), len(dests))
	}
	for i := range r.Destinations {
		d := &r.Destinations[i]
		w := dests[d.Key]
		if w == nil {
			t.Fatalf("unexpected destination %v", d.Key)
		}
		if i > 0 {
			prev := &r.Destinations[i-1]
			if c := cmp.Compare(prev.PortsAvailable, d.PortsAvailable); c > 0 || c == 0 && compareKeys(&prev.Key, &d.Key) >= 0 {
				t.Errorf("destination %v after %v", d.Key, prev.Key)
			}
		}
		if d.ByState != w.ByState {
			t.Errorf("%v: by state %+v, want %+v", d.Key, d.ByState, w.ByState)
		}
		reuse := sc.Timestamps != 0 && (sc.TwReuse == 1 ||
			sc.TwReuse == 2 && (d.Saddr.Unmap().IsLoopback() || d.Daddr.Unmap().IsLoopback()))

		// Every port of the namespace that connect() may pick, one by one.
		available := 0
		for _, p := range openPorts {
			if len(w.ports[p]) == 0 {
				available++
			}
		}
		inUse, heldOpen, reusable := 0, 0, 0
		var expiries, takeable []time.Duration
		for p, socks := range w.ports {
			if !open[p] {
				continue
			}
			inUse++
			var free, take time.Duration
			now := true
			for _, s := range socks {
				if s.State != inventory.TimeWait {
					free = -1
					break
				}
				remaining := TimewaitLen
				if s.RemainingKnown {
					remaining = min(max(s.Remaining, 0), TimewaitLen)
				}
				free = max(free, remaining)
				age := TimewaitLen - remaining
				switch {
				case !reuse || !s.RemainingKnown || !s.Timestamps || s.Substate == inventory.FinWait2:
					take = max(take, remaining)
					now = false
				case age >= delay:
				default:
					take = max(take, min(delay-age, remaining))
					now = false
				}
			}
			if free < 0 {
				heldOpen++
				continue
			}
			expiries = append(expiries, free)
			takeable = append(takeable, take)
			if now && reuse {
				reusable++
			}
		}
		slices.Sort(expiries)
		slices.Sort(takeable)

		if d.PortsAvailable != available || d.PortsAvailable < 0 || d.PortsAvailable != n.Usable-inUse {
			t.Errorf("%v: available %d, recount %d (%d usable, %d in use)", d.Key, d.PortsAvailable, available, n.Usable, inUse)
		}
		if d.PortsAvailable > d.Usable || d.Usable != n.Usable {
			t.Errorf("%v: available %d of %d usable, want at most %d", d.Key, d.PortsAvailable, d.Usable, n.Usable)
		}
		if d.PortsInUse != len(w.ports) || d.PortsInUse < inUse || d.PortsInUse > d.Total() {
			t.Errorf("%v: %d ports in use, want %d (%d in the usable ones, %d sockets)", d.Key, d.PortsInUse, len(w.ports), inUse, d.Total())
		}
		if d.PortsHeldOpen != heldOpen || !slices.Equal(d.expiries, expiries) {
			t.Errorf("%v: %d held open, expiries %v; want %d, %v", d.Key, d.PortsHeldOpen, d.expiries, heldOpen, expiries)
		}
		if d.Reuse != reuse || d.PortsReusable != reusable || d.PortsAvailableWithReuse != available+reusable ||
			d.PortsAvailableWithReuse > d.Usable || d.PortsReusable > d.Timewait {
			t.Errorf("%v: reuse %v, %d reusable, %d available with reuse; want %v, %d, %d",
				d.Key, d.Reuse, d.PortsReusable, d.PortsAvailableWithReuse, reuse, reusable, available+reusable)
		}
		if reuse && !slices.Equal(d.takeable, takeable) {
			t.Errorf("%v: takeable %v, want %v", d.Key, d.takeable, takeable)
		}
		if d.CeilingPerS != float64(n.Usable)/60 {
			t.Errorf("%v: ceiling %v/s", d.Key, d.CeilingPerS)
		}
		hold := min(delay, TimewaitLen)
		if want := float64(n.Usable) / hold.Seconds(); reuse && d.CeilingWithReusePerS != want || !reuse && d.CeilingWithReusePerS != 0 {
			t.Errorf("%v: ceiling with reuse %v/s", d.Key, d.CeilingWithReusePerS)
		}

		rates := []float64{0, 1e-3, 0.7, 1.5, 3, 10, 100, 1e5, float64(n.Usable) / 60, float64(n.Usable-heldOpen) / 60}
		if len(expiries) > 0 && expiries[0] > 0 {
			rates = append(rates, float64(available)/expiries[0].Seconds())
		}
		slices.Sort(rates)
		var last, lastReuse float64
		lastOK, lastReuseOK := false, false
		for _, rate := range rates {
			s, ok := Forecast(d, rate)
			checkRunOut(t, d.Key, "forecast", available, expiries, TimewaitLen, rate, s, ok)
			sr, okr := ForecastWithReuse(d, rate)
			if reuse {
				checkRunOut(t, d.Key, "forecast with reuse", available+reusable, takeable[reusable:], hold, rate, sr, okr)
			} else if sr != s || okr != ok {
				t.Errorf("%v: forecast with reuse %v %v, without %v %v", d.Key, sr, okr, s, ok)
			}
			if okr && (!ok || sr < s) {
				t.Errorf("%v at %v/s: runs out after %v s with reuse, %v s (%v) without", d.Key, rate, sr, s, ok)
			}
			// A faster rate never runs out later.
			if lastOK && (!ok || s > last) || lastReuseOK && (!okr || sr > lastReuse) {
				t.Errorf("%v at %v/s: runs out after %v s (%v), %v s (%v) with reuse; a slower rate ran out after %v s, %v s",
					d.Key, rate, s, ok, sr, okr, last, lastReuse)
			}
			last, lastOK, lastReuse, lastReuseOK = s, ok, sr, okr
		}
	}

	if len(r.Servers) != len(servers) {
		t.Fatalf("%d servers, want %d", len(r.Servers), len(servers))
	}
	accepted := 0
	for _, s := range r.Servers {
		w := servers[netip.AddrPortFrom(s.Addr, s.Port)]
		if w == nil || s.ByState != *w {
			t.Errorf("server %v:%d: %+v, want %+v", s.Addr, s.Port, s.ByState, w)
		}
		accepted += s.Timewait
	}
	if got.AcceptedTimewait != accepted {
		t.Errorf("%d accepted timewaits, want %d", got.AcceptedTimewait, accepted)
	}
}

// checkRunOut checks that seconds, ok is when free ports, plus releases
// (sorted), minus rate·min(t, hold) first drop below zero.
func checkRunOut(t *testing.T, k Key, what string, free int, releases []time.Duration, hold time.Duration, rate, seconds float64, ok bool) {
	t.Helper()
	h := hold.Seconds()
	// avail(at) counts the releases at or before at; avail(at⁻) those
	// before.
	avail := func(at float64, before bool) float64 {
		n := sort.Search(len(releases), func(i int) bool {
			r := releases[i].Seconds()
			return r > at || before && r == at
		})
		return float64(free+n) - rate*min(at, h)
	}
	tol := 1e-9 * (float64(free+len(releases)) + rate*h + 1)
	switch {
	case !(rate > 0):
		if ok || seconds != 0 {
			t.Errorf("%v: %s at %v/s: %v %v, want never", k, what, rate, seconds, ok)
		}
		return
	case free <= 0:
		if !ok || seconds != 0 {
			t.Errorf("%v: %s at %v/s with no port free: %v %v, want 0", k, what, rate, seconds, ok)
		}
		return
	}
	points := []float64{0, h}
	for _, r := range releases {
		points = append(points, r.Seconds())
	}
	if ok {
		if seconds < 0 || seconds >= h || math.Abs(avail(seconds, false)) > tol {
			t.Errorf("%v: %s at %v/s: runs out after %v s with %v ports free", k, what, rate, seconds, avail(seconds, false))
		}
	}
	for _, p := range points {
		if ok && p >= seconds || p > h {
			continue
		}
		if avail(p, true) < -tol || p < h && ok && avail(p, false) <= 0 {
			t.Errorf("%v: %s at %v/s: %v, %v; but %v, %v ports free at %v s",
				k, what, rate, seconds, ok, avail(p, true), avail(p, false), p)
		}
	}
}
