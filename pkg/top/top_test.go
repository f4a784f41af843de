package top

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/filter"
	"github.com/twtrace/twtrace/pkg/inventory"
	"github.com/twtrace/twtrace/pkg/live"
	"github.com/twtrace/twtrace/pkg/report"
	"github.com/twtrace/twtrace/pkg/tracer"
)

func TestMain(m *testing.M) {
	testnet.RunClientIfAsked()
	os.Exit(m.Run())
}

func requireBPF(t testing.TB) { testnet.RequireBPF(t, tracer.Preflight) }

// exhaustionNetns is the namespace (testnet.NewSmallRange: a
// 100-port range, reuse off, 5 reserved ports and a listener bound inside
// the range: 94 usable) with two servers for clients to reach.
func exhaustionNetns(t *testing.T) (*testnet.Netns, *testnet.Server, *testnet.Server) {
	ns, s := testnet.NewSmallRange(t, 2)
	return ns, s[0], s[1]
}

// The top test: a churning client next to a pooled one, in a
// namespace other than ours. Rows are attributed to each client's pid with
// exact counts, the timewait sockets held now are joined to them, the
// destinations carry exactly the headroom the model predicts, and only the
// churner gets the per-request verdict.
func TestTopChurnerAndPooledClient(t *testing.T) {
	requireBPF(t)
	ns, a, b := exhaustionNetns(t)
	run := startTop(t, ns)
	pooled := testnet.StartClient(t, ns, testnet.ClientSpec{Comm: "pooled", Dest: b.Dest(false), N: 1, Requests: 10, PauseMs: 50})
	churner := testnet.StartClient(t, ns, testnet.ClientSpec{Comm: "churner", Dest: a.Dest(false), N: 30})
	if len(churner.Ports) != 30 || len(pooled.Ports) != 1 {
		t.Fatalf("clients made %d and %d connections, want 30 and 1", len(churner.Ports), len(pooled.Ports))
	}
	// Wait for a frame that has seen both clients' timewait entries, and
	// in which the servers have closed their side (no client timewait
	// left in substate FIN_WAIT2).
	f := run.frameWhere(t, settled(31))

	if len(f.Rows) != 2 {
		t.Fatalf("rows = %+v, want the churner's and the pooled client's", f.Rows)
	}
	byPID := map[uint32]report.Row{}
	for _, r := range f.Rows {
		byPID[r.PID] = r
	}
	ch, po := byPID[uint32(churner.PID)], byPID[uint32(pooled.PID)]
	check := func(name string, r report.Row, comm string, dst netip.AddrPort, n uint64, verdict string) {
		t.Helper()
		if r.Comm != comm || r.Netns != ns.Inode || r.Daddr != dst.Addr() || r.Dport != dst.Port() || r.Role != "client" {
			t.Errorf("%s row = %+v, want comm %s toward %s in netns %d", name, r, comm, dst, ns.Inode)
		}
		if r.Connects != n || r.Timewait != n || r.TimewaitNow != int(n) || r.ConnectErrors != 0 {
			t.Errorf("%s row: %d connects, %d timewait, %d held now, %d errors; want %d, %d, %d, 0",
				name, r.Connects, r.Timewait, r.TimewaitNow, r.ConnectErrors, n, n, n)
		}
		if r.Verdict != verdict {
			t.Errorf("%s verdict %q (%s), want %q", name, r.Verdict, r.Reason, verdict)
		}
	}
	check("churner", ch, "churner", a.Addr, 30, "per-request")
	check("pooled", po, "pooled", b.Addr, 1, "")
	if len(ch.Advice) == 0 || !strings.Contains(strings.Join(ch.Advice, " "), "keep-alive") {
		t.Errorf("churner advice %q: want the advice to reuse connections", ch.Advice)
	}
	if po.BytesP50 == nil || *po.BytesP50 < 900 || *po.BytesP50 > 1125 {
		t.Errorf("pooled bytes p50 = %v, want 1000 within the histogram's 12.5%%", po.BytesP50)
	}

	dests := map[uint16]report.LiveDestination{}
	for _, d := range f.Destinations {
		dests[d.Dport] = d
	}
	for _, c := range []struct {
		dst       netip.AddrPort
		tw, avail int
	}{{a.Addr, 30, 64}, {b.Addr, 1, 93}} { // 94 usable − in use
		d, ok := dests[c.dst.Port()]
		if !ok {
			t.Errorf("no destination %s in %+v", c.dst, f.Destinations)
			continue
		}
		if d.Netns != ns.Inode || d.Daddr != c.dst.Addr() || d.Saddr != c.dst.Addr() {
			t.Errorf("destination %+v, want %s from %s in netns %d", d, c.dst, c.dst.Addr(), ns.Inode)
		}
		if d.Timewait != c.tw || d.PortsInUse != c.tw || d.PortsAvailable != c.avail || d.PortsUsable != 94 || d.Unattributed != 0 {
			t.Errorf("destination %s: timewait %d, in use %d, available %d of %d usable, %d unattributed; want %d, %d, %d of 94, 0",
				c.dst, d.Timewait, d.PortsInUse, d.PortsAvailable, d.PortsUsable, d.Unattributed, c.tw, c.tw, c.avail)
		}
	}
	if len(f.Namespaces) != 1 || f.Namespaces[0].Netns != ns.Inode || f.Namespaces[0].PortRange != [2]uint16{40000, 40099} ||
		f.Namespaces[0].TwReuse != 0 || report.Spans(f.Namespaces[0].ReservedPorts) != "40010-40014" {
		t.Errorf("namespaces = %+v, want only the test's with its settings", f.Namespaces)
	}
	if f.Losses != (report.Losses{}) {
		t.Errorf("losses = %+v, want none", f.Losses)
	}
}

