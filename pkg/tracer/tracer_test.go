package tracer

import (
	"errors"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/event"
)

func TestMain(m *testing.M) {
	testnet.RunClientIfAsked()
	runProcChildIfAsked()
	os.Exit(m.Run())
}

func requireBPF(t testing.TB) { testnet.RequireBPF(t, Preflight) }

// collector keeps copies of every event a tracer reports.
type collector struct {
	mu     sync.Mutex
	events []event.Event
}

func (c *collector) add(e *event.Event) {
	c.mu.Lock()
	c.events = append(c.events, *e)
	c.mu.Unlock()
}

func (c *collector) snapshot() []event.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

func (c *collector) ofKind(k event.Kind) []event.Event {
	var out []event.Event
	for _, e := range c.snapshot() {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// settle waits until want events of kind arrived, then a little longer so
// that an extra (wrong) event has the chance to show up too.
func (c *collector) settle(k event.Kind, want int) []event.Event {
	testnet.WaitFor(10*time.Second, func() bool { return len(c.ofKind(k)) >= want })
	time.Sleep(300 * time.Millisecond)
	return c.ofKind(k)
}

// A full owner table never loses a socket silently: with room for 4, ten
// connections held open get 4 records at connect(); the other 6 are
// counted, and get a record when they close if there is room by then.
// Every connection is either reported or counted.
func TestOwnerTableFullIsCounted(t *testing.T) {
	requireBPF(t)
	ns := testnet.New(t)
	tr, err := New(Options{Netns: ns.Inode, MaxSockets: 4})
	if err != nil {
		t.Fatal(err)
	}
	c := collect(t, tr)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	const n = 10
	cl := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: n, Hold: true})
	if len(cl.Ports) != n {
		t.Fatalf("client made %d connections, want %d", len(cl.Ports), n)
	}
	// Each connection ends either as a timewait event or, without a
	// record at its close either, as a second untracked count.
	ofClient := func() []event.Event {
		var tws []event.Event
		for _, e := range c.ofKind(event.KindTimewait) {
			if event.CommString(&e.Comm) == testnet.ClientComm {
				tws = append(tws, e)
			}
		}
		return tws
	}
	var untracked uint64
	testnet.WaitFor(10*time.Second, func() bool {
		untracked, err = tr.Untracked()
		return err == nil && uint64(len(ofClient()))+untracked >= n+6
	})
	time.Sleep(300 * time.Millisecond)
	tws := ofClient()
	untracked, err = tr.Untracked()
	if err != nil {
		t.Fatal(err)
	}
	clients := 0
	for _, e := range tws {
		if int(e.PID) != cl.PID {
			t.Errorf("timewait pid %d, want %d", e.PID, cl.PID)
		}
		if e.Role == event.RoleClient {
			clients++
		}
	}
	if clients != 4 || uint64(len(tws))+untracked != n+6 {
		t.Fatalf("%d timewait (%d with role client) and %d untracked; want 4 with role client and timewait + untracked = %d",
			len(tws), clients, untracked, n+6)
	}
	t.Logf("%d timewait, %d untracked", len(tws), untracked)
}

