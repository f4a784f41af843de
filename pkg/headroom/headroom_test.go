package headroom

import (
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/twtrace/twtrace/pkg/inventory"
)

const netns = 4026531840

var loopback = netip.MustParseAddr("127.0.0.1")

// sock is a socket in state st from local to remote ("addr:port").
func sock(st inventory.State, local, remote string) inventory.Socket {
	l, r := netip.MustParseAddrPort(local), netip.MustParseAddrPort(remote)
	return inventory.Socket{
		State: st, Substate: st, IPv6: l.Addr().Is6(),
		Saddr: l.Addr(), Sport: l.Port(), Daddr: r.Addr(), Dport: r.Port(),
	}
}

// timewait is a TIME_WAIT socket that saw timestamps, remaining on its
// timer.
func timewait(local, remote string, remaining time.Duration) inventory.Socket {
	s := sock(inventory.TimeWait, local, remote)
	s.Remaining, s.RemainingKnown, s.Timestamps = remaining, true, true
	return s
}

// finWait2 is an orphaned FIN_WAIT2, held as a timewait socket.
func finWait2(local, remote string, remaining time.Duration) inventory.Socket {
	s := timewait(local, remote, remaining)
	s.Substate = inventory.FinWait2
	return s
}

func listener(local string) inventory.Socket {
	l := netip.MustParseAddrPort(local)
	s := inventory.Socket{State: inventory.Listen, Substate: inventory.Listen, Saddr: l.Addr(), Sport: l.Port(), Bound: true}
	if l.Addr().Is6() {
		s.IPv6, s.Daddr = true, netip.IPv6Unspecified()
	} else {
		s.Daddr = netip.IPv4Unspecified()
	}
	return s
}

// bound is a socket that bind() gave a port and that never connected.
func bound(local string) inventory.Socket {
	s := listener(local)
	s.State, s.Substate = inventory.Close, inventory.Close
	return s
}

func addrPort(a string, port int) string {
	return netip.AddrPortFrom(netip.MustParseAddr(a), uint16(port)).String()
}

// namespace has the range 40000-40099 with 40010-40014 reserved: 95 ports
// before any is bound.
func namespace(socks ...inventory.Socket) *inventory.Namespace {
	return &inventory.Namespace{
		NamespaceRef: inventory.NamespaceRef{Inode: netns},
		Sysctls: inventory.Sysctls{
			PortRange:         inventory.PortSpan{Lo: 40000, Hi: 40099},
			Reserved:          []inventory.PortSpan{{Lo: 40010, Hi: 40014}},
			TwReuse:           0,
			TwReuseDelay:      time.Second,
			TwReuseDelayKnown: true,
			MaxTwBuckets:      131072,
			FinTimeout:        60 * time.Second,
			Timestamps:        1,
		},
		Sockets: socks,
	}
}

// example is the namespace of the README: on loopback, a client churning
// connections to a server on port 8080, and a few to port 8081.
func example() *inventory.Namespace {
	socks := []inventory.Socket{listener("0.0.0.0:40050"), listener("0.0.0.0:8080")}
	// The client closed first: 30 timewaits from distinct ports, expiring
	// 1 s, 2 s, ... 30 s from now.
	for i := range 30 {
		socks = append(socks, timewait(addrPort("127.0.0.1", 40020+i), "127.0.0.1:8080", time.Duration(i+1)*time.Second))
	}
	// 7 timewaits toward 8081 reuse the ports of the first 7 toward 8080:
	// a port is unique per destination only.
	for i := range 7 {
		socks = append(socks, timewait(addrPort("127.0.0.1", 40020+i), "127.0.0.1:8081", 30*time.Second))
	}
	// Two open connections, both sides.
	socks = append(socks,
		sock(inventory.Established, "127.0.0.1:40070", "127.0.0.1:8080"),
		sock(inventory.Established, "127.0.0.1:40071", "127.0.0.1:8080"),
		sock(inventory.Established, "127.0.0.1:8080", "127.0.0.1:40070"),
		sock(inventory.Established, "127.0.0.1:8080", "127.0.0.1:40071"),
	)
	// Connections the server closed first: the timewaits are on its side,
	// toward the clients' ephemeral ports.
	for i := range 5 {
		socks = append(socks, timewait("127.0.0.1:8080", addrPort("127.0.0.1", 40080+i), 45*time.Second))
	}
	socks = append(socks, finWait2("127.0.0.1:8080", "127.0.0.1:40085", 20*time.Second))
	return namespace(socks...)
}

