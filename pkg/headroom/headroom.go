// Package headroom computes, from the socket inventory of one network
// namespace, how many local ports connect() can still pick toward each
// destination, and forecasts when they run out. It is arithmetic only: it
// reads an inventory.Namespace and never the kernel.
//
// # Model
//
// connect() on a socket with no local port picks one from
// net.ipv4.ip_local_port_range (__inet_hash_connect in
// net/ipv4/inet_hashtables.c). It skips:
//
//   - every port in net.ipv4.ip_local_reserved_ports;
//   - for every destination, every port whose bind bucket bind() or
//     listen() made (inventory.Socket.Bound; a LISTEN socket's port always
//     counts as bound);
//   - toward one destination, every port that a socket in any state,
//     TIME_WAIT included, already uses toward that destination: the
//     connection's 4-tuple would not be unique. A destination is the
//     network namespace, the source address, the destination address and
//     the destination port (Key). The same port stays free toward every
//     other destination.
//
// So, with R the range, X the reserved ports, B the bound ports and U(D)
// the local ports of the sockets toward destination D:
//
//	Usable         = |R| − |X ∩ R| − |(B ∩ R) \ X|
//	PortsAvailable = Usable − |(U(D) ∩ R) \ X \ B|
//
// A port counts once however many sockets use it. Reserved and bound ports
// are one 65536-bit set per namespace; U(D) is counted per destination.
//
// Which sockets are toward a destination:
//
//   - A socket whose local port has a LISTEN socket in the namespace, on
//     any address, was accepted by that listener: it is the server side of
//     a connection, and its remote port is the client's ephemeral port.
//     It makes no destination; Report.Servers counts it per local address
//     and port. It holds no ephemeral port (its port is the listener's,
//     which is bound anyway).
//   - LISTEN sockets, sockets in CLOSE (unhashed: they keep a port only
//     when bound) and sockets with no remote address or port make no
//     destination; they block their port, for every destination, when it
//     is bound.
//   - Every other socket, SYN_SENT through TIME_WAIT, is toward its
//     (namespace, Saddr, Daddr, Dport).
//
// # tcp_tw_reuse
//
// tcp_tw_reuse lets connect() take over a port still held by a timewait
// socket toward the same destination (tcp_twsk_unique in
// net/ipv4/tcp_ipv4.c). Destination.Reuse is set when
// net.ipv4.tcp_timestamps is not 0 and net.ipv4.tcp_tw_reuse is 1, or is 2
// and the source or the destination address is loopback (127.0.0.0/8,
// ::1, or a v4-mapped 127.0.0.0/8): the kernel's rule on the timewait's own
// addresses, which also counts timewaits bound to the lo device; the
// inventory does not tell those, so they count as not loopback. The kernel
// checks the timewait's timestamps, not the sysctl; the sysctl is
// required here as well because without it new connections leave no
// reusable timewait.
//
// Toward a destination where Reuse applies, a timewait port is reusable
// now when its substate is TIME_WAIT (the kernel never reuses an orphaned
// FIN_WAIT2), it saw TCP timestamps, its Remaining is known, and its age,
// TimewaitLen − Remaining, is at least the reuse delay: the
// net.ipv4.tcp_tw_reuse_delay sysctl (6.14+) or 1 s.
//
// # What the model leaves out
//
//   - For a range of odd size the kernel scans only size−1 ports per
//     connect() (it rounds the count down to even), so its last free port
//     can be missed; the model counts every port of the range.
//   - Per-socket ranges (IP_LOCAL_PORT_RANGE), sockets bound to a device
//     or a VRF (the 4-tuple check includes the device), and bind buckets
//     made by connect() that a later bind() shares.
//   - A timewait socket's timer restarts when the peer retransmits its
//     FIN; Remaining then understates the age, so reuse is predicted late,
//     never early.
package headroom

import (
	"cmp"
	"math/bits"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/twtrace/twtrace/pkg/inventory"
)

