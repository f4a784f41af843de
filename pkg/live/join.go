package live

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"time"
)

// tuple is a connection's identity in a namespace, as both the tracer's
// events and the inventory's sockets report it.
type tuple struct {
	netns        uint32
	saddr, daddr netip.Addr
	sport, dport uint16
}

// joinHold is how long an entry stays joinable at most: TIME_WAIT lasts
// 60 s, and a FIN_WAIT2-substate timewait socket at most tcp_fin_timeout
// (60 s by default), plus slack.
const joinHold = 65 * time.Second

// DefaultJoinEntries is the least number of entries the join may hold:
// the kernel's default tcp_max_tw_buckets on a small host. The join grows
// to hold what the namespaces' tcp_max_tw_buckets allow (setMax).
const DefaultJoinEntries = 1 << 18

// join remembers, for each timewait entry reported, which row (process and
// destination) it belongs to, so that the timewait sockets the inventory
// finds can be attributed: a timewait socket has no owner in the kernel.
//
// Keys are 64-bit hashes of (netns, 4-tuple): a collision among 256k live
// entries has odds of about 2^-29. An entry lives as long as its timewait
// socket: the socket exists from the moment its event is made (the kernel
// hashes the timewait socket in before the full socket moves to CLOSE), so
// an entry older than a complete inventory scan that the scan did not find
// belongs to a socket that is gone (expired, reused, killed by an RST) and
// is dropped (prune).
//
// The table is open-addressed (linear probing, deletion by shifting the
// run back, no tombstones), 16 bytes an entry, at most 7/8 full, and grows
// by doubling: a quarter of a million live timewait sockets take 8 MiB.
// It holds at most max entries, the sum of the namespaces'
// tcp_max_tw_buckets (at least DefaultJoinEntries): as many timewait
// sockets as the kernel itself lets exist. When it is full, new entries
// are refused and counted, and their sockets count as unattributed.
type join struct {
	seed    maphash.Seed
	max     int  // entries at most
	fixed   bool // max was configured: setMax leaves it
	slots   []joinSlot
	n       int // entries held
	refused uint64
	epoch   time.Time
	scan    uint16 // the scan under way, or the last one
}

// joinSlot is one entry; key 0 is an empty slot.
type joinSlot struct {
	key uint64
	row uint32
	at  uint16 // seconds since the epoch, modulo 2^16
	// seen is the last scan that found the socket, or the scan under way
	// (or the last one) when the entry was made: a scan judges only the
	// entries made before it began.
	seen uint16
}

func newJoin(max int) *join {
	j := &join{seed: maphash.MakeSeed(), max: DefaultJoinEntries, epoch: time.Now().Add(-time.Hour)}
	if max > 0 {
		j.max, j.fixed = max, true
	}
	j.slots = make([]joinSlot, 1024)
	return j
}

// setMax lets the join hold n entries (at least DefaultJoinEntries),
// unless its size was configured.
func (j *join) setMax(n int) {
	if !j.fixed {
		j.max = max(n, DefaultJoinEntries)
	}
}

// base hashes the addresses of a tuple; key mixes the ports in. A run of
// sockets sharing their addresses (an inventory group) hashes them once.
func (j *join) base(netns uint32, saddr, daddr netip.Addr) uint64 {
	var b [36]byte
	binary.LittleEndian.PutUint32(b[:], netns)
	s, d := saddr.As16(), daddr.As16()
	copy(b[4:20], s[:])
	copy(b[20:36], d[:])
	return maphash.Bytes(j.seed, b[:])
}

// key is the key of the tuple whose addresses hash to base: never 0.
func key(base uint64, sport, dport uint16) uint64 {
	x := base ^ (uint64(sport)<<16 | uint64(dport))
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	if x == 0 {
		return 1
	}
	return x
}

func (j *join) hash(t *tuple) uint64 {
	return key(j.base(t.netns, t.saddr, t.daddr), t.sport, t.dport)
}

// seconds is t in whole seconds since the epoch (an hour before the join
// was made: events are never older than that), modulo 2^16.
func (j *join) seconds(t time.Time) uint16 {
	return uint16(max(t.Sub(j.epoch), 0) / time.Second)
}