// exported is d without its unexported fields, for comparisons.
func exported(ds []Destination) []Destination {
	out := slices.Clone(ds)
	for i := range out {
		out[i].expiries, out[i].takeable, out[i].reuseHold = nil, nil, 0
	}
	return out
}

func seconds(s ...float64) []time.Duration {
	out := make([]time.Duration, len(s))
	for i, v := range s {
		out[i] = time.Duration(v * float64(time.Second))
	}
	return out
}

func TestExample(t *testing.T) {
	r := Compute(example())

	wantNS := Namespace{
		Netns: netns, PortRange: inventory.PortSpan{Lo: 40000, Hi: 40099},
		RangeSize: 100, Reserved: 5, Bound: 1, Usable: 94,
		TwReuse: 0, TwReuseDelay: time.Second, Timestamps: true, MaxTwBuckets: 131072,
		Timewait: 30 + 7 + 5, FinWait2: 1, AcceptedTimewait: 5, AcceptedFinWait2: 1,
	}
	if r.Namespace != wantNS {
		t.Errorf("namespace:\n got %+v\nwant %+v", r.Namespace, wantNS)
	}

	want := []Destination{{
		Key:     Key{Netns: netns, Saddr: loopback, Daddr: loopback, Dport: 8080},
		ByState: ByState{Timewait: 30, Established: 2},
		// 100 − 5 reserved − 1 bound (40050) − 32 in use.
		PortsInUse: 32, PortsHeldOpen: 2, PortsAvailable: 62, Usable: 94,
		PortsAvailableWithReuse: 62,
		CeilingPerS:             94.0 / 60,
	}, {
		Key:        Key{Netns: netns, Saddr: loopback, Daddr: loopback, Dport: 8081},
		ByState:    ByState{Timewait: 7},
		PortsInUse: 7, PortsAvailable: 87, Usable: 94,
		PortsAvailableWithReuse: 87,
		CeilingPerS:             94.0 / 60,
	}}
	if got := exported(r.Destinations); !reflect.DeepEqual(got, want) {
		t.Errorf("destinations:\n got %+v\nwant %+v", got, want)
	}
	// No destination toward the clients' ports: those sockets are the
	// server's.
	wantServers := []Server{{Addr: loopback, Port: 8080, ByState: ByState{Timewait: 5, FinWait2: 1, Established: 2}}}
	if !reflect.DeepEqual(r.Servers, wantServers) {
		t.Errorf("servers:\n got %+v\nwant %+v", r.Servers, wantServers)
	}

	want8080 := seconds(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30)
	if got := r.Destinations[0].expiries; !slices.Equal(got, want8080) {
		t.Errorf("expiries toward 8080: %v, want %v", got, want8080)
	}
}

// TestExampleUnordered: the inventory's order does not matter.
func TestExampleUnordered(t *testing.T) {
	ns := example()
	want := Compute(ns)
	slices.Reverse(ns.Sockets)
	got := Compute(ns)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("reversed inventory:\n got %+v\nwant %+v", got, want)
	}
}