// The snapshot test: after K client connections closed first, the
// snapshot of a namespace other than ours reports exactly K timewait
// sockets toward the destination and exactly the ports the model leaves:
// 100 in range − 5 reserved − 1 bound by a listener − ports in use.
func TestSnapshotExactHeadroom(t *testing.T) {
	requireBPF(t)
	ns, a, b := exhaustionNetns(t)
	c1 := testnet.StartClient(t, ns, testnet.ClientSpec{Dest: a.Dest(false), N: 30})
	c2 := testnet.StartClient(t, ns, testnet.ClientSpec{Dest: b.Dest(false), N: 7})
	if len(c1.Ports) != 30 || len(c2.Ports) != 7 {
		t.Fatalf("clients made %d and %d connections, want 30 and 7", len(c1.Ports), len(c2.Ports))
	}
	// Two connections toward a stay established.
	var conns []net.Conn
	ns.Do(t, func() error {
		for range 2 {
			c, err := net.Dial("tcp", a.Addr.String())
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		return nil
	})
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()

	sc, err := inventory.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	// The servers close their side when they read the clients' FIN: until
	// then a client's timewait socket is in substate FIN_WAIT2. Wait for
	// the kernel to settle, then demand exact figures.
	var snap report.Snapshot
	testnet.WaitFor(5*time.Second, func() bool {
		snap, _, err = report.Take(sc, func(n uint32) bool { return n == ns.Inode })
		return err == nil && len(snap.Namespaces) == 1 && snap.Namespaces[0].FinWait2 == 0
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Errors) != 0 || len(snap.Namespaces) != 1 {
		t.Fatalf("snapshot: %d namespaces, errors %q; want the test's only", len(snap.Namespaces), snap.Errors)
	}
	n := snap.Namespaces[0]
	if n.Netns != ns.Inode || n.PortRange != [2]uint16{40000, 40099} || report.Spans(n.ReservedPorts) != "40010-40014" ||
		n.TwReuse != 0 || n.Usable != 94 || n.ReservedInRange != 5 || n.BoundInRange != 1 || n.Timewait != 37 {
		t.Errorf("namespace = %+v", n)
	}
	want := []report.Destination{
		{Netns: ns.Inode, Saddr: a.Addr.Addr(), Daddr: a.Addr.Addr(), Dport: a.Addr.Port(),
			Timewait: 30, Established: 2, PortsInUse: 32, PortsAvailable: 62, PortsUsable: 94,
			PortsAvailableWithReuse: 62, HeadroomPct: 66, CeilingPerS: 1.6},
		{Netns: ns.Inode, Saddr: b.Addr.Addr(), Daddr: b.Addr.Addr(), Dport: b.Addr.Port(),
			Timewait: 7, PortsInUse: 7, PortsAvailable: 87, PortsUsable: 94,
			PortsAvailableWithReuse: 87, HeadroomPct: 92.6, CeilingPerS: 1.6},
	}
	if len(snap.Destinations) != len(want) {
		t.Fatalf("destinations = %+v, want %d", snap.Destinations, len(want))
	}
	for i, w := range want {
		if d := snap.Destinations[i]; d != w {
			t.Errorf("destination %d = %+v\nwant %+v", i, snap.Destinations[i], w)
		}
	}
	if len(snap.Servers) != 1 || snap.Servers[0].Port != a.Addr.Port() || snap.Servers[0].Established != 2 || snap.Servers[0].Timewait != 0 {
		t.Errorf("servers = %+v, want a's port with the 2 accepted connections", snap.Servers)
	}
}

// topRun is a top session on a namespace, refreshing every 300 ms.
type topRun struct {
	cancel func()
	done   chan error
	mu     sync.Mutex
	frames []*Frame
	// sockets, when set, lists the namespace's sockets for a failure's
	// message.
	sockets func() string
}

func startTop(t *testing.T, ns *testnet.Netns) *topRun {
	t.Helper()
	return startTopWith(t, ns, func(*live.Config) {})
}

// startTopWith is startTop with the engine's configuration changed by set.
func startTopWith(t *testing.T, ns *testnet.Netns, set func(*live.Config)) *topRun {
	t.Helper()
	r := startTopIn(t, ns.Inode, set)
	r.sockets = func() string { return ns.TCPListing(t) }
	return r
}

// startTopIn is startTopWith for the namespace of that inode.
func startTopIn(t *testing.T, inode uint32, set func(*live.Config)) *topRun {
	t.Helper()
	flt, err := filter.Parse(filter.Options{Netns: []string{strconv.FormatUint(uint64(inode), 10)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &topRun{cancel: cancel, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		cfg := live.Config{
			Interval: 300 * time.Millisecond, Filter: flt, Netns: inode,
			// Every frame reads the sockets: the tests hold each frame's
			// held timewait sockets and headroom to the kernel's.
			InventoryCPU: 1,
			Ready:        func() { close(ready) },
		}
		set(&cfg)
		r.done <- Run(ctx, Config{Config: cfg}, func(f *Frame) error {
			r.mu.Lock()
			r.frames = append(r.frames, f)
			r.mu.Unlock()
			return nil
		})
	}()
	select {
	case <-ready:
	case err := <-r.done:
		cancel()
		t.Fatal(err)
	}
	return r
}

// await waits for a frame that satisfies cond, the session going on,
// and returns it; nil after 10 s.
func (r *topRun) await(cond func(*Frame) bool) *Frame {
	var f *Frame
	testnet.WaitFor(10*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, fr := range r.frames {
			if cond(fr) {
				f = fr
				return true
			}
		}
		return false
	})
	return f
}

// frameWhere stops the session at the first frame that satisfies cond
// and returns it; the test fails if none does.
func (r *topRun) frameWhere(t *testing.T, cond func(*Frame) bool) *Frame {
	t.Helper()
	f := r.await(cond)
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
	if f == nil {
		// The last frame, whole (losses included), says what went wrong.
		last := []byte("none")
		r.mu.Lock()
		if n := len(r.frames); n > 0 {
			last, _ = json.Marshal(r.frames[n-1])
		}
		r.mu.Unlock()
		listing := ""
		if r.sockets != nil {
			listing = "\nthe namespace's sockets now:\n" + r.sockets()
		}
		t.Fatalf("no frame showed what the test waits for; the last one: %s%s", last, listing)
	}
	return f
}

// A client that runs its destination out of ports: 100 attempts in the
// 94 usable ports make 94 connections and 6 EADDRNOTAVAIL, all attributed
// to it; the destination has no port left, and the advice starts with why.
func TestTopExhaustedDestination(t *testing.T) {
	requireBPF(t)
	ns, srv := testnet.NewSmallRange(t, 1)
	run := startTop(t, ns)
	c := testnet.StartClient(t, ns, testnet.ClientSpec{Dest: srv[0].Dest(false), N: 100})
	if len(c.Ports) != 94 || c.Failures != 6 {
		t.Fatalf("client made %d connections and %d failures, want 94 and 6", len(c.Ports), c.Failures)
	}
	// The failed connects' events come last and may reach a frame after
	// the timewaits (seen under emulation): wait for both.
	f := run.frameWhere(t, func(fr *Frame) bool {
		return len(fr.Rows) == 1 && fr.Rows[0].Timewait == 94 && fr.Rows[0].ConnectErrors >= 6 &&
			len(fr.Destinations) == 1 && fr.Destinations[0].FinWait2 == 0
	})
	r, d := f.Rows[0], f.Destinations[0]
	if r.PID != uint32(c.PID) || r.Connects != 100 || r.ConnectErrors != 6 || r.TimewaitNow != 94 || r.Verdict != "per-request" {
		t.Errorf("row: pid %d, %d connects, %d errors, %d held now, verdict %q; want %d, 100, 6, 94, per-request",
			r.PID, r.Connects, r.ConnectErrors, r.TimewaitNow, r.Verdict, c.PID)
	}
	if len(r.Advice) == 0 || !strings.Contains(r.Advice[0], "EADDRNOTAVAIL") || !strings.Contains(strings.Join(r.Advice, " "), "tcp_tw_recycle") {
		t.Errorf("advice %q: want why first and the stop-gaps", r.Advice)
	}
	if d.Timewait != 94 || d.PortsAvailable != 0 || r.HeadroomPct == nil || *r.HeadroomPct != 0 {
		t.Errorf("destination: %d timewait, %d available, row headroom %v; want 94, 0, 0", d.Timewait, d.PortsAvailable, r.HeadroomPct)
	}
}

// With tcp_max_tw_buckets at 4, 10 connections closed first: in the
// precise tier the client's row has the kernel's split, 4 timewait and 6
// overflow (closed with no timewait socket), or rarely more timewait (CPUs
// can pass the limit's check at once; TestOverflow in pkg/tracer); the
// tracepoint tier cannot tell and counts 10 timewait. The frame says
// which tier ran.
func TestTopCountsOverflow(t *testing.T) {
	requireBPF(t)
	ns, s := testnet.NewSmallRange(t, 1)
	ns.Sysctl(t, "ipv4/tcp_max_tw_buckets", "4")
	run := startTop(t, ns)
	const n = 10
	c := testnet.StartClient(t, ns, testnet.ClientSpec{Dest: s[0].Dest(false), N: n})
	if len(c.Ports) != n {
		t.Fatalf("client made %d connections, want %d", len(c.Ports), n)
	}
	f := run.frameWhere(t, func(fr *Frame) bool {
		var sum uint64
		for _, r := range fr.Rows {
			sum += r.Timewait + r.TimewaitOverflow
		}
		return sum >= n
	})
	if len(f.Rows) != 1 || f.Rows[0].PID != uint32(c.PID) {
		t.Fatalf("rows %+v, want the client's (pid %d) only", f.Rows, c.PID)
	}
	r := f.Rows[0]
	want := [2]uint64{n, 0}
	if f.Tier == tracer.TierPrecise.String() {
		var k inventory.Counters
		ns.Do(t, func() (err error) {
			k, err = inventory.ReadCounters()
			return err
		})
		if k.TCPTimeWaitOverflow == 0 || k.TCPTimeWaitOverflow > n-4 {
			t.Fatalf("the kernel counted %d TCPTimeWaitOverflow, want 1 to %d", k.TCPTimeWaitOverflow, n-4)
		}
		want = [2]uint64{n - k.TCPTimeWaitOverflow, k.TCPTimeWaitOverflow}
	}
	if got := [2]uint64{r.Timewait, r.TimewaitOverflow}; got != want || r.TimewaitReused != 0 || r.Connects != n {
		t.Errorf("tier %s: %d connects, %d timewait, %d overflow, %d reused; want %d, %d, %d, 0",
			f.Tier, r.Connects, r.Timewait, r.TimewaitOverflow, r.TimewaitReused, n, want[0], want[1])
	}
}