// Four client processes churn connections at once, so softirqs interrupt
// the state programs all the time (the nested twins' work). Every
// connection's timewait entry is reported once (some perhaps late, see
// recover() in the BPF source), or counted as missed: nothing vanishes.
// (Usually all 8,000 are reported.) No transition is handled twice: the
// twins handle exactly the runs the kernel skipped, and each client's
// connect() attempts are counted exactly.
func TestConcurrentChurnReportedOrCounted(t *testing.T) {
	requireBPF(t)
	ns := testnet.New(t)
	tr, err := New(Options{Netns: ns.Inode, CountConnects: true})
	if err != nil {
		t.Fatal(err)
	}
	c := collect(t, tr)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	const clients, each = 4, 2000
	pids := make(chan int, clients)
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: each})
			if len(cl.Ports) != each {
				t.Errorf("client %d made %d connections, want %d", cl.PID, len(cl.Ports), each)
			}
			pids <- cl.PID
		}()
	}
	wg.Wait()
	close(pids)
	ours := map[uint32]bool{}
	for pid := range pids {
		ours[uint32(pid)] = true
	}
	testnet.WaitFor(10*time.Second, func() bool { return len(c.ofKind(event.KindTimewait)) >= clients*each })
	time.Sleep(300 * time.Millisecond)
	tws := c.ofKind(event.KindTimewait)
	// A connection is its source port and its open time: ports are reused
	// within the test (loopback recycles timewait ports), opens are not.
	type conn struct {
		port uint16
		open time.Time
	}
	seen := map[conn]event.Event{}
	recovered := 0
	for _, e := range tws {
		if !ours[e.PID] || e.Role != event.RoleClient {
			t.Fatalf("timewait pid %d role %s: not one of the clients %v", e.PID, e.Role, ours)
		}
		k := conn{e.Sport, e.Time.Add(-e.Lifetime)}
		if first, dup := seen[k]; dup {
			t.Fatalf("one connection reported twice:\n%+v\n%+v", first, e)
		}
		seen[k] = e
		if e.Recovered {
			recovered++
		}
	}
	missed, err := tr.Missed()
	if err != nil {
		t.Fatal(err)
	}
	unfinished, err := tr.Unfinished()
	if err != nil {
		t.Fatal(err)
	}
	rescued, _ := tr.Rescued()
	var skipped uint64
	for _, p := range []*ebpf.Program{tr.objs.TwState, tr.objs.TwReset} {
		st, err := p.Stats()
		if err != nil {
			t.Fatal(err)
		}
		skipped += st.RecursionMisses
	}
	// The figures first: a failing run says what it saw.
	t.Logf("%d timewait events for %d connections (%d of them recovered late); the kernel skipped %d primary runs, the twins rescued %d; %d missed, %d unfinished",
		len(tws), clients*each, recovered, skipped, rescued, missed, unfinished)
	// Each run the kernel skipped is one a twin handled, and a twin
	// handles nothing else (recursion_misses: Linux 5.12+). With a ring of
	// the last four handled in place of the pending table, 6 runs in 40
	// here had a twin handle one or two transitions a second time; with
	// the table keyed by socket and edge, not by invocation, 1 in CI.
	if testnet.KernelAtLeast(5, 12) && rescued != skipped {
		t.Errorf("twins handled %d transitions, the kernel skipped %d primary runs: want equal", rescued, skipped)
	}
	gap := uint64(clients*each - len(tws))
	if len(tws) > clients*each || gap > missed+unfinished {
		t.Fatalf("%d timewait events for %d connections; missed %d, unfinished %d: %d vanished",
			len(tws), clients*each, missed, unfinished, gap)
	}
	connects := map[uint32]uint64{}
	if err := tr.ReadConnects(func(c *ConnectCount) { connects[c.PID] += c.N }); err != nil {
		t.Fatal(err)
	}
	for pid := range ours {
		if connects[pid] != each {
			t.Errorf("pid %d: %d connect() attempts counted, want %d", pid, connects[pid], each)
		}
	}
	if len(connects) != clients {
		t.Errorf("connect counts for pids %v, want the %d clients only", connects, clients)
	}
}

// traceNetns starts a tracer that reports only ns's events.
func traceNetns(t *testing.T, ns *testnet.Netns) *collector {
	t.Helper()
	requireBPF(t)
	tr, err := New(Options{Netns: ns.Inode})
	if err != nil {
		t.Fatalf("starting tracer: %v", err)
	}
	return collect(t, tr)
}

// collect reads tr's events until the test ends, then closes it.
func collect(t *testing.T, tr *Tracer) *collector {
	c := &collector{}
	done := make(chan error, 1)
	go func() { done <- tr.Read(c.add) }()
	t.Cleanup(func() {
		tr.Close()
		if err := <-done; err != nil {
			t.Errorf("Read: %v", err)
		}
		if lost, err := tr.Lost(); err == nil && lost != 0 {
			t.Errorf("lost %d records with the default ring buffer", lost)
		}
	})
	return c
}

func ports(evs []event.Event) []int {
	var out []int
	for _, e := range evs {
		out = append(out, int(e.Sport))
	}
	slices.Sort(out)
	return out
}

func sorted(p []int) []int {
	p = slices.Clone(p)
	slices.Sort(p)
	return p
}