func TestReservedOverlappingBound(t *testing.T) {
	r := Compute(namespace(
		listener("0.0.0.0:40012"), // reserved already
		bound("10.0.0.1:40013"),   // reserved already
		bound("10.0.0.1:40040"),   // bound, unconnected: blocks, makes no destination
		listener("[::]:40041"),    // any family
		listener("0.0.0.0:40041"), // the same port again
		bound("10.0.0.1:39999"),   // out of range
		bound("10.0.0.1:40100"),   // out of range
	))
	n := r.Namespace
	if n.RangeSize != 100 || n.Reserved != 5 || n.Bound != 2 || n.Usable != 93 {
		t.Errorf("range %d reserved %d bound %d usable %d, want 100 5 2 93", n.RangeSize, n.Reserved, n.Bound, n.Usable)
	}
	if len(r.Destinations) != 0 || len(r.Servers) != 0 {
		t.Errorf("destinations %+v servers %+v, want none", r.Destinations, r.Servers)
	}
}

func TestPortsOutOfRange(t *testing.T) {
	r := Compute(namespace(
		timewait("10.0.0.1:50000", "10.0.0.2:9000", 10*time.Second),
		timewait("10.0.0.1:39999", "10.0.0.2:9000", 10*time.Second),
		sock(inventory.SynSent, "10.0.0.1:40100", "10.0.0.2:9000"),
	))
	d := r.Destinations[0]
	if d.PortsInUse != 3 || d.PortsAvailable != 95 || d.PortsHeldOpen != 0 || len(d.expiries) != 0 {
		t.Errorf("in use %d available %d held open %d expiries %v, want 3 95 0 none",
			d.PortsInUse, d.PortsAvailable, d.PortsHeldOpen, d.expiries)
	}
	if d.Timewait != 2 || d.Other != 1 {
		t.Errorf("by state %+v, want 2 timewait 1 other", d.ByState)
	}
}

func TestSharedPorts(t *testing.T) {
	const dst = "10.0.0.2:9000"
	r := Compute(namespace(
		// Two sockets on one 4-tuple: one port, held until the later
		// timer.
		timewait("10.0.0.1:40020", dst, 10*time.Second),
		timewait("10.0.0.1:40020", dst, 20*time.Second),
		// A timewait and an open socket on one port: held for good.
		timewait("10.0.0.1:40021", dst, 5*time.Second),
		sock(inventory.CloseWait, "10.0.0.1:40021", dst),
		timewait("10.0.0.1:40022", dst, 30*time.Second),
	))
	d := r.Destinations[0]
	if d.Timewait != 4 || d.Other != 1 {
		t.Errorf("by state %+v, want 4 timewait, 1 other", d.ByState)
	}
	if d.PortsInUse != 3 || d.PortsAvailable != 92 || d.PortsHeldOpen != 1 {
		t.Errorf("in use %d available %d held open %d, want 3 92 1", d.PortsInUse, d.PortsAvailable, d.PortsHeldOpen)
	}
	if want := seconds(20, 30); !slices.Equal(d.expiries, want) {
		t.Errorf("expiries %v, want %v", d.expiries, want)
	}
}

// TestPortBlockedAnyway: a port counted against Usable already (reserved
// or bound) is not counted again against the destination.
func TestPortBlockedAnyway(t *testing.T) {
	const dst = "10.0.0.2:9000"
	bindConnect := sock(inventory.Established, "10.0.0.1:40030", dst)
	bindConnect.Bound = true // bind() before connect()
	boundTimewait := timewait("10.0.0.1:40031", dst, time.Second)
	boundTimewait.Bound = true
	r := Compute(namespace(
		timewait("10.0.0.1:40011", dst, 10*time.Second), // reserved: bound by the application
		bindConnect,
		boundTimewait,
		timewait("10.0.0.1:40032", dst, 10*time.Second),
		timewait("10.0.0.1:40032", "10.0.0.3:9000", 10*time.Second),
	))
	n := r.Namespace
	if n.Bound != 2 || n.Usable != 93 {
		t.Errorf("bound %d usable %d, want 2 93", n.Bound, n.Usable)
	}
	d := r.Destinations[0]
	if d.Dport != 9000 || d.Daddr != netip.MustParseAddr("10.0.0.2") {
		t.Fatalf("first destination %v, want 10.0.0.2:9000", d.Key)
	}
	if d.PortsInUse != 4 || d.PortsAvailable != 92 || d.PortsHeldOpen != 0 {
		t.Errorf("in use %d available %d held open %d, want 4 92 0", d.PortsInUse, d.PortsAvailable, d.PortsHeldOpen)
	}
	if other := r.Destinations[1]; other.PortsAvailable != 92 {
		t.Errorf("10.0.0.3:9000: available %d, want 92", other.PortsAvailable)
	}
}

