package aggregate

import (
	"errors"
	"github.com/twtrace/twtrace/pkg/workload"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twtrace/twtrace/pkg/event"
)

func comm(s string) (c [16]byte) {
	copy(c[:], s)
	return c
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const netns = 4026531840

// timewait is a timewait of pid/name towards dst ("addr:port"), at t0+at.
func timewait(pid uint32, name, dst string, role event.Role, at time.Duration) event.Event {
	ap := netip.MustParseAddrPort(dst)
	src := netip.MustParseAddr("10.0.0.1")
	if ap.Addr().Is6() {
		src = netip.MustParseAddr("2001:db8::1")
	}
	return event.Event{
		Time: t0.Add(at), Kind: event.KindTimewait, PID: pid, TID: pid, Comm: comm(name),
		Netns: netns, IPv6: ap.Addr().Is6(), Saddr: src, Sport: 40000,
		Daddr: ap.Addr(), Dport: ap.Port(), Role: role,
	}
}

func connectError(pid uint32, name, dst string, at time.Duration) event.Event {
	e := timewait(pid, name, dst, event.RoleUnknown, at)
	e.Kind, e.Sport, e.Errno = event.KindConnectError, 0, syscall.EADDRNOTAVAIL
	return e
}

func bindError(pid uint32, name string, at time.Duration) event.Event {
	return event.Event{
		Time: t0.Add(at), Kind: event.KindBindError, PID: pid, TID: pid, Comm: comm(name),
		Netns: netns, Saddr: netip.IPv4Unspecified(), Errno: syscall.EADDRINUSE,
	}
}

func key(pid uint32, name, dst string) Key {
	ap := netip.MustParseAddrPort(dst)
	return Key{Netns: netns, Group: workload.Group{PID: pid, Comm: comm(name)}, IPv6: ap.Addr().Is6(), Daddr: ap.Addr(), Port: ap.Port()}
}

// find returns the row of k, failing the test if there is none.
func find(t *testing.T, rows []Row, k Key) *Row {
	t.Helper()
	for i := range rows {
		if !rows[i].Other && rows[i].Key == k {
			return &rows[i]
		}
	}
	t.Fatalf("no row for %+v", k)
	return nil
}

func TestKeyOf(t *testing.T) {
	client := timewait(7, "curl", "10.1.2.3:8080", event.RoleClient, 0)
	if got, want := KeyOf(&client), key(7, "curl", "10.1.2.3:8080"); got != want {
		t.Errorf("client timewait: %+v, want %+v", got, want)
	}
	unknown := timewait(7, "curl", "10.1.2.3:8080", event.RoleUnknown, 0)
	if got, want := KeyOf(&unknown), key(7, "curl", "10.1.2.3:8080"); got != want {
		t.Errorf("timewait of unknown role: %+v, want %+v", got, want)
	}
	// A server's timewait: the peer's ephemeral port is not part of the
	// key, the local port is.
	server := timewait(8, "nginx", "10.1.2.3:51234", event.RoleServer, 0)
	server.Sport = 80
	want := key(8, "nginx", "10.1.2.3:80")
	want.Server = true
	if got := KeyOf(&server); got != want {
		t.Errorf("server timewait: %+v, want %+v", got, want)
	}
	ce := connectError(9, "java", "[2001:db8::5]:443", 0)
	if got, want := KeyOf(&ce), key(9, "java", "[2001:db8::5]:443"); got != want {
		t.Errorf("connect_error: %+v, want %+v", got, want)
	}
	be := bindError(10, "java", 0)
	be.Daddr, be.Dport = netip.MustParseAddr("10.9.9.9"), 99 // ignored
	if got, want := KeyOf(&be), (Key{Netns: netns, Group: workload.Group{PID: 10, Comm: comm("java")}}); got != want {
		t.Errorf("bind_error: %+v, want %+v", got, want)
	}
	// Bytes after the NUL that ends comm do not split a process.
	dirty := client
	dirty.Comm[10] = 'x'
	if KeyOf(&dirty) != KeyOf(&client) {
		t.Error("bytes after comm's NUL are part of the key")
	}
}

func TestCountsPerKey(t *testing.T) {
	tb := New(100)
	events := []event.Event{
		timewait(1, "curl", "10.1.2.3:8080", event.RoleClient, 3*time.Second),
		timewait(1, "curl", "10.1.2.3:8080", event.RoleClient, 1*time.Second),
		timewait(1, "curl", "10.1.2.3:8080", event.RoleUnknown, 2*time.Second),
		connectError(1, "curl", "10.1.2.3:8080", 5*time.Second),
		connectError(1, "curl", "10.1.2.3:8081", 4*time.Second),
		timewait(2, "curl", "10.1.2.3:8080", event.RoleClient, 0),
		bindError(1, "curl", 6*time.Second),
		bindError(1, "curl", 7*time.Second),
		{Kind: 9, PID: 1}, // unknown kind: ignored
	}
	events[0].BytesSent, events[0].BytesRecv, events[0].Lifetime = 100, 1000, 4*time.Millisecond
	events[1].BytesSent, events[1].BytesRecv, events[1].Lifetime = 200, 2000, 2*time.Millisecond
	events[2].BytesSent, events[2].BytesRecv = 300, 3000 // lifetime unknown
	for i := range events {
		tb.Add(&events[i])
	}
	s := tb.Snapshot()
	if tb.Len() != 4 || s.Overflowed != 0 {
		t.Fatalf("Len = %d, Overflowed = %d; want 4, 0", tb.Len(), s.Overflowed)
	}
	if len(s.Rows) != 4 {
		t.Fatalf("%d rows, want 4", len(s.Rows))
	}
	// Rows come in the order their keys first appeared.
	for i, k := range []Key{
		key(1, "curl", "10.1.2.3:8080"), key(1, "curl", "10.1.2.3:8081"),
		key(2, "curl", "10.1.2.3:8080"), {Netns: netns, Group: workload.Group{PID: 1, Comm: comm("curl")}},
	} {
		if s.Rows[i].Key != k || s.Rows[i].Other {
			t.Errorf("row %d: %+v, want key %+v", i, s.Rows[i].Key, k)
		}
	}

	r := s.Rows[0]
	want := Counts{Timewait: 3, ConnectErrors: 1, Roles: [3]uint64{event.RoleUnknown: 1, event.RoleClient: 2},
		BytesSent: 600, BytesRecv: 6000}
	if r.Counts != want {
		t.Errorf("counts %+v, want %+v", r.Counts, want)
	}
	if !r.First.Equal(t0.Add(time.Second)) || !r.Last.Equal(t0.Add(5*time.Second)) {
		t.Errorf("first %v last %v, want t0+1s and t0+5s", r.First, r.Last)
	}
	// Lifetimes 2ms and 4ms: the median 2 ms in [1835008, 2097151] ns.
	// Bytes per connection 1100, 2200, 3300: median 2200 in [2048, 2559].
	if want := (Medians{Lifetime: 1966080, LifetimeN: 2, Bytes: 2304, BytesN: 3}); r.Medians != want {
		t.Errorf("medians %+v, want %+v", r.Medians, want)
	}
	if r := s.Rows[1]; r.Counts != (Counts{ConnectErrors: 1}) || !r.First.Equal(t0.Add(4*time.Second)) || !r.Last.Equal(r.First) {
		t.Errorf("row 1: %+v first %v last %v", r.Counts, r.First, r.Last)
	}
	if r := s.Rows[2]; r.Counts != (Counts{Timewait: 1, Roles: [3]uint64{event.RoleClient: 1}}) {
		t.Errorf("row 2: %+v", r.Counts)
	}
	if r := s.Rows[3]; r.Counts != (Counts{BindErrors: 2}) {
		t.Errorf("row 3: %+v", r.Counts)
	}
}

// The precise tier's kinds: an overflow is keyed as a timewait (a server's
// by its local port), a reuse as a connect by the connecting process;
// timewait_end is not counted.
func TestPreciseKinds(t *testing.T) {
	tb := New(100)
	ovf := timewait(1, "curl", "10.1.2.3:8080", event.RoleClient, time.Second)
	ovf.Kind = event.KindOverflow
	srvOvf := timewait(2, "nginx", "10.1.2.3:51234", event.RoleServer, 2*time.Second)
	srvOvf.Kind, srvOvf.Sport = event.KindOverflow, 80
	reuse := timewait(3, "java", "10.1.2.3:8080", event.RoleClient, 3*time.Second)
	reuse.Kind, reuse.OpenerPID = event.KindReuse, 1
	end := timewait(1, "curl", "10.1.2.3:8080", event.RoleClient, 4*time.Second)
	end.Kind = event.KindTimewaitEnd
	for _, e := range []*event.Event{&ovf, &ovf, &srvOvf, &reuse, &end} {
		tb.Add(e)
	}
	s := tb.Snapshot()
	if len(s.Rows) != 3 {
		t.Fatalf("%d rows, want 3: %+v", len(s.Rows), s.Rows)
	}
	if r := find(t, s.Rows, key(1, "curl", "10.1.2.3:8080")); r.Counts != (Counts{TimewaitOverflow: 2}) {
		t.Errorf("client overflow row: %+v", r.Counts)
	}
	sk := key(2, "nginx", "10.1.2.3:80")
	sk.Server = true
	if r := find(t, s.Rows, sk); r.Counts != (Counts{TimewaitOverflow: 1}) {
		t.Errorf("server overflow row: %+v", r.Counts)
	}
	if r := find(t, s.Rows, key(3, "java", "10.1.2.3:8080")); r.Counts != (Counts{TimewaitReused: 1}) || !r.First.Equal(t0.Add(3*time.Second)) {
		t.Errorf("reuse row: %+v first %v", r.Counts, r.First)
	}
}

func TestFoldIntoOther(t *testing.T) {
	tb := New(2)
	a := timewait(1, "a", "10.0.0.2:80", event.RoleClient, 0)
	b := timewait(2, "b", "10.0.0.2:80", event.RoleClient, time.Second)
	c := timewait(3, "c", "10.0.0.2:80", event.RoleClient, 2*time.Second)
	d := connectError(4, "d", "10.0.0.3:80", 3*time.Second)
	c.BytesSent = 10
	for _, e := range []*event.Event{&a, &b, &c, &c, &d, &a, &b} {
		tb.Add(e)
	}
	s := tb.Snapshot()
	if tb.Len() != 2 {
		t.Fatalf("Len %d, want 2", tb.Len())
	}
	if len(s.Rows) != 3 || s.Overflowed != 3 {
		t.Fatalf("%d rows, Overflowed %d; want 3 and 3", len(s.Rows), s.Overflowed)
	}
	if s.Rows[0].Timewait != 2 || s.Rows[1].Timewait != 2 {
		t.Errorf("keyed rows %+v %+v, want 2 timewaits each", s.Rows[0].Counts, s.Rows[1].Counts)
	}
	o := s.Rows[2]
	if !o.Other || o.Key != (Key{}) {
		t.Fatalf("last row is not a blank Other row: %+v", o.Key)
	}
	if o.Timewait != 2 || o.ConnectErrors != 1 || o.BytesSent != 20 ||
		!o.First.Equal(t0.Add(2*time.Second)) || !o.Last.Equal(t0.Add(3*time.Second)) {
		t.Errorf("other %+v first %v last %v", o.Counts, o.First, o.Last)
	}
}

func TestMaxKeysZero(t *testing.T) {
	tb := New(0)
	e := bindError(1, "x", 0)
	tb.Add(&e)
	s := tb.Snapshot()
	if tb.Len() != 0 || len(s.Rows) != 1 || !s.Rows[0].Other || s.Rows[0].BindErrors != 1 {
		t.Fatalf("New(0) kept %d keys, rows %+v", tb.Len(), s.Rows)
	}
}

func TestNoSnapshotWithoutEvents(t *testing.T) {
	s := New(10).Snapshot()
	if len(s.Rows) != 0 || s.Overflowed != 0 {
		t.Fatalf("empty table: %+v", s)
	}
}

// clock steps a Table's clock by one second per snapshot.
func clock(tb *Table) {
	now := t0
	tb.now = func() time.Time { now = now.Add(time.Second); return now }
}

func TestDeltaRates(t *testing.T) {
	tb := New(2)
	clock(tb)
	a := timewait(1, "a", "10.0.0.2:80", event.RoleClient, 0)
	a.BytesSent = 5
	b := connectError(2, "b", "10.0.0.2:80", 0)
	c := bindError(3, "c", 0) // overflows

	tb.Add(&a)
	s1 := tb.Snapshot() // a:1
	for range 10 {
		tb.Add(&a)
	}
	tb.Add(&b)
	tb.Add(&b)
	tb.Snapshot() // a snapshot that is skipped: Delta works across several
	tb.Add(&b)
	tb.Add(&c)
	s3 := tb.Snapshot() // a:11, b:3, other:1

	if err := s3.Delta(&s1); err != nil {
		t.Fatal(err)
	}
	if s3.Interval != 2*time.Second {
		t.Errorf("Interval %v, want 2s", s3.Interval)
	}
	if r := s3.Rows[0]; r.Recent != (Counts{Timewait: 10, Roles: [3]uint64{event.RoleClient: 10}, BytesSent: 50}) || r.Timewait != 11 {
		t.Errorf("a: recent %+v, cumulative %d", r.Recent, r.Timewait)
	}
	if r := s3.Rows[1]; r.Recent != (Counts{ConnectErrors: 3}) {
		t.Errorf("b: recent %+v", r.Recent)
	}
	if r := s3.Rows[2]; !r.Other || r.Recent != (Counts{BindErrors: 1}) {
		t.Errorf("other: recent %+v", r.Recent)
	}
	if got := s3.PerSecond(s3.Rows[0].Recent.Timewait); got != 5 {
		t.Errorf("timewait rate %v/s, want 5", got)
	}
	if got := s3.PerSecond(s3.Rows[1].Recent.ConnectErrors); got != 1.5 {
		t.Errorf("connect error rate %v/s, want 1.5", got)
	}
	if s1.PerSecond(7) != 0 {
		t.Error("a snapshot without Delta has a rate")
	}
}

func TestDeltaRejectsOtherSnapshots(t *testing.T) {
	tb, other := New(10), New(10)
	clock(tb)
	clock(other)
	a := timewait(1, "a", "10.0.0.2:80", event.RoleClient, 0)
	b := timewait(2, "b", "10.0.0.2:80", event.RoleClient, 0)
	tb.Add(&a)
	other.Add(&b)
	s1 := tb.Snapshot()
	o1 := other.Snapshot()
	tb.Add(&a)
	s2 := tb.Snapshot()

	for name, c := range map[string]struct{ cur, prev Snapshot }{
		"later as prev": {s1, s2},
		"another table": {s2, o1},
	} {
		before := c.cur.Rows[0].Recent
		if err := c.cur.Delta(&c.prev); !errors.Is(err, ErrNotEarlier) {
			t.Errorf("%s: Delta returned %v", name, err)
		}
		if c.cur.Rows[0].Recent != before || c.cur.Interval != 0 {
			t.Errorf("%s: a failed Delta changed the snapshot", name)
		}
	}
	if err := s2.Delta(&s2); err != nil || s2.Rows[0].Recent != (Counts{}) {
		t.Errorf("Delta with itself: %v, recent %+v", err, s2.Rows[0].Recent)
	}
}

func TestConcurrentAddAndSnapshot(t *testing.T) {
	tb := New(50)
	const writers, each = 4, 5000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				e := timewait(uint32(w), "w", "10.0.0.2:80", event.RoleClient, time.Duration(i))
				e.Dport = uint16(i % 80) // 4 writers × 80 ports > 50 keys
				tb.Add(&e)
			}
		})
	}
	var prev Snapshot
	for range 20 {
		s := tb.Snapshot()
		if err := s.Delta(&prev); err != nil {
			t.Fatal(err)
		}
		prev = s
	}
	wg.Wait()
	var tw uint64
	for _, r := range tb.Snapshot().Rows {
		tw += r.Timewait
	}
	if tw != writers*each {
		t.Fatalf("%d timewaits, want %d", tw, writers*each)
	}
}