// checkTimewaits asserts every event names the closing process and the
// server as destination.
func checkTimewaits(t *testing.T, evs []event.Event, closer int, comm string, role event.Role, dst netip.AddrPort, ipv6 bool) {
	t.Helper()
	for _, e := range evs {
		if int(e.PID) != closer || event.CommString(&e.Comm) != comm || e.Role != role {
			t.Errorf("timewait owned by pid %d comm %q role %s, want pid %d comm %q role %s",
				e.PID, event.CommString(&e.Comm), e.Role, closer, comm, role)
		}
		if role == event.RoleServer {
			// The destination of a server's socket is the client.
			if e.Sport != dst.Port() || e.Saddr != dst.Addr() {
				t.Errorf("server timewait source %s:%d, want %s", e.Saddr, e.Sport, dst)
			}
		} else if e.Daddr != dst.Addr() || e.Dport != dst.Port() {
			t.Errorf("timewait destination %s:%d, want %s", e.Daddr, e.Dport, dst)
		}
		if e.IPv6 != ipv6 {
			t.Errorf("timewait IPv6=%v, want %v", e.IPv6, ipv6)
		}
		// An accepted socket gets its record only when it closes first
		// (a record per accepted socket would double the in-kernel cost
		// of a connection): its lifetime is unknown, reported as 0.
		if role == event.RoleServer && e.Lifetime != 0 {
			t.Errorf("server timewait lifetime %v, want 0 (unknown)", e.Lifetime)
		}
		if role != event.RoleServer && e.Lifetime <= 0 {
			t.Errorf("timewait lifetime %v, want > 0", e.Lifetime)
		}
	}
}

// checkBytes asserts the payload each connection carried, exactly: SYN and
// FIN (ours, and the peer's once received) occupy sequence space but are
// not payload.
func checkBytes(t *testing.T, evs []event.Event, sent, received uint64) {
	t.Helper()
	for _, e := range evs {
		if e.BytesSent != sent || e.BytesRecv != received {
			t.Errorf("timewait bytes sent %d received %d, want %d and %d", e.BytesSent, e.BytesRecv, sent, received)
		}
	}
}

// Scenario 1: client closes first → one timewait event per connection,
// owned by the client's pid, with exactly the client's source ports.
func TestClientClosesFirst(t *testing.T) {
	ns := testnet.New(t)
	c := traceNetns(t, ns)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	const n = 25
	cl := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: n})
	evs := c.settle(event.KindTimewait, n)
	if len(evs) != n {
		t.Fatalf("got %d timewait events, want %d", len(evs), n)
	}
	checkTimewaits(t, evs, cl.PID, testnet.ClientComm, event.RoleClient, srv.Addr, false)
	checkBytes(t, evs, 0, 0)
	if got, want := ports(evs), sorted(cl.Ports); !slices.Equal(got, want) {
		t.Errorf("timewait source ports %v, want the client's %v", got, want)
	}
	for _, e := range evs {
		if int(e.OpenerPID) != cl.PID || e.Netns != ns.Inode {
			t.Errorf("opener pid %d netns %d, want %d and %d", e.OpenerPID, e.Netns, cl.PID, ns.Inode)
		}
	}
	if n := len(c.ofKind(event.KindConnectError)); n != 0 {
		t.Errorf("%d connect_error events, want 0", n)
	}
}

// Scenario 2: server closes first → timewait on the server's accepted
// sockets, owned by the server process with role server; none for the client.
func TestServerClosesFirst(t *testing.T) {
	ns := testnet.New(t)
	c := traceNetns(t, ns)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerCloseFirst)
	const n = 12
	cl := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: n, ReadFirst: true})
	evs := c.settle(event.KindTimewait, n)
	if len(evs) != n {
		t.Fatalf("got %d timewait events, want %d", len(evs), n)
	}
	for _, e := range evs {
		if int(e.PID) != os.Getpid() || e.Role != event.RoleServer || int(e.OpenerPID) != os.Getpid() {
			t.Errorf("timewait pid %d role %s opener %d, want the server %d, server", e.PID, e.Role, e.OpenerPID, os.Getpid())
		}
		if e.Sport != srv.Addr.Port() {
			t.Errorf("server timewait sport %d, want %d", e.Sport, srv.Addr.Port())
		}
	}
	checkBytes(t, evs, 1, 0) // the server writes one byte, the client none
	dports := make([]int, 0, n)
	for _, e := range evs {
		dports = append(dports, int(e.Dport))
	}
	slices.Sort(dports)
	if want := sorted(cl.Ports); !slices.Equal(dports, want) {
		t.Errorf("server timewait destinations %v, want the client ports %v", dports, want)
	}
}