// TimewaitLen is TCP_TIMEWAIT_LEN: how long a TIME_WAIT socket holds its
// port. Linux does not let it be tuned.
const TimewaitLen = 60 * time.Second

// DefaultTwReuseDelay is how old a timewait must be before tcp_tw_reuse
// takes it over, on kernels without net.ipv4.tcp_tw_reuse_delay (and its
// default). Compute uses it when Sysctls.TwReuseDelay is not positive.
const DefaultTwReuseDelay = time.Second

// Key identifies a destination: where connect() needs a unique local port.
type Key struct {
	Netns uint32
	// Saddr is the local address the sockets are bound to; IPv4 or IPv6,
	// a v4-mapped address as IPv4.
	Saddr netip.Addr
	Daddr netip.Addr
	Dport uint16
}

// ByState counts sockets by state.
type ByState struct {
	// Timewait counts timewait sockets of substate TIME_WAIT: every one
	// whose substate is not FIN_WAIT2.
	Timewait int
	// FinWait2 counts timewait sockets of substate FIN_WAIT2: orphaned
	// FIN_WAIT2 connections, bounded by tcp_fin_timeout.
	FinWait2    int
	Established int
	// Other counts SYN_SENT, SYN_RECV, FIN_WAIT1, CLOSE_WAIT, LAST_ACK,
	// CLOSING and FIN_WAIT2 sockets that are still full sockets.
	Other int
}

// Total is the number of sockets counted.
func (b *ByState) Total() int { return b.Timewait + b.FinWait2 + b.Established + b.Other }

func (b *ByState) add(state, substate inventory.State) {
	switch {
	case state == inventory.TimeWait && substate == inventory.FinWait2:
		b.FinWait2++
	case state == inventory.TimeWait:
		b.Timewait++
	case state == inventory.Established:
		b.Established++
	default:
		b.Other++
	}
}

// Destination is the port headroom toward one destination.
type Destination struct {
	Key
	ByState // sockets toward the destination

	// PortsInUse is the number of distinct local ports of sockets toward
	// the destination, in the range or not.
	PortsInUse int
	// PortsHeldOpen is how many of the ports counted against
	// PortsAvailable are held by sockets other than timewaits: Forecast
	// takes them as held for good.
	PortsHeldOpen int
	// PortsAvailable is how many ports connect() can pick toward the
	// destination now (see the package doc).
	PortsAvailable int
	// Usable is the namespace's Usable: what connect() could pick toward a
	// destination with nothing in use.
	Usable int

	// Reuse: tcp_tw_reuse applies to this destination.
	Reuse bool
	// PortsReusable is how many timewait ports toward the destination
	// connect() could take over now; 0 unless Reuse.
	PortsReusable int
	// PortsAvailableWithReuse is PortsAvailable + PortsReusable.
	PortsAvailableWithReuse int

	// CeilingPerS is Usable / TimewaitLen: the most new connections per
	// second the destination sustains when every connection ends in
	// TIME_WAIT on this host.
	CeilingPerS float64
	// CeilingWithReusePerS is Usable / the reuse delay (at most
	// TimewaitLen) when Reuse; 0 otherwise.
	CeilingWithReusePerS float64

	// expiries holds, sorted, when each timewait port counted against
	// PortsAvailable frees: Remaining, or TimewaitLen when unknown.
	expiries []time.Duration
	// takeable holds, sorted, when each of the same ports can be taken
	// with tcp_tw_reuse (0: now); nil unless Reuse.
	takeable []time.Duration
	// reuseHold is how long a new connection's timewait holds its port
	// when Reuse: the reuse delay, at most TimewaitLen.
	reuseHold time.Duration
}

// Server counts the sockets of connections accepted on one local address
// and port. They hold no ephemeral port.
type Server struct {
	Addr netip.Addr
	Port uint16
	ByState
}