// slot returns where k is, or the empty slot where it would go.
func (j *join) slot(k uint64) *joinSlot {
	mask := uint64(len(j.slots) - 1)
	for i := k & mask; ; i = (i + 1) & mask {
		if s := &j.slots[i]; s.key == k || s.key == 0 {
			return s
		}
	}
}

// add records that the connection t entered timewait at time at, for row.
// A port reused toward the same destination replaces the older entry.
func (j *join) add(t *tuple, row int32, at time.Time) {
	k := j.hash(t)
	s := j.slot(k)
	if s.key == 0 {
		if j.n >= j.max {
			j.refused++
			return
		}
		if (j.n+1)*8 > len(j.slots)*7 {
			j.grow()
			s = j.slot(k)
		}
		j.n++
	}
	*s = joinSlot{key: k, row: uint32(row), at: j.seconds(at), seen: j.scan}
}

// grow doubles the table.
func (j *join) grow() {
	old := j.slots
	j.slots = make([]joinSlot, 2*len(old))
	for i := range old {
		if old[i].key != 0 {
			*j.slot(old[i].key) = old[i]
		}
	}
}

// beginScan numbers the inventory scan about to start; entries made from
// now on are not judged by it.
func (j *join) beginScan() uint16 {
	j.scan++
	if j.scan == 0 { // 0 is no scan (prune)
		j.scan++
	}
	return j.scan
}

// find returns the row of the connection t, and marks it found by scan.
func (j *join) find(t *tuple, scan uint16) (int32, bool) { return j.findKey(j.hash(t), scan) }

// findKey is find by key.
func (j *join) findKey(k uint64, scan uint16) (int32, bool) {
	s := j.slot(k)
	if s.key == 0 {
		return 0, false
	}
	s.seen = scan
	return int32(s.row), true
}

// prune drops the entries whose socket is gone: older than joinHold at
// now, or, after a complete scan (scan not 0), made before scan number
// scan began (and for a socket that entered timewait at least a second
// before scanStart) but not found by it.
func (j *join) prune(scan uint16, scanStart, now time.Time) {
	nowSec, startSec := j.seconds(now), j.seconds(scanStart)
	hold := int16(joinHold / time.Second)
	j.sweep(func(s *joinSlot) bool {
		// Ages are signed: an event's time, converted from the kernel's
		// clock, can be a little ahead of ours.
		if int16(nowSec-s.at) > hold {
			return true
		}
		// Entered timewait before scanStart−1s (whole seconds).
		age := int16(startSec - s.at)
		return scan != 0 && s.seen != scan && age >= 2 && age <= hold
	})
}

// renumber moves each entry to row to[row], dropping those whose row is
// -1.
func (j *join) renumber(to []int32) {
	const gone = ^uint32(0)
	for i := range j.slots {
		if s := &j.slots[i]; s.key != 0 {
			if n := to[s.row]; n < 0 {
				s.row = gone
			} else {
				s.row = uint32(n)
			}
		}
	}
	j.sweep(func(s *joinSlot) bool { return s.row == gone })
}

// sweep calls drop on every entry and removes those it returns true for,
// shifting back the entries after a removed one in its run (so that no
// lookup meets a hole before its key). An entry shifted into the slot
// under examination is examined there; one shifted across the end of the
// table was examined already, and drop must say the same of it again.
func (j *join) sweep(drop func(*joinSlot) bool) {
	mask := len(j.slots) - 1
	for i := 0; i < len(j.slots); {
		s := &j.slots[i]
		if s.key == 0 || !drop(s) {
			i++
			continue
		}
		j.remove(i, mask)
		j.n--
	}
}

// remove empties slot i and shifts back the entries of its run that may
// move there.
func (j *join) remove(i, mask int) {
	hole := i
	for k := (i + 1) & mask; j.slots[k].key != 0; k = (k + 1) & mask {
		home := int(j.slots[k].key) & mask
		// k may move to the hole when its home is not in (hole, k].
		if (k-home)&mask >= (k-hole)&mask {
			j.slots[hole] = j.slots[k]
			hole = k
		}
	}
	j.slots[hole] = joinSlot{}
}