// Scenario 3: shutdown(SHUT_WR), the server closes on EOF, then the client
// closes. On loopback the final transition runs in the server's context,
// yet the timewait belongs to the client, which sent the first FIN.
func TestShutdownThenClose(t *testing.T) {
	ns := testnet.New(t)
	c := traceNetns(t, ns)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	const n = 10
	cl := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: n, Shutdown: true})
	evs := c.settle(event.KindTimewait, n)
	if len(evs) != n {
		t.Fatalf("got %d timewait events, want %d", len(evs), n)
	}
	checkTimewaits(t, evs, cl.PID, testnet.ClientComm, event.RoleClient, srv.Addr, false)
	checkBytes(t, evs, 0, 0) // the server's FIN arrived: not payload
	if got, want := ports(evs), sorted(cl.Ports); !slices.Equal(got, want) {
		t.Errorf("timewait source ports %v, want %v", got, want)
	}
}

// Scenario 4: SO_LINGER {1,0} resets the connection: no timewait at all.
func TestLingerZeroHasNoTimewait(t *testing.T) {
	ns := testnet.New(t)
	c := traceNetns(t, ns)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	cl := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: 10, Linger0: true})
	if len(cl.Ports) != 10 {
		t.Fatalf("client made %d connections, want 10", len(cl.Ports))
	}
	srv.Stop()
	time.Sleep(300 * time.Millisecond)
	if evs := c.snapshot(); len(evs) != 0 {
		t.Errorf("got %d events after RST closes, want 0: %+v", len(evs), evs[0])
	}
}

// exhaust leaves the namespace a range of 10 ports and no reuse. Call it
// after the server listens: a listener on port 0 would take one of the 10.
// tcp_rfc1337=1: by default an RST ends a TIME_WAIT at once, and on
// loopback one comes when the server's retransmitted FIN crosses the
// client's last ACK; its port would then be free for an 11th connection
// (seen on 6.12 in a VM).
func exhaust(t *testing.T, ns *testnet.Netns) {
	ns.Sysctl(t, "ipv4/ip_local_port_range", "40000 40009")
	ns.Sysctl(t, "ipv4/tcp_tw_reuse", "0")
	ns.Sysctl(t, "ipv4/tcp_rfc1337", "1")
}

// checkExhaustedClient checks that n connects against a range of 10 ports
// made at most 10 connections and failed for the rest. The kernel's port
// search has been seen (1 run in ~12) to give up with one port of the
// range still free, so the split is taken from what the client saw and
// the events must match it.
func checkExhaustedClient(t *testing.T, cl *testnet.ClientResult, n int) {
	t.Helper()
	if len(cl.Ports)+cl.Failures != n || len(cl.Ports) > 10 || cl.Failures < n-10 {
		t.Fatalf("client: %d connections, %d failures; want 10 (at most) and %d (at least)", len(cl.Ports), cl.Failures, n-10)
	}
}

// settleExhaustion waits for one timewait event per connection the client
// made and one connect_error per failure, and returns them.
func (c *collector) settleExhaustion(t *testing.T, cl *testnet.ClientResult) (tws, errs []event.Event) {
	t.Helper()
	tws = c.settle(event.KindTimewait, len(cl.Ports))
	errs = c.settle(event.KindConnectError, cl.Failures)
	if len(tws) != len(cl.Ports) || len(errs) != cl.Failures {
		t.Fatalf("got %d timewait and %d connect_error events, want %d and %d", len(tws), len(errs), len(cl.Ports), cl.Failures)
	}
	if got, want := ports(tws), sorted(cl.Ports); !slices.Equal(got, want) {
		t.Errorf("timewait source ports %v, want %v", got, want)
	}
	return tws, errs
}