// Namespace is the port budget of a network namespace, shared by all its
// destinations.
type Namespace struct {
	Netns     uint32
	PortRange inventory.PortSpan
	// RangeSize is the number of ports in PortRange; 0 if Lo > Hi.
	RangeSize int
	// Reserved is the number of ip_local_reserved_ports in the range.
	Reserved int
	// Bound is the number of ports in the range, not reserved, that
	// bind() or listen() took.
	Bound int
	// Usable is RangeSize − Reserved − Bound.
	Usable int

	TwReuse int
	// TwReuseDelay is the reuse delay Compute used (DefaultTwReuseDelay
	// when the inventory gave none).
	TwReuseDelay time.Duration
	// Timestamps: net.ipv4.tcp_timestamps is not 0.
	Timestamps   bool
	MaxTwBuckets int

	// Timewait and FinWait2 count every timewait socket of the namespace
	// by substate, clients' and servers' alike.
	Timewait, FinWait2 int
	// AcceptedTimewait and AcceptedFinWait2 count those of accepted
	// connections (the sum over Report.Servers).
	AcceptedTimewait, AcceptedFinWait2 int
}

// Report is the headroom of one namespace.
type Report struct {
	Namespace Namespace
	// Destinations are sorted by PortsAvailable, fewest first, then by
	// Key: the most endangered first.
	Destinations []Destination
	// Servers are sorted by address, then port.
	Servers []Server
}

// never is the release time of a port held by a socket that is not a
// timewait.
const never = time.Duration(1<<63 - 1)

// Compute returns the port headroom of ns. It allocates a few times per
// call, not per socket.
func Compute(ns *inventory.Namespace) Report {
	sc := &ns.Sysctls
	n := Namespace{
		Netns:        ns.Inode,
		PortRange:    sc.PortRange,
		TwReuse:      sc.TwReuse,
		TwReuseDelay: sc.TwReuseDelay,
		Timestamps:   sc.Timestamps != 0,
		MaxTwBuckets: sc.MaxTwBuckets,
	}
	if n.TwReuseDelay <= 0 {
		n.TwReuseDelay = DefaultTwReuseDelay
	}
	t := tally{socks: socketsOf(ns), delay: n.TwReuseDelay, reuseHold: min(n.TwReuseDelay, TimewaitLen)}
	var listening portSet
	budget(ns, &n, &t.usable, &listening)

	g := grouping{ns: ns}
	scratch := scratchPool.Get().(*[]int32)
	defer scratchPool.Put(scratch)
	g.classify(&n, &listening, scratch)
	end := make([]int, len(g.dests))
	order := g.order(end)
	t.expiries = make([]time.Duration, 0, len(order))
	for j := range g.dests {
		d := &g.dests[j]
		if d.Reuse && t.takeable == nil {
			t.takeable = make([]time.Duration, 0, len(order))
		}
		t.ports(d, order[end[j]-d.Total():end[j]])
	}

	slices.SortFunc(g.dests, func(a, b Destination) int {
		if c := cmp.Compare(a.PortsAvailable, b.PortsAvailable); c != 0 {
			return c
		}
		return compareKeys(&a.Key, &b.Key)
	})
	slices.SortFunc(g.servers, func(a, b Server) int {
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c
		}
		return cmp.Compare(a.Port, b.Port)
	})
	return Report{Namespace: n, Destinations: g.dests, Servers: g.servers}
}

// grouping sorts a namespace's sockets into destinations (connections it
// opened) and servers (connections accepted on a listening port). Socket
// i of the namespace is ns.Sockets[i], or ns.Conns[i-len(ns.Sockets)].
type grouping struct {
	ns *inventory.Namespace

	dests []Destination
	// destOf[i] is the index in dests of socket i's destination, -1 when
	// it has none.
	destOf  []int32
	scratch []int32
	servers []Server

	index       map[Key]int32
	serverIndex map[netip.AddrPort]int
}

// scratchPool holds the grouping's scratch, 8 bytes per socket, from one
// Compute to the next.
var scratchPool = sync.Pool{New: func() any { return new([]int32) }}

