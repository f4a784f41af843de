package inventory

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
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

// decodeRecords appends the sockets of raw, whole records of the
// iterator's output, to out. It allocates only when out has no room.
func decodeRecords(raw []byte, hz uint32, out []Socket) ([]Socket, error) {
	if len(raw)%recordSize != 0 {
		return out, fmt.Errorf("iterator output of %d bytes is not a whole number of %d-byte records", len(raw), recordSize)
	}
	out = slices.Grow(out, len(raw)/recordSize)
	for off := 0; off < len(raw); off += recordSize {
		var s Socket
		if err := decodeRecord(raw[off:off+recordSize], hz, &s); err != nil {
			return out, err
		}
		out = append(out, s)
	}
	return out, nil
}

// decodeRecord fills s from one record; hz converts the timer (0: unknown).
func decodeRecord(rec []byte, hz uint32, s *Socket) error {
	le := binary.LittleEndian
	*s = Socket{
		State:    State(rec[offState]),
		Substate: State(rec[offSubstate]),
		Sport:    le.Uint16(rec[offSport:]),
		Dport:    le.Uint16(rec[offDport:]),
	}
	saddr := [16]byte(rec[offSaddr : offSaddr+16])
	daddr := [16]byte(rec[offDaddr : offDaddr+16])
	switch family := le.Uint16(rec[offFamily:]); family {
	case afInet:
		s.Saddr = netip.AddrFrom4([4]byte(saddr[:4]))
		s.Daddr = netip.AddrFrom4([4]byte(daddr[:4]))
	case afInet6:
		s.Saddr, s.Daddr, s.IPv6 = unmapPair(netip.AddrFrom16(saddr), netip.AddrFrom16(daddr))
	default:
		return fmt.Errorf("record of address family %d", family)
	}
	flags := rec[offFlags]
	s.Bound = flags&flagBound != 0
	s.Timestamps = flags&flagTimestamps != 0
	if flags&flagTimer != 0 && hz != 0 {
		jiffies := time.Duration(le.Uint32(rec[offRemaining:]))
		s.Remaining = jiffies * time.Second / time.Duration(hz)
		s.RemainingKnown = true
	}
	return nil
}

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
