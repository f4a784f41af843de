// Package aggregate sums twtrace events per process and destination in
// bounded memory, for `twtrace top` (a refreshing table with per-second
// rates) and the end-of-run report of `twtrace run`.
//
// # Model
//
// A Table holds one Row per Key: network namespace, the processes it folds
// (a workload.Group: one process, or a program, container, pod or unit),
// address family and destination (address and port). A Row counts the
// events of each kind, timewaits by role, the bytes those connections
// carried, the time of the first and last event, and two Histograms: the
// lifetime of connections whose open time is known, and bytes (sent plus
// received) per connection. Quantiles read from a Histogram are within one
// bucket, at most 12.5%, of the true value.
//
// What the destination is depends on the event:
//
//   - connect_error: the address and port connect() was given.
//   - timewait of a connection the process opened (role client or unknown):
//     the peer's address and port.
//   - timewait of a connection the process accepted (role server): the
//     peer's address, but the local port (Key.Server is set). The peer's
//     port is an ephemeral port, a new one for nearly every connection, and
//     would give each connection a row of its own.
//   - bind_error: none; the zero address and port 0.
//   - timewait_overflow (precise tier): as timewait; the connection closed
//     first but the kernel made no timewait socket (tcp_max_tw_buckets).
//   - timewait_reuse (precise tier): as connect_error; the connecting
//     process took over a timewait socket's 4-tuple (tcp_tw_reuse).
//
// timewait_end events are not counted: the timewait sockets held now are
// read from the kernel's socket table (see package inventory).
//
// # Bounded memory
//
// New(maxKeys) sets the most keys a Table holds. Once maxKeys keys exist,
// events of any further key are summed into a single row flagged Other,
// and Snapshot.Overflowed counts those events. Each key costs about 4.3
// KiB, mostly its two histograms. Rows are removed only by Expire, which a
// long-running user (the agent) calls to drop the rows of workloads gone
// quiet, so that new ones find room.
//
// Adding an event of an existing key takes a map lookup and a few additions
// under a mutex, and does not allocate.
//
// # Snapshots and rates
//
// Table.Snapshot copies every row, with counters cumulative since the Table
// was created, in the order the keys first appeared, the Other row last.
// Because rows are never removed or reordered, row i of a snapshot is row i
// of every later snapshot of the same Table. Snapshot.Delta(prev) uses this
// to set each row's Recent counters to what happened since an earlier
// snapshot prev, and Snapshot.Interval to the time between the two, in one
// pass without lookups. Expire keeps the order of the rows it leaves, and
// Snapshot.Drop removes the expired rows from a snapshot taken before, so
// that it can still be the prev of the next Delta. A display refreshing every second keeps the previous
// snapshot, takes a new one, calls Delta and shows Recent/Interval as rates.
// Ranking and cutting the rows is the display's choice.
package aggregate

import (
	"net/netip"
	"sync"
	"time"

	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/workload"
)

// Key identifies a row: a workload towards a destination.
type Key struct {
	// Daddr is the destination address; the zero Addr for bind_error.
	Daddr netip.Addr
	// Group says which processes the row folds: Group.PID for one
	// process, or a program, container, pod or unit. Group.Comm is
	// NUL-padded as the kernel keeps it, and chosen by the traced
	// process: escape it before printing.
	workload.Group
	Netns uint32
	// Port is the destination port, except for Server rows, where it is the
	// local port the connections were accepted on. 0 for bind_error.
	Port uint16
	IPv6 bool // address family
	// Server marks the timewaits of connections the process accepted.
	Server bool
}

// KeyOf returns the key under which e is counted per process: its PID
// and the comm it reported.
func KeyOf(e *event.Event) Key {
	return KeyFor(e, workload.Group{PID: e.PID, Comm: e.Comm})
}

// KeyFor returns the key under which e is counted in group g.
func KeyFor(e *event.Event, g workload.Group) Key {
	k := Key{Netns: e.Netns, Group: g, IPv6: e.IPv6}
	// The kernel pads comm with NULs; make sure nothing after the first
	// NUL can split one process into several rows.
	for i, c := range k.Comm {
		if c == 0 {
			clear(k.Comm[i:])
			break
		}
	}
	switch e.Kind {
	case event.KindTimewait, event.KindOverflow:
		k.Daddr = e.Daddr
		if e.Role == event.RoleServer {
			k.Server = true
			k.Port = e.Sport
		} else {
			k.Port = e.Dport
		}
	case event.KindConnectError, event.KindReuse:
		k.Daddr, k.Port = e.Daddr, e.Dport
	}
	return k
}