// classify counts the namespace's timewait sockets and finds each
// socket's destination or server.
func (g *grouping) classify(n *Namespace, listening *portSet, scratch *[]int32) {
	socks, total := g.ns.Sockets, g.ns.Len()
	if cap(*scratch) < 2*total {
		*scratch = make([]int32, 2*total)
	}
	g.scratch = (*scratch)[:2*total]
	g.destOf = g.scratch[:total]
	g.index = make(map[Key]int32)
	for i := range socks {
		s := &socks[i]
		g.destOf[i] = -1
		n.count(s.State, s.Substate)
		if s.State == inventory.Listen || s.State == inventory.Close || !hasPeer(s) {
			continue
		}
		if listening.has(s.Sport) {
			g.servers[g.server(s.Saddr, s.Sport)].add(s.State, s.Substate)
			continue
		}
		j := g.dest(Key{Netns: g.ns.Inode, Saddr: s.Saddr, Daddr: s.Daddr, Dport: s.Dport}, n)
		g.dests[j].add(s.State, s.Substate)
		g.destOf[i] = j
	}
	g.classifyConns(n)
	for i := range g.servers {
		n.AcceptedTimewait += g.servers[i].Timewait
		n.AcceptedFinWait2 += g.servers[i].FinWait2
	}
}

// classifyConns does what classify does for the namespace's groups:
// a group's destination or server is found once.
func (g *grouping) classifyConns(n *Namespace) {
	groups, conns, base := g.ns.Groups, g.ns.Conns, len(g.ns.Sockets)
	of := make([]int32, len(groups)) // a group's destination or server
	for i := range groups {
		gr := &groups[i]
		if gr.Server {
			of[i] = int32(g.server(gr.Saddr, gr.Port))
		} else {
			of[i] = g.dest(Key{Netns: g.ns.Inode, Saddr: gr.Saddr, Daddr: gr.Daddr, Dport: gr.Port}, n)
		}
	}
	for k := range conns {
		c := &conns[k]
		n.count(c.State, c.Substate)
		j := of[c.Group]
		if groups[c.Group].Server {
			g.servers[j].add(c.State, c.Substate)
			g.destOf[base+k] = -1
			continue
		}
		g.dests[j].add(c.State, c.Substate)
		g.destOf[base+k] = j
	}
}

// dest is the index of destination k, made when new.
func (g *grouping) dest(k Key, n *Namespace) int32 {
	j, ok := g.index[k]
	if !ok {
		j = int32(len(g.dests))
		g.index[k] = j
		g.dests = append(g.dests, Destination{Key: k, Usable: n.Usable, Reuse: reuseApplies(&g.ns.Sysctls, &k)})
	}
	return j
}

// server is the index of the server of local address and port, made when
// new.
func (g *grouping) server(addr netip.Addr, port uint16) int {
	if g.serverIndex == nil {
		g.serverIndex = make(map[netip.AddrPort]int)
	}
	ap := netip.AddrPortFrom(addr, port)
	j, ok := g.serverIndex[ap]
	if !ok {
		j = len(g.servers)
		g.serverIndex[ap] = j
		g.servers = append(g.servers, Server{Addr: addr, Port: port})
	}
	return j
}

// count counts a timewait socket of the namespace by its substate.
func (n *Namespace) count(state, substate inventory.State) {
	if state == inventory.TimeWait {
		if substate == inventory.FinWait2 {
			n.FinWait2++
		} else {
			n.Timewait++
		}
	}
}

// order groups the sockets by destination (a counting sort of their
// indices), so that one bitset, reused destination after destination,
// finds the ports a destination's sockets share. end[j] starts where
// group j starts in the order and, once every socket is placed, is where
// it ends.
func (g *grouping) order(end []int) []int32 {
	total := 0
	for j := range g.dests {
		total += g.dests[j].Total()
		end[j] = total - g.dests[j].Total()
	}
	order := g.scratch[len(g.destOf):][:total]
	for i, j := range g.destOf {
		if j >= 0 {
			order[end[j]] = int32(i)
			end[j]++
		}
	}
	return order
}