func checkConnectErrors(t *testing.T, evs []event.Event, cl *testnet.ClientResult, dst netip.AddrPort) {
	t.Helper()
	for _, e := range evs {
		if int(e.PID) != cl.PID || int(e.TID) != cl.PID || event.CommString(&e.Comm) != testnet.ClientComm {
			t.Errorf("connect_error pid %d tid %d comm %q, want the client %d %q", e.PID, e.TID, event.CommString(&e.Comm), cl.PID, testnet.ClientComm)
		}
		if e.Daddr != dst.Addr() || e.Dport != dst.Port() || e.IPv6 {
			t.Errorf("connect_error destination %s:%d ipv6=%v, want %s over IPv4", e.Daddr, e.Dport, e.IPv6, dst)
		}
		if e.Errno != syscall.EADDRNOTAVAIL || e.Sport != 0 || e.Saddr != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("connect_error errno %v source %s:%d, want EADDRNOTAVAIL from 127.0.0.1:0", e.Errno, e.Saddr, e.Sport)
		}
	}
}

// Scenario 5: with 10 ports and no reuse, 10 connections enter timewait and
// every further connect() fails with EADDRNOTAVAIL, each reported once.
func TestExhaustionConnectErrors(t *testing.T) {
	ns := testnet.New(t)
	c := traceNetns(t, ns)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	exhaust(t, ns)
	cl := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: 17})
	checkExhaustedClient(t, cl, 17)
	_, errs := c.settleExhaustion(t, cl)
	checkConnectErrors(t, errs, cl, srv.Addr)
}

// Scenario 5b: the same exhaustion with every connect submitted through
// io_uring (IORING_OP_CONNECT) instead of connect(2): the failures are
// issued inline in io_uring_enter, by the client's own thread, and each is
// reported once, in either tier.
func TestIOUringExhaustion(t *testing.T) {
	ns := testnet.New(t)
	c := traceNetns(t, ns)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	exhaust(t, ns)
	cl := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: 13, IOUring: true})
	checkExhaustedClient(t, cl, 13)
	tws, errs := c.settleExhaustion(t, cl)
	checkTimewaits(t, tws, cl.PID, testnet.ClientComm, event.RoleClient, srv.Addr, false)
	checkConnectErrors(t, errs, cl, srv.Addr)
}

// Scenario 5c: the same with IOSQE_ASYNC: every connect runs in an io-wq
// worker, a thread of the client named "iou-wrk-<tid>". Its records name
// the client: its pid, the worker's tid, and the process's comm, not the
// worker's. Each connection's opener is the client too, though a worker
// made it.
func TestIOUringWorkerConnects(t *testing.T) {
	ns := testnet.New(t)
	c := traceNetns(t, ns)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	exhaust(t, ns)
	cl := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: 13, IOUring: true, IOUringAsync: true})
	checkExhaustedClient(t, cl, 13)
	if len(cl.Workers) == 0 {
		t.Fatalf("the client has no iou-wrk thread: this kernel runs io-wq workers as kernel threads")
	}
	tws, errs := c.settleExhaustion(t, cl)
	checkTimewaits(t, tws, cl.PID, testnet.ClientComm, event.RoleClient, srv.Addr, false)
	for _, e := range tws {
		if int(e.OpenerPID) != cl.PID || event.CommString(&e.OpenerComm) != testnet.ClientComm {
			t.Errorf("timewait opener pid %d comm %q, want %d %q", e.OpenerPID, event.CommString(&e.OpenerComm), cl.PID, testnet.ClientComm)
		}
	}
	for _, e := range errs {
		if int(e.PID) != cl.PID || !slices.Contains(cl.Workers, int(e.TID)) || event.CommString(&e.Comm) != testnet.ClientComm {
			t.Errorf("connect_error pid %d tid %d comm %q, want the client %d, one of its workers %v, %q",
				e.PID, e.TID, event.CommString(&e.Comm), cl.PID, cl.Workers, testnet.ClientComm)
		}
		if e.Errno != syscall.EADDRNOTAVAIL || e.Daddr != srv.Addr.Addr() || e.Dport != srv.Addr.Port() {
			t.Errorf("connect_error errno %v to %s:%d, want EADDRNOTAVAIL to %s", e.Errno, e.Daddr, e.Dport, srv.Addr)
		}
	}
}