// Connection attempts counted by the kernel join the rows of the same key,
// survive Delta and the Other fold.
func TestAddConnects(t *testing.T) {
	tb := New(2)
	tb.now = func() time.Time { return t0 }
	a, b, c := key(10, "curl", "10.0.0.9:80"), key(11, "pool", "10.0.0.9:80"), key(12, "late", "10.0.0.9:443")
	e := timewait(10, "curl", "10.0.0.9:80", event.RoleClient, 0)
	tb.Add(&e)
	tb.AddConnects(a, &workload.Process{PID: 10}, 5)
	tb.AddConnects(b, &workload.Process{PID: 11}, 2)
	tb.AddConnects(c, &workload.Process{PID: 12}, 7) // no room: the Other row
	tb.AddConnects(a, &workload.Process{PID: 10}, 0)
	prev := tb.Snapshot()
	if len(prev.Rows) != 3 || !prev.Rows[2].Other || prev.Rows[2].Connects != 7 {
		t.Fatalf("rows = %+v, want a, b and an Other row with 7 connects", prev.Rows)
	}
	if got := find(t, prev.Rows, a); got.Connects != 5 || got.Timewait != 1 {
		t.Fatalf("row a = %+v, want 5 connects and 1 timewait", got.Counts)
	}
	tb.now = func() time.Time { return t0.Add(2 * time.Second) }
	tb.AddConnects(a, &workload.Process{PID: 10}, 4)
	s := tb.Snapshot()
	if err := s.Delta(&prev); err != nil {
		t.Fatal(err)
	}
	if got := find(t, s.Rows, a); got.Recent.Connects != 4 || s.PerSecond(got.Recent.Connects) != 2 {
		t.Fatalf("row a recent = %d connects, want 4 (2/s)", got.Recent.Connects)
	}
}

