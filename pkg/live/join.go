package live

import (
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

// DefaultJoinEntries bounds the join: 256k live timewait sockets (nine
// exhausted destinations) at ~24 bytes an entry, ~6 MiB.
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
// is dropped (prune). Memory is bounded by max entries: when the join is
// full, new entries are refused and counted, and their sockets count as
// unattributed.
type join struct {
	seed    maphash.Seed
	max     int
	index   map[uint64]joinVal
	refused uint64
	epoch   time.Time
	scan    uint32 // the scan under way, or the last one
}

type joinVal struct {
	row   int32
	at    uint32 // seconds since the epoch
	added uint32 // the scan under way when the entry was made
	seen  uint32 // the last scan that found the socket
}

func newJoin(max int) *join {
	if max <= 0 {
		max = DefaultJoinEntries
	}
	return &join{seed: maphash.MakeSeed(), max: max, index: make(map[uint64]joinVal), epoch: time.Now().Add(-time.Hour)}
}

func (j *join) hash(t *tuple) uint64 {
	var b [40]byte
	b[0], b[1], b[2], b[3] = byte(t.netns), byte(t.netns>>8), byte(t.netns>>16), byte(t.netns>>24)
	s, d := t.saddr.As16(), t.daddr.As16()
	copy(b[4:20], s[:])
	copy(b[20:36], d[:])
	b[36], b[37], b[38], b[39] = byte(t.sport), byte(t.sport>>8), byte(t.dport), byte(t.dport>>8)
	return maphash.Bytes(j.seed, b[:])
}

// seconds is t in whole seconds since the epoch (an hour before the join
// was made: events are never older than that), 0 before it.
func (j *join) seconds(t time.Time) uint32 {
	return uint32(max(t.Sub(j.epoch), 0) / time.Second)
}

// add records that the connection t entered timewait at time at, for row.
// A port reused toward the same destination replaces the older entry.
func (j *join) add(t *tuple, row int32, at time.Time) {
	h := j.hash(t)
	if _, ok := j.index[h]; !ok && len(j.index) >= j.max {
		j.refused++
		return
	}
	j.index[h] = joinVal{row: row, at: j.seconds(at), added: j.scan}
}

// beginScan numbers the inventory scan about to start; entries made from
// now on are not judged by it.
func (j *join) beginScan() uint32 {
	j.scan++
	return j.scan
}

// find returns the row of the connection t, and marks it found by scan.
func (j *join) find(t *tuple, scan uint32) (int32, bool) {
	h := j.hash(t)
	v, ok := j.index[h]
	if ok {
		v.seen = scan
		j.index[h] = v
	}
	return v.row, ok
}

// prune drops the entries whose socket is gone: older than joinHold at
// now, or made before the complete scan number scan began (and for a
// socket that entered timewait at least a second before scanStart) but not
// found by it.
func (j *join) prune(scan uint32, scanStart, now time.Time) {
	old := j.seconds(now.Add(-joinHold))
	before := j.seconds(scanStart.Add(-time.Second))
	for h, v := range j.index {
		if v.at < old || (v.seen != scan && v.added < scan && v.at < before) {
			delete(j.index, h)
		}
	}
}

// renumber moves each entry to row to[row], dropping those whose row is
// -1.
func (j *join) renumber(to []int32) {
	for h, v := range j.index {
		if n := to[v.row]; n < 0 {
			delete(j.index, h)
		} else if n != v.row {
			v.row = n
			j.index[h] = v
		}
	}
}