// A connect() refused by the peer also goes SYN_SENT->CLOSE inside the
// syscall on loopback; only EADDRNOTAVAIL is an ephemeral-port failure.
func TestRefusedConnectIsNotReported(t *testing.T) {
	ns := testnet.New(t)
	c := traceNetns(t, ns)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	dest := srv.Dest(false)
	srv.Stop()
	cl := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: dest, N: 6})
	if cl.Refused != 6 || len(cl.Ports) != 0 {
		t.Fatalf("client: %d refused, %d connected; want 6 and 0", cl.Refused, len(cl.Ports))
	}
	// A marker connection proves the tracer saw everything before it.
	srv2 := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv2.Dest(false), N: 1})
	c.settle(event.KindTimewait, 1)
	if n := len(c.ofKind(event.KindConnectError)); n != 0 {
		t.Fatalf("%d connect_error events for refused connects, want 0", n)
	}
}

// Scenario 6: bind(port 0) draws from the same range and fails with
// EADDRINUSE once it is used up.
func TestExhaustionBindErrors(t *testing.T) {
	ns := testnet.New(t)
	exhaust(t, ns)
	c := traceNetns(t, ns)
	cl := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "bind", Dest: "127.0.0.1:0", N: 14})
	if cl.Failures != 4 {
		t.Fatalf("client: %d bind failures, want 4", cl.Failures)
	}
	evs := c.settle(event.KindBindError, 4)
	if len(evs) != 4 {
		t.Fatalf("got %d bind_error events, want 4", len(evs))
	}
	for _, e := range evs {
		if int(e.PID) != cl.PID || e.Errno != syscall.EADDRINUSE || e.Saddr != netip.MustParseAddr("127.0.0.1") || e.Daddr.IsValid() {
			t.Errorf("bind_error %+v: want pid %d, EADDRINUSE, saddr 127.0.0.1, no destination", e, cl.PID)
		}
	}
	if n := len(c.ofKind(event.KindTimewait)) + len(c.ofKind(event.KindConnectError)); n != 0 {
		t.Errorf("%d other events, want 0", n)
	}
}

// Scenario 7a: IPv6 connections are reported as IPv6.
func TestIPv6Timewait(t *testing.T) {
	ns := testnet.New(t)
	c := traceNetns(t, ns)
	srv := testnet.StartServer(t, ns, "::1", testnet.ServerReadEOF)
	const n = 8
	cl := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: n})
	evs := c.settle(event.KindTimewait, n)
	if len(evs) != n {
		t.Fatalf("got %d timewait events, want %d", len(evs), n)
	}
	checkTimewaits(t, evs, cl.PID, testnet.ClientComm, event.RoleClient, srv.Addr, true)
	if got, want := ports(evs), sorted(cl.Ports); !slices.Equal(got, want) {
		t.Errorf("timewait source ports %v, want %v", got, want)
	}
}

// Scenario 7b: an AF_INET6 socket dialling a v4-mapped address talks IPv4:
// reported as IPv4 with dotted addresses, and each failed connect once,
// although it runs through tcp_v6_connect and tcp_v4_connect.
func TestV4MappedExhaustion(t *testing.T) {
	ns := testnet.New(t)
	c := traceNetns(t, ns)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	exhaust(t, ns)
	cl := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(true), N: 13})
	if len(cl.Ports) != 10 || cl.Failures != 3 {
		t.Fatalf("client: %d connections, %d failures; want 10 and 3", len(cl.Ports), cl.Failures)
	}
	tws, errs := c.settleExhaustion(t, cl)
	checkTimewaits(t, tws, cl.PID, testnet.ClientComm, event.RoleClient, srv.Addr, false)
	checkConnectErrors(t, errs, cl, srv.Addr)
}