func TestIPv6(t *testing.T) {
	r := Compute(namespace(
		listener("[::]:8080"),
		timewait("[::1]:40020", "[::1]:8080", time.Second),
		sock(inventory.Established, "[2001:db8::1]:40020", "[2001:db8::2]:443"),
		sock(inventory.Established, "[2001:db8::1]:40021", "[2001:db8::2]:443"),
		timewait("127.0.0.1:40020", "127.0.0.1:8080", time.Second),
		// Accepted by the IPv6 listener, from a client elsewhere.
		sock(inventory.Established, "[2001:db8::1]:8080", "[2001:db8::9]:51000"),
	))
	var keys []string
	for _, d := range r.Destinations {
		keys = append(keys, netip.AddrPortFrom(d.Daddr, d.Dport).String())
	}
	// Fewest ports available first, then IPv4 before IPv6.
	if want := []string{"[2001:db8::2]:443", "127.0.0.1:8080", "[::1]:8080"}; !slices.Equal(keys, want) {
		t.Errorf("destinations %v, want %v", keys, want)
	}
	for _, d := range r.Destinations {
		if d.PortsAvailable != 95-d.PortsInUse {
			t.Errorf("%v: available %d, in use %d", d.Key, d.PortsAvailable, d.PortsInUse)
		}
	}
	want := []Server{{Addr: netip.MustParseAddr("2001:db8::1"), Port: 8080, ByState: ByState{Established: 1}}}
	if !reflect.DeepEqual(r.Servers, want) {
		t.Errorf("servers %+v, want %+v", r.Servers, want)
	}
}

func TestNoDestination(t *testing.T) {
	closed := sock(inventory.Close, "10.0.0.1:40020", "10.0.0.2:80") // unhashed
	noPort := sock(inventory.SynSent, "10.0.0.1:40021", "10.0.0.2:0")
	r := Compute(namespace(closed, noPort, bound("0.0.0.0:40022"), inventory.Socket{State: inventory.Established}))
	if len(r.Destinations) != 0 {
		t.Errorf("destinations %+v, want none", r.Destinations)
	}
	if r.Namespace.Usable != 94 {
		t.Errorf("usable %d, want 94", r.Namespace.Usable)
	}
}

func TestEmptyRange(t *testing.T) {
	ns := namespace(timewait("10.0.0.1:40020", "10.0.0.2:80", time.Second))
	ns.Sysctls.PortRange = inventory.PortSpan{Lo: 40001, Hi: 40000}
	r := Compute(ns)
	n, d := r.Namespace, r.Destinations[0]
	if n.RangeSize != 0 || n.Usable != 0 || d.PortsAvailable != 0 || d.PortsInUse != 1 || d.CeilingPerS != 0 {
		t.Errorf("namespace %+v destination %+v, want no ports", n, d)
	}
}

func TestWholeRange(t *testing.T) {
	ns := namespace(timewait("10.0.0.1:65535", "10.0.0.2:80", time.Second), listener("0.0.0.0:0"))
	ns.Sysctls.PortRange = inventory.PortSpan{Lo: 0, Hi: 65535}
	ns.Sysctls.Reserved = []inventory.PortSpan{{Lo: 65530, Hi: 65535}}
	r := Compute(ns)
	if n := r.Namespace; n.RangeSize != 65536 || n.Reserved != 6 || n.Bound != 1 || n.Usable != 65529 {
		t.Errorf("namespace %+v", n)
	}
	if d := r.Destinations[0]; d.PortsAvailable != 65529 {
		t.Errorf("available %d, want 65529", d.PortsAvailable)
	}
}