// Counts are what twtrace counts for a row, a process or a total: every
// view embeds them, so a new counter is one field here and one line in
// each of Add, sub and covers. The JSON names are those of twtrace's
// documents (docs/json.md); the role and byte sums stay out of them.
type Counts struct {
	// Connects counts connect() attempts (AddConnects): not events, the
	// kernel counts them and twtrace reads the sums.
	Connects      uint64 `json:"connects"`
	Timewait      uint64 `json:"timewait"`
	ConnectErrors uint64 `json:"connect_errors"`
	BindErrors    uint64 `json:"bind_errors"`
	// TimewaitOverflow counts connections closed first with no timewait
	// socket: the kernel's table was full (timewait_overflow, precise
	// tier).
	TimewaitOverflow uint64 `json:"timewait_overflow"`
	// TimewaitReused counts connects that took over a timewait socket
	// (timewait_reuse, precise tier).
	TimewaitReused uint64 `json:"timewait_reused"`
	// Roles counts timewaits by the closing process's role, indexed by
	// event.RoleUnknown, event.RoleClient and event.RoleServer.
	Roles [3]uint64 `json:"-"`
	// BytesSent and BytesRecv are summed over timewaits.
	BytesSent uint64 `json:"-"`
	BytesRecv uint64 `json:"-"`
}

// Events is the number of events of all kinds.
func (c *Counts) Events() uint64 {
	return c.Timewait + c.ConnectErrors + c.BindErrors + c.TimewaitOverflow + c.TimewaitReused
}

// Add adds o's counts to c.
func (c *Counts) Add(o *Counts) {
	c.Connects += o.Connects
	c.Timewait += o.Timewait
	c.ConnectErrors += o.ConnectErrors
	c.BindErrors += o.BindErrors
	c.TimewaitOverflow += o.TimewaitOverflow
	c.TimewaitReused += o.TimewaitReused
	for i := range c.Roles {
		c.Roles[i] += o.Roles[i]
	}
	c.BytesSent += o.BytesSent
	c.BytesRecv += o.BytesRecv
}

func (c *Counts) sub(o *Counts) {
	c.Connects -= o.Connects
	c.Timewait -= o.Timewait
	c.ConnectErrors -= o.ConnectErrors
	c.BindErrors -= o.BindErrors
	c.TimewaitOverflow -= o.TimewaitOverflow
	c.TimewaitReused -= o.TimewaitReused
	for i := range c.Roles {
		c.Roles[i] -= o.Roles[i]
	}
	c.BytesSent -= o.BytesSent
	c.BytesRecv -= o.BytesRecv
}

// covers reports whether every counter of c is at least o's.
func (c *Counts) covers(o *Counts) bool {
	return c.Connects >= o.Connects && c.Timewait >= o.Timewait && c.ConnectErrors >= o.ConnectErrors &&
		c.BindErrors >= o.BindErrors && c.TimewaitOverflow >= o.TimewaitOverflow && c.TimewaitReused >= o.TimewaitReused &&
		c.Roles[0] >= o.Roles[0] &&
		c.Roles[1] >= o.Roles[1] && c.Roles[2] >= o.Roles[2] &&
		c.BytesSent >= o.BytesSent && c.BytesRecv >= o.BytesRecv
}

// Row is what a Table knows about one key.
type Row struct {
	Key Key // zero in an Other row
	// Other marks the row that sums events whose own row there was no room
	// for.
	Other bool

	Counts // cumulative

	// First and Last are the times of the earliest and latest event.
	First, Last time.Time

	// Processes counts the distinct PIDs whose events or connects the row
	// holds; FirstPID is the first of them, FirstComm its comm and
	// FirstPPID its parent, as the kernel recorded them.
	Processes           int
	FirstPID, FirstPPID uint32
	FirstComm           [16]byte
	pids                map[uint32]struct{} // nil while it holds one PID

	// Stacks counts the row's connections by the connect() stack that
	// opened them (event.Event.Stack), the most frequent kept first
	// when slots run out; StacksOther counts those with a stack no slot
	// was left for. Connections with no stack taken are not counted.
	Stacks      [StackSlots]StackCount
	StacksOther uint64

	// Medians are the row's median connection lifetime and bytes per
	// connection as of the snapshot; set in a Snapshot's rows.
	Medians Medians
	// hist holds the table's histograms (4 KiB): a Snapshot's rows have
	// none, so that a snapshot of a full table is small.
	hist *histograms

	// Recent counts what happened in the snapshot's Interval; it is set by
	// Snapshot.Delta and zero otherwise.
	Recent Counts

	// gen is the table's snapshot count when the row last counted.
	gen uint64
}

