package inventory

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
	"unsafe"
)

// Record flags, as bpf/inventory.bpf.c sets them.
const (
	flagBound      = 1 << 0
	flagTimestamps = 1 << 1
	flagTimer      = 1 << 2
)

const (
	afInet  = 2
	afInet6 = 10
)

// recordSize and the offsets come from the struct bpf2go generated from the
// C record: the Go side never hand-writes the layout.
const (
	recordSize   = int(unsafe.Sizeof(inventorySockRecord{}))
	offSaddr     = unsafe.Offsetof(inventorySockRecord{}.Saddr)
	offDaddr     = unsafe.Offsetof(inventorySockRecord{}.Daddr)
	offRemaining = unsafe.Offsetof(inventorySockRecord{}.RemainingJiffies)
	offFamily    = unsafe.Offsetof(inventorySockRecord{}.Family)
	offSport     = unsafe.Offsetof(inventorySockRecord{}.Sport)
	offDport     = unsafe.Offsetof(inventorySockRecord{}.Dport)
	offState     = unsafe.Offsetof(inventorySockRecord{}.State)
	offSubstate  = unsafe.Offsetof(inventorySockRecord{}.Substate)
	offFlags     = unsafe.Offsetof(inventorySockRecord{}.Flags)
)

// decoder turns the iterator's records into a Namespace, grouping the
// connections as they come. Its memory is reused scan after scan.
type decoder struct {
	hz uint32 // converts timers (0: unknown)
	ns *Namespace
	// listening holds the ports of the listeners seen so far: iter/tcp
	// walks the listening hash before the established one, so an accepted
	// connection comes after its listener.
	listening portSet
	index     map[groupKey]uint32
}

// groupKey is a group as the records give it, before the addresses are
// converted (once per group).
type groupKey struct {
	saddr, daddr [16]byte
	family, port uint16
	server       bool
}

// reset starts the decoding of ns, reusing its slices.
func (d *decoder) reset(ns *Namespace) {
	d.ns = ns
	d.listening = portSet{}
	if d.index == nil {
		d.index = make(map[groupKey]uint32)
	}
	clear(d.index)
}

// records decodes raw, whole records of the iterator's output, into d.ns.
// It allocates only when a slice of d.ns has no room or a group is new.
func (d *decoder) records(raw []byte) error {
	if len(raw)%recordSize != 0 {
		return fmt.Errorf("iterator output of %d bytes is not a whole number of %d-byte records", len(raw), recordSize)
	}
	for off := 0; off < len(raw); off += recordSize {
		if err := d.record(raw[off : off+recordSize]); err != nil {
			return err
		}
	}
	return nil
}

// record decodes one record: into a Conn when the socket is a connection
// of a group, else into a Socket.
func (d *decoder) record(rec []byte) error {
	le := binary.LittleEndian
	family := le.Uint16(rec[offFamily:])
	if family != afInet && family != afInet6 {
		return fmt.Errorf("record of address family %d", family)
	}
	state, flags := State(rec[offState]), rec[offFlags]
	sport, dport := le.Uint16(rec[offSport:]), le.Uint16(rec[offDport:])
	if state == Listen {
		d.listening.add(sport)
	}
	server := d.listening.has(sport)
	if !groupable(state, flags&flagBound != 0, server) || dport == 0 || !hasPeer(family, rec[offDaddr:offDaddr+16]) {
		d.ns.Sockets = append(d.ns.Sockets, Socket{})
		decodeRecord(rec, d.hz, &d.ns.Sockets[len(d.ns.Sockets)-1])
		return nil
	}
	k := groupKey{family: family, port: dport, server: server,
		saddr: [16]byte(rec[offSaddr : offSaddr+16]), daddr: [16]byte(rec[offDaddr : offDaddr+16])}
	c := Conn{Port: sport, State: state, Substate: State(rec[offSubstate])}
	if server {
		k.port, c.Port = sport, dport
	}
	id, ok := d.index[k]
	if !ok {
		id = uint32(len(d.ns.Groups))
		d.index[k] = id
		d.ns.Groups = append(d.ns.Groups, newGroup(&k))
	}
	c.Group = id
	if flags&flagTimestamps != 0 {
		c.flags |= connTimestamps
	}
	if flags&flagTimer != 0 && d.hz != 0 {
		ms := uint64(le.Uint32(rec[offRemaining:])) * 1000 / uint64(d.hz)
		c.RemainingMs, c.flags = uint16(min(ms, 1<<16-1)), c.flags|connTimer
	}
	d.ns.Conns = append(d.ns.Conns, c)
	return nil
}