func TestReuse(t *testing.T) {
	const delay = time.Second
	// Toward each destination: two timewaits tcp_tw_reuse can take over
	// (aged 30 s, and aged exactly the delay), and four it cannot.
	socks := func(src, dst string) []inventory.Socket {
		noTimestamps := timewait(addrPort(src, 40023), dst, 30*time.Second)
		noTimestamps.Timestamps = false
		unknown := timewait(addrPort(src, 40025), dst, 0)
		unknown.RemainingKnown = false
		return []inventory.Socket{
			timewait(addrPort(src, 40020), dst, 30*time.Second),
			timewait(addrPort(src, 40021), dst, TimewaitLen-delay),
			timewait(addrPort(src, 40022), dst, TimewaitLen-delay+time.Millisecond), // too young
			noTimestamps,
			finWait2(addrPort(src, 40024), dst, 30*time.Second), // never reused
			unknown,
			sock(inventory.Established, addrPort(src, 40026), dst),
		}
	}
	for _, c := range []struct {
		name       string
		reuse      int
		timestamps int
		src, dst   string
		want       bool
	}{
		{"off", 0, 1, "127.0.0.1", "127.0.0.1:80", false},
		{"on", 1, 1, "10.0.0.1", "10.0.0.2:80", true},
		{"on without timestamps", 1, 0, "10.0.0.1", "10.0.0.2:80", false},
		{"loopback only, loopback", 2, 1, "127.0.0.1", "127.0.0.1:80", true},
		{"loopback only, 127.0.0.0/8", 2, 1, "127.0.0.2", "127.0.0.3:80", true},
		{"loopback only, loopback destination", 2, 1, "10.0.0.1", "127.0.0.1:80", true},
		{"loopback only, loopback source", 2, 1, "127.0.0.1", "10.0.0.2:80", true},
		{"loopback only, not loopback", 2, 1, "10.0.0.1", "10.0.0.2:80", false},
		{"loopback only, without timestamps", 2, 0, "127.0.0.1", "127.0.0.1:80", false},
		{"loopback only, IPv6 loopback", 2, 1, "::1", "[::1]:80", true},
		{"loopback only, IPv6", 2, 1, "2001:db8::1", "[2001:db8::2]:80", false},
		{"loopback only, v4-mapped loopback", 2, 1, "::ffff:127.0.0.1", "[::ffff:127.0.0.1]:80", true},
		{"on, IPv6", 1, 1, "2001:db8::1", "[2001:db8::2]:80", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns := namespace(socks(c.src, c.dst)...)
			ns.Sysctls.TwReuse, ns.Sysctls.Timestamps = c.reuse, c.timestamps
			d := Compute(ns).Destinations[0]
			if d.Reuse != c.want {
				t.Fatalf("reuse %v, want %v", d.Reuse, c.want)
			}
			wantReusable, wantCeiling := 0, 0.0
			if c.want {
				wantReusable, wantCeiling = 2, 95
			}
			if d.PortsAvailable != 88 || d.PortsReusable != wantReusable || d.PortsAvailableWithReuse != 88+wantReusable {
				t.Errorf("available %d, reusable %d, with reuse %d; want 88, %d, %d",
					d.PortsAvailable, d.PortsReusable, d.PortsAvailableWithReuse, wantReusable, 88+wantReusable)
			}
			if d.CeilingWithReusePerS != wantCeiling || d.CeilingPerS != 95.0/60 {
				t.Errorf("ceilings %v/s, %v/s with reuse; want %v/s, %v/s", d.CeilingPerS, d.CeilingWithReusePerS, 95.0/60, wantCeiling)
			}
		})
	}
}