// StackSlots is how many distinct call stacks a row counts.
const StackSlots = 4

// StackCount is how many of a row's connections a stack opened.
type StackCount struct {
	Stack uint64 // 0: a free slot
	N     uint64
}

// countStack counts one connection opened from stack id.
func (r *Row) countStack(id uint64) {
	for i := range r.Stacks {
		s := &r.Stacks[i]
		if s.Stack == id || s.Stack == 0 {
			s.Stack = id
			s.N++
			// Keep the slots by count, largest first: a bubble step.
			for ; i > 0 && r.Stacks[i].N > r.Stacks[i-1].N; i-- {
				r.Stacks[i], r.Stacks[i-1] = r.Stacks[i-1], r.Stacks[i]
			}
			return
		}
	}
	r.StacksOther++
}

// histograms are a table row's distributions.
type histograms struct {
	// lifetime counts connection lifetimes in nanoseconds, for timewaits
	// whose open time is known.
	lifetime Histogram
	// bytes counts bytes sent plus received per connection, per timewait.
	bytes Histogram
}

// Medians are the medians of a row's histograms, within the bound
// documented on Histogram.
type Medians struct {
	// Lifetime is the median connection lifetime of the LifetimeN known.
	Lifetime  time.Duration
	LifetimeN uint64
	// Bytes is the median of bytes sent plus received per connection, of
	// BytesN connections.
	Bytes  uint64
	BytesN uint64
}

// medians computes the medians of h (none when h is nil).
func (h *histograms) medians() Medians {
	if h == nil {
		return Medians{}
	}
	m := Medians{LifetimeN: h.lifetime.Count(), BytesN: h.bytes.Count()}
	if v, ok := h.lifetime.Quantile(0.5); ok {
		m.Lifetime = time.Duration(min(v, 1<<63-1))
	}
	m.Bytes, _ = h.bytes.Quantile(0.5)
	return m
}

// MaxRowProcesses bounds the PIDs a row remembers to count them once: a
// row's Processes is exact up to it; further PIDs are not counted, and the
// table counts them (Snapshot.UncountedProcesses).
const MaxRowProcesses = 1 << 16

// process counts pid in the row, once; false when the row remembers
// MaxRowProcesses already and pid is not one of them.
func (r *Row) process(pid, ppid uint32, comm *[16]byte) bool {
	switch {
	case r.Other:
	case r.Processes == 0:
		r.Processes, r.FirstPID, r.FirstPPID, r.FirstComm = 1, pid, ppid, *comm
	case pid == r.FirstPID:
	default:
		if r.pids == nil {
			r.pids = map[uint32]struct{}{r.FirstPID: {}}
		}
		if _, ok := r.pids[pid]; !ok {
			if len(r.pids) >= MaxRowProcesses {
				return false
			}
			r.pids[pid] = struct{}{}
			r.Processes++
		}
	}
	return true
}

// Count counts e: one more of its kind; for a timewait, its role and
// bytes too.
func (c *Counts) Count(e *event.Event) {
	switch e.Kind {
	case event.KindTimewait:
		c.Timewait++
		role := e.Role
		if role > event.RoleServer {
			role = event.RoleUnknown
		}
		c.Roles[role]++
		c.BytesSent += e.BytesSent
		c.BytesRecv += e.BytesRecv
	case event.KindConnectError:
		c.ConnectErrors++
	case event.KindBindError:
		c.BindErrors++
	case event.KindOverflow:
		c.TimewaitOverflow++
	case event.KindReuse:
		c.TimewaitReused++
	}
}

func (r *Row) add(e *event.Event) {
	first := r.Events() == 0
	r.Count(e)
	if e.Stack != 0 {
		r.countStack(e.Stack)
	}
	if e.Kind == event.KindTimewait && r.hist != nil {
		r.hist.bytes.Add(e.BytesSent + e.BytesRecv)
		if e.Lifetime > 0 {
			r.hist.lifetime.Add(uint64(e.Lifetime))
		}
	}
	switch {
	case first:
		r.First, r.Last = e.Time, e.Time
	case e.Time.Before(r.First):
		r.First = e.Time
	case e.Time.After(r.Last):
		r.Last = e.Time
	}
}