// groupable: a socket with a peer goes in a group when it is an accepted
// connection (its port has a listener: a server group) or a connection
// connect() gave a port (not bound: a client group). Listeners, sockets in
// CLOSE and bound sockets that are not accepted stay Sockets.
func groupable(state State, bound, listening bool) bool {
	return state != Listen && state != Close && (listening || !bound)
}

// hasPeer reports a remote address: not any (0.0.0.0, ::, ::ffff:0.0.0.0).
func hasPeer(family uint16, daddr []byte) bool {
	n := 16
	if family == afInet {
		n = 4
	}
	for i, b := range daddr[:n] {
		if b != 0 && !(family == afInet6 && (i == 10 || i == 11) && b == 0xff) {
			return true
		}
	}
	return false
}

func newGroup(k *groupKey) Group {
	g := Group{Server: k.server, Port: k.port}
	if k.family == afInet {
		g.Saddr = netip.AddrFrom4([4]byte(k.saddr[:4]))
		g.Daddr = netip.AddrFrom4([4]byte(k.daddr[:4]))
	} else {
		g.Saddr, g.Daddr, g.IPv6 = unmapPair(netip.AddrFrom16(k.saddr), netip.AddrFrom16(k.daddr))
	}
	return g
}

// decodeRecord fills s from one record of a known family; hz converts the
// timer (0: unknown).
func decodeRecord(rec []byte, hz uint32, s *Socket) {
	le := binary.LittleEndian
	*s = Socket{
		State:    State(rec[offState]),
		Substate: State(rec[offSubstate]),
		Sport:    le.Uint16(rec[offSport:]),
		Dport:    le.Uint16(rec[offDport:]),
	}
	saddr := [16]byte(rec[offSaddr : offSaddr+16])
	daddr := [16]byte(rec[offDaddr : offDaddr+16])
	if le.Uint16(rec[offFamily:]) == afInet {
		s.Saddr = netip.AddrFrom4([4]byte(saddr[:4]))
		s.Daddr = netip.AddrFrom4([4]byte(daddr[:4]))
	} else {
		s.Saddr, s.Daddr, s.IPv6 = unmapPair(netip.AddrFrom16(saddr), netip.AddrFrom16(daddr))
	}
	flags := rec[offFlags]
	s.Bound = flags&flagBound != 0
	s.Timestamps = flags&flagTimestamps != 0
	if flags&flagTimer != 0 && hz != 0 {
		jiffies := time.Duration(le.Uint32(rec[offRemaining:]))
		s.Remaining = jiffies * time.Second / time.Duration(hz)
		s.RemainingKnown = true
	}
}

// portSet is one bit per TCP port.
type portSet [1 << 16 / 64]uint64

func (s *portSet) add(p uint16)      { s[p>>6] |= 1 << (p & 63) }
func (s *portSet) has(p uint16) bool { return s[p>>6]&(1<<(p&63)) != 0 }

// unmapPair reports an AF_INET6 socket that speaks IPv4 (v4-mapped
// addresses; :: on the side not yet known, such as a listener's peer) as
// IPv4.
func unmapPair(saddr, daddr netip.Addr) (netip.Addr, netip.Addr, bool) {
	mappedOrAny := func(a netip.Addr) bool { return a.Is4In6() || a.IsUnspecified() }
	if !mappedOrAny(saddr) || !mappedOrAny(daddr) || (!saddr.Is4In6() && !daddr.Is4In6()) {
		return saddr, daddr, true
	}
	to4 := func(a netip.Addr) netip.Addr {
		if a.IsUnspecified() {
			return netip.IPv4Unspecified()
		}
		return a.Unmap()
	}
	return to4(saddr), to4(daddr), false
}