// A row folding several processes counts each PID once, remembers the
// first, and leaves the Other row and the per-process rows alone.
func TestRowProcesses(t *testing.T) {
	tb := New(1)
	k := key(0, "curl", "10.0.0.9:80")
	k.PID, k.PPID = 0, 4242
	proc := func(pid uint32) *workload.Process {
		return &workload.Process{PID: pid, PPID: 4242, Comm: comm("curl")}
	}
	for i := range 300 {
		pid := uint32(1000 + i)
		e := timewait(pid, "curl", "10.0.0.9:80", event.RoleClient, 0)
		tb.AddAs(k, &e, proc(pid))
		tb.AddAs(k, &e, proc(pid)) // the same process again
		tb.AddConnects(k, proc(pid), 1)
	}
	e := timewait(7, "other", "10.0.0.9:81", event.RoleClient, 0)
	tb.Add(&e) // no room: the Other row
	s := tb.Snapshot()
	if len(s.Rows) != 2 {
		t.Fatalf("%d rows, want the folded row and Other", len(s.Rows))
	}
	r := s.Rows[0]
	if r.Processes != 300 || r.FirstPID != 1000 || r.FirstPPID != 4242 || event.CommString(&r.FirstComm) != "curl" {
		t.Errorf("folded row: %d processes, first %d (parent %d, %q); want 300, 1000 (4242, curl)",
			r.Processes, r.FirstPID, r.FirstPPID, event.CommString(&r.FirstComm))
	}
	if r.Timewait != 600 || r.Connects != 300 {
		t.Errorf("folded row: %d timewait, %d connects; want 600, 300", r.Timewait, r.Connects)
	}
	if o := s.Rows[1]; !o.Other || o.Processes != 0 {
		t.Errorf("Other row: %+v, want no processes counted", o)
	}
	if s.UncountedProcesses != 0 {
		t.Errorf("UncountedProcesses = %d, want 0", s.UncountedProcesses)
	}
}