// chunkRows is how many rows a Table allocates at a time.
const chunkRows = 64

// Table aggregates events per Key. It is safe for concurrent use.
type Table struct {
	mu      sync.Mutex
	maxKeys int
	index   map[Key]*Row
	rows    []*Row // in the order keys first appeared
	free    []Row  // allocated, not yet used rows; pointers into it stay valid
	spent   []*Row // expired rows, to be used again
	other   Row
	gen     uint64 // snapshots taken
	// uncounted: PIDs a row had no room to remember (MaxRowProcesses).
	uncounted uint64
	now       func() time.Time // time.Now; tests pin it
}

// New returns an empty Table that keeps at most maxKeys keys; events of
// further keys are summed into one Other row. With maxKeys <= 0 every event
// goes to the Other row.
func New(maxKeys int) *Table {
	return &Table{
		maxKeys: max(maxKeys, 0),
		index:   make(map[Key]*Row),
		other:   Row{Other: true, hist: new(histograms)},
		now:     time.Now,
	}
}

// Add counts e. Events of other kinds (timewait_end, unknown) are
// ignored. Add does not allocate unless e is the first event of its key.
func (t *Table) Add(e *event.Event) {
	t.AddAs(KeyOf(e), e, nil)
}

// AddAs counts e under k (see KeyFor); p, when not nil, is the process
// the row counts for it (its leader's comm and parent), else e's.
func (t *Table) AddAs(k Key, e *event.Event, p *workload.Process) {
	switch e.Kind {
	case event.KindTimewait, event.KindConnectError, event.KindBindError,
		event.KindOverflow, event.KindReuse:
	default:
		return
	}
	t.mu.Lock()
	r := t.index[k]
	if r == nil {
		r = t.insert(&k)
	}
	r.add(e)
	r.gen = t.gen
	ppid, comm := uint32(0), &e.Comm
	if p != nil {
		ppid, comm = p.PPID, &p.Comm
	}
	if !r.process(e.PID, ppid, comm) {
		t.uncounted++
	}
	t.mu.Unlock()
}

// AddConnects adds n connect() attempts by process p to k's row (the
// kernel counts them; see tracer.Tracer.ReadConnects). k must be a client
// key: Server false. It does not allocate unless k or p is new to the row.
func (t *Table) AddConnects(k Key, p *workload.Process, n uint64) {
	if n == 0 {
		return
	}
	t.mu.Lock()
	r := t.index[k]
	if r == nil {
		r = t.insert(&k)
	}
	r.Connects += n
	r.gen = t.gen
	if !r.process(p.PID, p.PPID, &p.Comm) {
		t.uncounted++
	}
	t.mu.Unlock()
}

// insert returns a new row for k, or the Other row when the table is full.
func (t *Table) insert(k *Key) *Row {
	if len(t.rows) >= t.maxKeys {
		return &t.other
	}
	var r *Row
	if n := len(t.spent); n > 0 {
		r, t.spent = t.spent[n-1], t.spent[:n-1]
		h := r.hist
		*h = histograms{}
		*r = Row{hist: h}
	} else {
		if len(t.free) == 0 {
			t.free = make([]Row, min(chunkRows, t.maxKeys-len(t.rows)))
		}
		r = &t.free[0]
		t.free = t.free[1:]
		r.hist = new(histograms)
	}
	r.Key, r.gen = *k, t.gen
	t.index[*k] = r
	t.rows = append(t.rows, r)
	return r
}

// Expire removes the rows that counted nothing since the snapshot taken
// idle snapshots ago (Snapshot, SnapshotTo; 1 is the latest), keeping the
// order of the others, and returns the keys it removed in the order they had. Their
// memory serves the next new keys.
func (t *Table) Expire(idle uint64) []Key {
	t.mu.Lock()
	defer t.mu.Unlock()
	var gone []Key
	kept := t.rows[:0]
	for _, r := range t.rows {
		if t.gen-r.gen <= idle {
			kept = append(kept, r)
			continue
		}
		gone = append(gone, r.Key)
		delete(t.index, r.Key)
		r.pids = nil
		t.spent = append(t.spent, r)
	}
	clear(t.rows[len(kept):])
	t.rows = kept
	return gone
}

// Has tells whether k has a row of its own.
func (t *Table) Has(k Key) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.index[k]
	return ok
}

// Len is the number of keys held, not counting the Other row.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.rows)
}