func TestReuseDelay(t *testing.T) {
	for _, c := range []struct {
		delay        time.Duration
		wantDelay    time.Duration
		wantReusable int
	}{
		{0, DefaultTwReuseDelay, 2},    // unknown: the default, 1 s
		{5 * time.Second, 0, 1},        // 6.14+: only the one aged 30 s
		{30 * time.Second, 0, 1},       // exactly its age
		{90 * time.Second, 0, 0},       // longer than TIME_WAIT: reuse never comes
		{time.Millisecond, 0, 2},       //
		{-time.Second, time.Second, 2}, // nonsense: the default
	} {
		ns := namespace(
			timewait("127.0.0.1:40020", "127.0.0.1:80", 30*time.Second),
			timewait("127.0.0.1:40021", "127.0.0.1:80", 58*time.Second),
			timewait("127.0.0.1:40022", "127.0.0.1:80", 60*time.Second),
		)
		ns.Sysctls.TwReuse, ns.Sysctls.TwReuseDelay = 2, c.delay
		r := Compute(ns)
		wantDelay := c.wantDelay
		if wantDelay == 0 {
			wantDelay = c.delay
		}
		if r.Namespace.TwReuseDelay != wantDelay {
			t.Errorf("delay %v: namespace delay %v, want %v", c.delay, r.Namespace.TwReuseDelay, wantDelay)
		}
		d := r.Destinations[0]
		if d.PortsReusable != c.wantReusable {
			t.Errorf("delay %v: reusable %d, want %d", c.delay, d.PortsReusable, c.wantReusable)
		}
		if want := 95 / min(wantDelay, TimewaitLen).Seconds(); d.CeilingWithReusePerS != want {
			t.Errorf("delay %v: ceiling with reuse %v, want %v", c.delay, d.CeilingWithReusePerS, want)
		}
	}
}

// TestServerSide: a socket on a listening port is the server's, whatever
// its state and whichever address the listener has.
func TestServerSide(t *testing.T) {
	r := Compute(namespace(
		listener("10.0.0.1:443"),
		listener("0.0.0.0:40050"), // a server in the range
		sock(inventory.Established, "10.0.0.1:443", "10.0.0.9:51000"),
		sock(inventory.SynRecv, "10.0.0.1:443", "10.0.0.9:51001"),
		timewait("10.0.0.2:443", "10.0.0.9:51002", time.Second), // another address, same port
		timewait("10.0.0.1:40050", "10.0.0.9:51003", time.Second),
		sock(inventory.CloseWait, "10.0.0.1:40050", "10.0.0.9:51004"),
	))
	if len(r.Destinations) != 0 {
		t.Errorf("destinations %+v, want none", r.Destinations)
	}
	want := []Server{
		{Addr: netip.MustParseAddr("10.0.0.1"), Port: 443, ByState: ByState{Established: 1, Other: 1}},
		{Addr: netip.MustParseAddr("10.0.0.1"), Port: 40050, ByState: ByState{Timewait: 1, Other: 1}},
		{Addr: netip.MustParseAddr("10.0.0.2"), Port: 443, ByState: ByState{Timewait: 1}},
	}
	if !reflect.DeepEqual(r.Servers, want) {
		t.Errorf("servers:\n got %+v\nwant %+v", r.Servers, want)
	}
	if n := r.Namespace; n.AcceptedTimewait != 2 || n.Timewait != 2 || n.Bound != 1 {
		t.Errorf("namespace %+v, want 2 accepted timewaits of 2, 1 bound", n)
	}
}

func TestSortedMostEndangeredFirst(t *testing.T) {
	var socks []inventory.Socket
	for i := range 3 {
		socks = append(socks, timewait(addrPort("10.0.0.1", 40020+i), "10.0.0.3:80", time.Second))
	}
	for i := range 5 {
		socks = append(socks, timewait(addrPort("10.0.0.1", 40020+i), "10.0.0.2:80", time.Second))
	}
	socks = append(socks,
		timewait("10.0.0.1:40020", "10.0.0.2:443", time.Second),
		timewait("10.0.0.1:40020", "10.0.0.2:22", time.Second),
	)
	var got []string
	for _, d := range Compute(namespace(socks...)).Destinations {
		got = append(got, netip.AddrPortFrom(d.Daddr, d.Dport).String())
	}
	want := []string{"10.0.0.2:80", "10.0.0.3:80", "10.0.0.2:22", "10.0.0.2:443"}
	if !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
}