// Scenario 8: the client closes with unsent data and exits; its FIN, the
// ACK and the timewait all happen after the process is gone, and the event
// still names it.
func TestClientExitedBeforeTimewait(t *testing.T) {
	ns := testnet.New(t)
	c := traceNetns(t, ns)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerHold)
	const n = 3
	cl := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: n, FillAndExit: true})
	// The client has exited (startClient waited for it); no timewait yet.
	time.Sleep(100 * time.Millisecond)
	if got := len(c.ofKind(event.KindTimewait)); got != 0 {
		t.Fatalf("%d timewait events before the server read the data, want 0", got)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(cl.PID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("client %d still exists", cl.PID)
	}
	srv.Release()
	evs := c.settle(event.KindTimewait, n)
	if len(evs) != n {
		t.Fatalf("got %d timewait events, want %d", len(evs), n)
	}
	checkTimewaits(t, evs, cl.PID, testnet.ClientComm, event.RoleClient, srv.Addr, false)
	for _, e := range evs {
		if e.BytesSent == 0 {
			t.Errorf("bytes_sent 0, want the client's filled send buffer")
		}
	}
}

// Scenario 9: a burst into a one-page ring buffer, read only afterwards:
// what did not fit is counted, exactly. Only timewait records are asked
// for: on loopback the kernel may reuse a timewait port for a later
// connect (tcp_tw_reuse=2), and in the precise tier that adds a reuse and
// an end record the sum must not depend on.
func TestTinyRingBufferCountsLost(t *testing.T) {
	requireBPF(t)
	ns := testnet.New(t)
	tr, err := New(Options{Netns: ns.Inode, RingBufferSize: os.Getpagesize(), KindMask: 1 << event.KindTimewait})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	const n = 200
	cl := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: n})
	if len(cl.Ports) != n {
		t.Fatalf("client made %d connections, want %d", len(cl.Ports), n)
	}
	var received int
	var lost uint64
	kinds := map[event.Kind]int{}
	testnet.WaitFor(10*time.Second, func() bool {
		tr.SetDeadline(time.Now().Add(50 * time.Millisecond))
		err := tr.Read(func(e *event.Event) { received++; kinds[e.Kind]++ })
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal(err)
		}
		lost, err = tr.Lost()
		if err != nil {
			t.Fatal(err)
		}
		return received+int(lost) >= n
	})
	if lost == 0 || received+int(lost) != n || kinds[event.KindTimewait] != received {
		t.Fatalf("received %d %v + lost %d, want only timewait records, lost > 0 and a sum of %d (kernel TWRecycled %d)",
			received, kinds, lost, n, counters(t, ns).TWRecycled)
	}
	t.Logf("received %d, lost %d", received, lost)
}

// Without bind_error no syscall hook is attached: a syscall tracepoint
// would slow every syscall on the host.
func TestNoSyscallHookWithoutBindErrors(t *testing.T) {
	requireBPF(t)
	tr, err := New(Options{KindMask: 1<<event.KindTimewait | 1<<event.KindConnectError})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	// The precise tier's fentry/fexit programs, where it runs, are BTF
	// hooks too.
	if want := 6 + len(tr.Tier().Hooks); len(tr.links) != want {
		t.Fatalf("%d hooks attached, want the 6 BTF tracepoint programs and %d precise ones", len(tr.links), len(tr.Tier().Hooks))
	}
	for _, a := range tr.objs.attachments(tr.mask) {
		if !a.btf {
			t.Errorf("attached %s, a syscall tracepoint", a.name)
		}
	}
}