// tally counts the ports of the sockets toward each destination in turn.
type tally struct {
	socks sockets
	// usable holds the ports connect() may pick toward a destination with
	// nothing in use; seen is empty between destinations.
	usable, seen     portSet
	delay, reuseHold time.Duration
	// expiries and takeable hold the destinations' slices of the same
	// names, one after the other.
	expiries, takeable []time.Duration
}

// ports sets the port figures of d, given the indices in t.socks of its
// sockets.
func (t *tally) ports(d *Destination, group []int32) {
	socks := &t.socks
	shared := false
	for _, i := range group {
		p := socks.port(i)
		shared = shared || t.seen.has(p)
		t.seen.add(p)
	}
	for _, i := range group {
		t.seen.remove(socks.port(i))
	}
	if shared {
		// Rare: the kernel keeps one socket per 4-tuple.
		slices.SortFunc(group, func(a, b int32) int { return cmp.Compare(socks.port(a), socks.port(b)) })
	}
	e0, t0 := len(t.expiries), len(t.takeable)
	inUse := 0
	for k := 0; k < len(group); {
		// The port of group[k], and of the sockets after it that share
		// it: released when they all are.
		p := socks.port(group[k])
		h := socks.release(group[k], d.Reuse, t.delay)
		for k++; shared && k < len(group) && socks.port(group[k]) == p; k++ {
			h = h.and(socks.release(group[k], d.Reuse, t.delay))
		}
		d.PortsInUse++
		if !t.usable.has(p) {
			continue // out of the range, or counted against Usable already
		}
		inUse++
		if h.free == never {
			d.PortsHeldOpen++
			continue
		}
		t.expiries = append(t.expiries, h.free)
		if d.Reuse {
			t.takeable = append(t.takeable, h.takeable)
			if h.now {
				d.PortsReusable++
			}
		}
	}
	d.expiries = t.expiries[e0:len(t.expiries):len(t.expiries)]
	slices.Sort(d.expiries)
	if d.Reuse {
		d.takeable = t.takeable[t0:len(t.takeable):len(t.takeable)]
		slices.Sort(d.takeable)
		d.reuseHold = t.reuseHold
		d.CeilingWithReusePerS = float64(d.Usable) / t.reuseHold.Seconds()
	}
	d.PortsAvailable = d.Usable - inUse
	d.PortsAvailableWithReuse = d.PortsAvailable + d.PortsReusable
	d.CeilingPerS = float64(d.Usable) / TimewaitLen.Seconds()
}

// budget fills the range counts of n, the ports connect() may pick toward
// a destination with nothing in use, and the ports that have a listener.
func budget(ns *inventory.Namespace, n *Namespace, usable, listening *portSet) {
	var reserved, bound portSet
	for _, span := range ns.Sysctls.Reserved {
		reserved.addSpan(span.Lo, span.Hi)
	}
	for i := range ns.Sockets {
		s := &ns.Sockets[i]
		if s.State == inventory.Listen {
			listening.add(s.Sport)
			bound.add(s.Sport) // listen() made or joined a bind bucket
		} else if s.Bound {
			bound.add(s.Sport)
		}
	}
	lo, hi := n.PortRange.Lo, n.PortRange.Hi
	if lo > hi {
		return
	}
	n.RangeSize = int(hi) - int(lo) + 1
	for w := lo >> 6; w <= hi>>6; w++ {
		in := spanMask(w, lo, hi)
		n.Reserved += bits.OnesCount64(reserved[w] & in)
		n.Bound += bits.OnesCount64(bound[w] &^ reserved[w] & in)
		usable[w] = in &^ reserved[w] &^ bound[w]
	}
	n.Usable = n.RangeSize - n.Reserved - n.Bound
}

