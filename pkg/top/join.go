package top

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

// joinHold is how long an entry stays joinable: TIME_WAIT lasts 60 s, and
// a FIN_WAIT2-substate timewait socket at most tcp_fin_timeout (60 s by
// default) plus scheduling slack.
const joinHold = 65 * time.Second

// DefaultJoinEntries bounds the join: at ~24 bytes an entry, 256k entries
// (the timewait sockets of nine exhausted destinations) cost ~8 MiB.
const DefaultJoinEntries = 1 << 18

// join remembers, for each timewait entry reported in the last minute,
// which row (process and destination) it belongs to, so that the timewait
// sockets the inventory finds can be attributed: a timewait socket has no
// owner in the kernel. Keys are 64-bit hashes of the 4-tuple (a collision
// among 256k live entries has odds of about 2^-29); memory is bounded by
// max entries, the oldest dropped first and counted.
type join struct {
	seed    maphash.Seed
	max     int
	index   map[uint64]joinRef // tuple hash -> its newest entry
	fifo    []joinEntry        // ring, oldest at head
	head, n int
	seq     uint32 // sequence number of the next entry
	evicted uint64 // dropped before their time because the join was full
}

type joinRef struct {
	row int32
	seq uint32
}

type joinEntry struct {
	h   uint64
	at  time.Time
	seq uint32
}

func newJoin(max int) *join {
	if max <= 0 {
		max = DefaultJoinEntries
	}
	return &join{seed: maphash.MakeSeed(), max: max, index: make(map[uint64]joinRef)}
}

func (j *join) hash(t *tuple) uint64 {
	var b [44]byte
	b[0], b[1], b[2], b[3] = byte(t.netns), byte(t.netns>>8), byte(t.netns>>16), byte(t.netns>>24)
	s, d := t.saddr.As16(), t.daddr.As16()
	copy(b[4:20], s[:])
	copy(b[20:36], d[:])
	b[36], b[37], b[38], b[39] = byte(t.sport), byte(t.sport>>8), byte(t.dport), byte(t.dport>>8)
	return maphash.Bytes(j.seed, b[:40])
}

// add records that the connection t entered timewait at time at, for row.
func (j *join) add(t *tuple, row int32, at time.Time) {
	h := j.hash(t)
	if j.n == j.max {
		j.pop(true)
	}
	if j.fifo == nil {
		j.fifo = make([]joinEntry, min(j.max, 1024))
	}
	if j.n == len(j.fifo) {
		j.grow()
	}
	j.fifo[(j.head+j.n)%len(j.fifo)] = joinEntry{h: h, at: at, seq: j.seq}
	j.n++
	j.index[h] = joinRef{row: row, seq: j.seq}
	j.seq++
}

func (j *join) grow() {
	next := make([]joinEntry, min(2*len(j.fifo), j.max))
	for i := 0; i < j.n; i++ {
		next[i] = j.fifo[(j.head+i)%len(j.fifo)]
	}
	j.fifo, j.head = next, 0
}

func (j *join) pop(evict bool) {
	e := &j.fifo[j.head]
	// A newer entry of the same tuple (a port reused within the minute,
	// tcp_tw_reuse at work) owns the index now: leave it.
	if r, ok := j.index[e.h]; ok && r.seq == e.seq {
		delete(j.index, e.h)
	}
	j.head = (j.head + 1) % len(j.fifo)
	j.n--
	if evict {
		j.evicted++
	}
}

// expire drops entries older than joinHold at now.
func (j *join) expire(now time.Time) {
	for j.n > 0 && now.Sub(j.fifo[j.head].at) > joinHold {
		j.pop(false)
	}
}

// lookup returns the row of the connection t, if it entered timewait in
// the last minute while we traced.
func (j *join) lookup(t *tuple) (int32, bool) {
	r, ok := j.index[j.hash(t)]
	return r.row, ok
}