// Close leaves no program of ours loaded.
func TestCloseUnloadsEverything(t *testing.T) {
	requireBPF(t)
	tr, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, a := range tr.objs.attachments(tr.mask) {
		info, err := a.prog.Info()
		if err != nil {
			t.Fatal(err)
		}
		names[info.Name] = true
	}
	if len(names) != 8 {
		t.Fatalf("attached %d distinct programs, want 8", len(names))
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	// Program ids are freed after an RCU grace period.
	ok := testnet.WaitFor(5*time.Second, func() bool { return testnet.CountPrograms(names) == 0 })
	if !ok {
		t.Fatalf("%d twtrace programs still loaded after Close", testnet.CountPrograms(names))
	}
}

// Connection attempts are counted per process and destination, exactly:
// made, refused and failed alike; v4-mapped destinations count as IPv4;
// the key of a process that exited is freed once its count is read.
func TestConnectCounts(t *testing.T) {
	requireBPF(t)
	ns := testnet.New(t)
	// Listeners first: their ports come from the default range.
	a := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	b := testnet.StartServer(t, ns, "::1", testnet.ServerReadEOF)
	// An even number of ports: with an odd one, each connect() considers
	// all but one of them (the kernel rounds the count down to even).
	ns.Sysctl(t, "ipv4/ip_local_port_range", "41000 41005")
	ns.Sysctl(t, "ipv4/tcp_tw_reuse", "0")
	// An RST must not end a TIME_WAIT early and free its port (seen on
	// 5.10 in CI: 7 connections of the 6 ports).
	ns.Sysctl(t, "ipv4/tcp_rfc1337", "1")
	tr, err := New(Options{Netns: ns.Inode, CountConnects: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	type key struct {
		pid  uint32
		dest netip.AddrPort
		ipv6 bool
	}
	got := map[key]uint64{}
	read := func() {
		t.Helper()
		if err := tr.ReadConnects(func(c *ConnectCount) {
			if c.Netns != ns.Inode || string(c.Comm[:len(testnet.ClientComm)]) != testnet.ClientComm {
				t.Errorf("connect count of netns %d comm %q", c.Netns, c.Comm)
			}
			got[key{c.PID, netip.AddrPortFrom(c.Daddr, c.Dport), c.IPv6}] += c.N
		}); err != nil {
			t.Fatal(err)
		}
	}
	// 8 attempts toward a: 6 ports, then 2 EADDRNOTAVAIL (timewait holds them).
	c1 := testnet.StartClient(t, ns, testnet.ClientSpec{Dest: a.Dest(true), N: 8})
	read()
	c2 := testnet.StartClient(t, ns, testnet.ClientSpec{Dest: b.Dest(false), N: 3})
	read()
	if len(c1.Ports) != 6 || c1.Failures != 2 || len(c2.Ports) != 3 {
		t.Fatalf("clients made %d+%d connections with %d failures, want 6+3 and 2", len(c1.Ports), len(c2.Ports), c1.Failures)
	}
	want := map[key]uint64{
		{uint32(c1.PID), a.Addr, false}: 8,
		{uint32(c2.PID), b.Addr, true}:  3,
	}
	if len(got) != len(want) {
		t.Fatalf("counts = %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("counts = %v, want %v", got, want)
		}
	}
	// Both clients have exited: their keys are gone, and no count is
	// reported twice.
	read()
	var k twtraceConnectKey
	var v []uint64
	if it := tr.objs.Connects.Iterate(); it.Next(&k, &v) {
		t.Errorf("key of pid %d still in the kernel's table", k.Pid)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("after a re-read counts = %v, want %v", got, want)
		}
	}
	if n, err := tr.UncountedConnects(); err != nil || n != 0 {
		t.Errorf("UncountedConnects = %d, %v; want 0", n, err)
	}
}

// A server that listened before tracing began: its accepted connections
// that it closes first have role unknown, unless its port is seeded; then
// role server (the listening process stays unknown: opener pid 0).
func TestSeededListenerGivesRoleServer(t *testing.T) {
	requireBPF(t)
	for _, seed := range []bool{false, true} {
		ns := testnet.New(t)
		srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerCloseFirst)
		tr, err := New(Options{Netns: ns.Inode})
		if err != nil {
			t.Fatal(err)
		}
		if seed {
			if err := tr.SeedListener(ns.Inode, srv.Addr.Port()); err != nil {
				t.Fatal(err)
			}
		}
		c := collect(t, tr)
		const n = 6
		testnet.StartClient(t, ns, testnet.ClientSpec{Dest: srv.Dest(false), N: n, ReadFirst: true})
		evs := c.settle(event.KindTimewait, n)
		want, opener := event.RoleUnknown, uint32(0)
		if seed {
			want = event.RoleServer
		}
		if len(evs) != n {
			t.Fatalf("seeded %v: %d timewait events, want %d", seed, len(evs), n)
		}
		for _, e := range evs {
			if int(e.PID) != os.Getpid() || e.Role != want || e.OpenerPID != opener || e.Sport != srv.Addr.Port() {
				t.Errorf("seeded %v: pid %d role %s opener %d sport %d; want %d, %s, %d, %d",
					seed, e.PID, e.Role, e.OpenerPID, e.Sport, os.Getpid(), want, opener, srv.Addr.Port())
			}
		}
	}
}