// hasPeer reports whether s has a remote address and port: whether it is
// connected or connecting, not just bound.
func hasPeer(s *inventory.Socket) bool {
	return s.Daddr.IsValid() && !s.Daddr.IsUnspecified() && s.Dport != 0
}

// reuseApplies is tcp_twsk_unique's rule for the timewaits toward k, and
// net.ipv4.tcp_timestamps.
func reuseApplies(sc *inventory.Sysctls, k *Key) bool {
	if sc.Timestamps == 0 || sc.TwReuse == 0 {
		return false
	}
	// The kernel treats any value but 2 as "on"; the sysctl allows 0-2.
	return sc.TwReuse != 2 || isLoopback(k.Saddr) || isLoopback(k.Daddr)
}

func isLoopback(a netip.Addr) bool { return a.Unmap().IsLoopback() }

// hold is when a port toward a destination is released.
type hold struct {
	// free is when connect() may pick the port again without
	// tcp_tw_reuse: never for a socket other than a timewait.
	free time.Duration
	// takeable is when tcp_tw_reuse may take it over (0: now); free
	// when it cannot.
	takeable time.Duration
	// now: tcp_tw_reuse may take it over now.
	now bool
}

// and is the hold of a port two sockets use: released when both are.
func (h hold) and(o hold) hold {
	return hold{free: max(h.free, o.free), takeable: max(h.takeable, o.takeable), now: h.now && o.now}
}

// sockets are a namespace's sockets by index: Sockets, then Conns.
type sockets struct {
	socks []inventory.Socket
	conns []inventory.Conn
}

func socketsOf(ns *inventory.Namespace) sockets { return sockets{ns.Sockets, ns.Conns} }

// port is socket i's local port; only asked of sockets toward a
// destination (a conn of a client group).
func (s *sockets) port(i int32) uint16 {
	if int(i) < len(s.socks) {
		return s.socks[i].Sport
	}
	return s.conns[int(i)-len(s.socks)].Port
}

// release is the hold of socket i on its port toward its destination.
func (s *sockets) release(i int32, reuse bool, delay time.Duration) hold {
	if int(i) < len(s.socks) {
		sk := &s.socks[i]
		return release(sk.State, sk.Substate, sk.Remaining, sk.RemainingKnown, sk.Timestamps, reuse, delay)
	}
	c := &s.conns[int(i)-len(s.socks)]
	remaining, known := c.Remaining()
	return release(c.State, c.Substate, remaining, known, c.Timestamps(), reuse, delay)
}

// release is the hold of a socket on its port toward its destination. A
// timewait whose remaining timer is unknown is taken to hold its port the
// longest it can, TimewaitLen, and not to be reusable.
func release(state, substate inventory.State, remaining time.Duration, known, timestamps, reuse bool, delay time.Duration) hold {
	if state != inventory.TimeWait {
		return hold{free: never, takeable: never}
	}
	if !known {
		return hold{free: TimewaitLen, takeable: TimewaitLen}
	}
	remaining = min(max(remaining, 0), TimewaitLen)
	h := hold{free: remaining, takeable: remaining}
	if reuse && substate != inventory.FinWait2 && timestamps {
		age := TimewaitLen - remaining
		if age >= delay {
			h.takeable, h.now = 0, true
		} else {
			h.takeable = min(delay-age, remaining)
		}
	}
	return h
}

// Compare orders keys by namespace, source address, destination address,
// then port.
func (a Key) Compare(b Key) int { return compareKeys(&a, &b) }

func compareKeys(a, b *Key) int {
	if c := cmp.Compare(a.Netns, b.Netns); c != 0 {
		return c
	}
	if c := a.Saddr.Compare(b.Saddr); c != 0 {
		return c
	}
	if c := a.Daddr.Compare(b.Daddr); c != 0 {
		return c
	}
	return cmp.Compare(a.Dport, b.Dport)
}