// Past MaxRowProcesses a row stops remembering PIDs, and says how many it
// did not count.
func TestRowProcessesBounded(t *testing.T) {
	tb := New(1)
	k := key(0, "curl", "10.0.0.9:80")
	for pid := range uint32(MaxRowProcesses + 5) {
		tb.AddConnects(k, &workload.Process{PID: pid + 1}, 1)
	}
	s := tb.Snapshot()
	if r := s.Rows[0]; r.Processes != MaxRowProcesses || s.UncountedProcesses != 5 {
		t.Fatalf("%d processes, %d uncounted; want %d, 5", r.Processes, s.UncountedProcesses, MaxRowProcesses)
	}
}

// A row counts its connections by stack: the most frequent first, and
// those past its slots in StacksOther, never dropped.
func TestRowCountsStacks(t *testing.T) {
	tb := New(10)
	e := event.Event{Kind: event.KindTimewait, PID: 7, Role: event.RoleClient}
	add := func(stack uint64, n int) {
		for range n {
			e.Stack = stack
			tb.Add(&e)
		}
	}
	add(0, 3) // no stack taken: not counted by stack
	add(11, 1)
	add(22, 3)
	add(33, 2)
	add(44, 1)
	add(55, 4) // a fifth stack: no slot
	add(11, 2)
	s := tb.Snapshot()
	if len(s.Rows) != 1 {
		t.Fatalf("rows = %d, want 1", len(s.Rows))
	}
	r := s.Rows[0]
	want := [StackSlots]StackCount{{22, 3}, {11, 3}, {33, 2}, {44, 1}}
	if r.Stacks != want || r.StacksOther != 4 || r.Timewait != 16 {
		t.Errorf("stacks %v, other %d, timewait %d; want %v, 4, 16", r.Stacks, r.StacksOther, r.Timewait, want)
	}
}
