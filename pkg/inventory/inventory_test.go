package inventory

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/internal/testnet"
)

// Clients that close first → one TIME_WAIT socket per connection on the
// client's ports, not bound, timestamped, its timer under 60 s; the
// namespace's TcpExt TW counter reads exactly that many, or none on a
// kernel that counts timewait sockets when they end (twCounting); the
// sysctls read back as set; the host's namespace has none of it.
func TestScanClientsThatCloseFirst(t *testing.T) {
	s := openScanner(t)
	ns := newNetns(t)
	ns.Sysctl(t, "ipv4/ip_local_port_range", "40000 40099")
	ns.Sysctl(t, "ipv4/ip_local_reserved_ports", "40090,40050-40059")
	ns.Sysctl(t, "ipv4/tcp_tw_reuse", "0")
	ns.Sysctl(t, "ipv4/tcp_fin_timeout", "30")
	ns.Sysctl(t, "ipv4/tcp_max_tw_buckets", "5000")
	ns.Sysctl(t, "ipv4/tcp_timestamps", "1")
	wantSysctls := Sysctls{
		PortRange:    PortSpan{40000, 40099},
		Reserved:     []PortSpan{{40050, 40059}, {40090, 40090}},
		TwReuse:      0,
		TwReuseDelay: time.Second,
		MaxTwBuckets: 5000,
		FinTimeout:   30 * time.Second,
		Timestamps:   1,
	}
	if _, err := os.Stat("/proc/sys/net/ipv4/tcp_tw_reuse_delay"); err == nil {
		ns.Sysctl(t, "ipv4/tcp_tw_reuse_delay", "2500")
		wantSysctls.TwReuseDelay, wantSysctls.TwReuseDelayKnown = 2500*time.Millisecond, true
	}
	p := park(t, ns)

	before := scan(t, s, p.ref)
	if !reflect.DeepEqual(before.Sysctls, wantSysctls) {
		t.Fatalf("sysctls read\n%+v\nwant\n%+v", before.Sysctls, wantSysctls)
	}
	if before.Counters != (Counters{}) || before.Len() != 0 {
		t.Fatalf("a new namespace has counters %+v and sockets %+v", before.Counters, before.All())
	}
	if before.Inode != ns.Inode || before.Time.IsZero() {
		t.Fatalf("scanned namespace %d at %v, want %d", before.Inode, before.Time, ns.Inode)
	}

	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF) // a port from the range
	outside := netip.AddrPortFrom(lo4, 8080)
	listenAt(t, ns, outside)
	const K = 7
	res := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: K})
	if len(res.Ports) != K || res.Failures != 0 {
		t.Fatalf("client made %d connections (%d failures), want %d", len(res.Ports), res.Failures, K)
	}

	var after *Namespace
	testnet.WaitFor(10*time.Second, func() bool {
		after = scan(t, s, p.ref)
		return len(timewaits(after, TimeWait)) == K && after.Len() == K+2
	})

	wantListeners := []Socket{
		{State: Listen, Substate: Listen, Saddr: lo4, Sport: outside.Port(), Daddr: netip.IPv4Unspecified(), Bound: true},
		{State: Listen, Substate: Listen, Saddr: lo4, Sport: srv.Addr.Port(), Daddr: netip.IPv4Unspecified(), Bound: true},
	}
	sortSockets(wantListeners)
	if got := withState(after, Listen); !reflect.DeepEqual(got, wantListeners) {
		t.Errorf("listeners\n%+v\nwant\n%+v", got, wantListeners)
	}
	var got, want []Socket
	for _, tw := range withState(after, TimeWait) {
		got = append(got, withoutTimer(t, tw, 60*time.Second))
	}
	for _, port := range res.Ports {
		want = append(want, Socket{
			State: TimeWait, Substate: TimeWait,
			Saddr: lo4, Sport: uint16(port), Daddr: lo4, Dport: srv.Addr.Port(),
			RemainingKnown: true, Timestamps: true,
		})
	}
	sortSockets(want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("timewait sockets\n%+v\nwant\n%+v", got, want)
	}
	if after.Len() != K+2 {
		t.Errorf("%d sockets, want %d listeners and %d timewait: %+v", after.Len(), 2, K, after.All())
	}
	for _, sock := range after.All() {
		port := sock.Sport
		if sock.State == TimeWait && (port < 40000 || port > 40099 || (port >= 40050 && port <= 40059) || port == 40090) {
			t.Errorf("client port %d outside the range or reserved", port)
		}
	}

	// The host's namespace: other settings, none of these sockets.
	refs, err := Namespaces()
	if err != nil {
		t.Fatal(err)
	}
	own, err := statNetns("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if refs[0].Inode != own {
		t.Fatalf("first namespace %+v, want ours (%d)", refs[0], own)
	}
	host := scan(t, s, refs[0])
	if host.Sysctls.PortRange == wantSysctls.PortRange {
		t.Errorf("host's port range reads as the test namespace's")
	}
	for _, sock := range host.All() {
		for _, tw := range want {
			if sock.Saddr == tw.Saddr && sock.Sport == tw.Sport && sock.Daddr == tw.Daddr && sock.Dport == tw.Dport {
				t.Errorf("host namespace shows the test namespace's socket %+v", sock)
			}
		}
	}

	// Last, as it ends the test if it fails: all K TIME_WAITs are in the
	// table (they have 60 s), so TW reads K or 0 exactly, as the kernel
	// counts them when made or when they end.
	t.Logf("timewait sockets %s", twCountingOf(t, after.Counters, Counters{TW: K}))
}

// Held connections are ESTABLISHED with their exact 4-tuples. A port from
// connect() is not bound; one from bind() before connect() is, and an
// accepted socket shares its listener's bound port.
func TestScanEstablishedAndBound(t *testing.T) {
	s := openScanner(t)
	ns := newNetns(t)
	ns.Sysctl(t, "ipv4/ip_local_port_range", "40000 40099")
	p := park(t, ns)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerHold)
	t.Cleanup(srv.Release)

	connected, viaConnect := dial(t, ns, srv.Addr, false)
	t.Cleanup(func() { unix.Close(connected) })
	bound, viaBind := dial(t, ns, srv.Addr, true)
	t.Cleanup(func() { unix.Close(bound) })

	var inv *Namespace
	testnet.WaitFor(10*time.Second, func() bool {
		inv = scan(t, s, p.ref)
		return inv.Len() == 5
	})
	sport := srv.Addr.Port()
	want := []Socket{
		{State: Listen, Substate: Listen, Saddr: lo4, Sport: sport, Daddr: netip.IPv4Unspecified(), Bound: true},
		{State: Established, Substate: Established, Saddr: lo4, Sport: viaConnect.Port(), Daddr: lo4, Dport: sport},
		{State: Established, Substate: Established, Saddr: lo4, Sport: sport, Daddr: lo4, Dport: viaConnect.Port(), Bound: true},
		{State: Established, Substate: Established, Saddr: lo4, Sport: viaBind.Port(), Daddr: lo4, Dport: sport, Bound: true},
		{State: Established, Substate: Established, Saddr: lo4, Sport: sport, Daddr: lo4, Dport: viaBind.Port(), Bound: true},
	}
	sortSockets(want)
	got := inv.All()
	sortSockets(got)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sockets\n%+v\nwant\n%+v", got, want)
	}
}

// A client closes while the server keeps its end open: its FIN ACKed, the
// kernel replaces the orphaned FIN_WAIT2 socket with a timewait
// socket in substate FIN_WAIT2 whose timer is tcp_fin_timeout (over 4 s:
// the TW counter's, not TWKilled's). The server's close then turns it into
// TIME_WAIT with the timer re-armed to 60 s. It lives throughout, so TW
// reads 1 throughout on a kernel that counts timewait sockets when made
// (the re-arm is not counted again), 0 throughout on one that counts them
// when they end (twCounting).
func TestScanOrphanedFinWait2(t *testing.T) {
	s := openScanner(t)
	ns := newNetns(t)
	ns.Sysctl(t, "ipv4/tcp_fin_timeout", "30")
	p := park(t, ns)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerHold)
	released := false
	t.Cleanup(func() {
		if !released {
			srv.Release()
		}
	})

	// Half-close first and close only once the FIN is ACKed: close()
	// then finds FIN_WAIT2 and makes the timewait socket at once. A plain
	// close() races with the ACK: one that lands while close() still owns
	// the socket arms a tcp_fin_timeout timer on the full FIN_WAIT2 socket
	// instead, and the timewait socket comes 30 s later (seen on 6.1).
	fd, client := dial(t, ns, srv.Addr, false)
	if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	var inv *Namespace
	testnet.WaitFor(10*time.Second, func() bool {
		inv = scan(t, s, p.ref)
		return len(withState(inv, FinWait2)) == 1
	})
	if got := withState(inv, FinWait2); len(got) != 1 {
		t.Fatalf("after shutdown(SHUT_WR), no FIN_WAIT2 socket: %+v", inv.All())
	}
	unix.Close(fd)
	testnet.WaitFor(10*time.Second, func() bool {
		inv = scan(t, s, p.ref)
		return len(timewaits(inv, FinWait2)) == 1
	})
	sport := srv.Addr.Port()
	tws := timewaits(inv, FinWait2)
	if len(tws) != 1 {
		t.Fatalf("no FIN_WAIT2 timewait socket: %+v", inv.All())
	}
	orphan := Socket{State: TimeWait, Substate: FinWait2, Saddr: lo4, Sport: client.Port(), Daddr: lo4, Dport: sport, RemainingKnown: true, Timestamps: true}
	t.Logf("orphan: %v left of the FIN_WAIT2 timer (tcp_fin_timeout 30 s)", tws[0].Remaining)
	if got := withoutTimer(t, tws[0], 30*time.Second); got != orphan {
		t.Errorf("orphan\n%+v\nwant\n%+v", got, orphan)
	}
	peer := Socket{State: CloseWait, Substate: CloseWait, Saddr: lo4, Sport: sport, Daddr: lo4, Dport: client.Port(), Bound: true}
	if got := withState(inv, CloseWait); len(got) != 1 || got[0] != peer {
		t.Errorf("server side %+v, want %+v", got, peer)
	}
	if inv.Len() != 3 {
		t.Errorf("sockets %+v, want the listener, the orphan and its peer", inv.All())
	}
	counting := twCountingOf(t, inv.Counters, Counters{TW: 1})
	t.Logf("timewait sockets %s", counting)

	released = true
	srv.Release()
	testnet.WaitFor(10*time.Second, func() bool {
		inv = scan(t, s, p.ref)
		return len(timewaits(inv, TimeWait)) == 1 && inv.Len() == 2
	})
	tws = timewaits(inv, TimeWait)
	if len(tws) != 1 || inv.Len() != 2 {
		t.Fatalf("after the server's close: %+v, want the listener and one TIME_WAIT", inv.All())
	}
	t.Logf("after the peer's FIN: %v left of the TIME_WAIT timer", tws[0].Remaining)
	// Re-armed: more than the 30 s the FIN_WAIT2 substate had.
	if tws[0].Remaining <= 30*time.Second {
		t.Errorf("TIME_WAIT timer %v, want re-armed to 60 s", tws[0].Remaining)
	}
	orphan.Substate = TimeWait
	if got := withoutTimer(t, tws[0], 60*time.Second); got != orphan {
		t.Errorf("timewait\n%+v\nwant\n%+v", got, orphan)
	}
	if want := counting.live(Counters{TW: 1}); inv.Counters != want {
		t.Errorf("counters %+v, want %+v (%s)", inv.Counters, want, counting)
	}
}

// IPv6 sockets are reported as IPv6; an AF_INET6 socket talking to an IPv4
// server through a v4-mapped address is reported as IPv4.
func TestScanIPv6AndMapped(t *testing.T) {
	s := openScanner(t)
	ns := newNetns(t)
	p := park(t, ns)
	srv6 := testnet.StartServer(t, ns, "::1", testnet.ServerReadEOF)
	srv4 := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	dual := netip.AddrPortFrom(netip.IPv6Unspecified(), 8080)
	listenAt(t, ns, dual)
	res6 := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv6.Dest(false), N: 2})
	resMapped := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv4.Dest(true), N: 2})

	var inv *Namespace
	testnet.WaitFor(10*time.Second, func() bool {
		inv = scan(t, s, p.ref)
		return len(timewaits(inv, TimeWait)) == 4 && inv.Len() == 7
	})
	want := []Socket{
		{State: Listen, Substate: Listen, IPv6: true, Saddr: lo6, Sport: srv6.Addr.Port(), Daddr: netip.IPv6Unspecified(), Bound: true},
		{State: Listen, Substate: Listen, Saddr: lo4, Sport: srv4.Addr.Port(), Daddr: netip.IPv4Unspecified(), Bound: true},
		{State: Listen, Substate: Listen, IPv6: true, Saddr: netip.IPv6Unspecified(), Sport: 8080, Daddr: netip.IPv6Unspecified(), Bound: true},
	}
	for _, port := range res6.Ports {
		want = append(want, Socket{State: TimeWait, Substate: TimeWait, IPv6: true, Saddr: lo6, Sport: uint16(port), Daddr: lo6, Dport: srv6.Addr.Port(), RemainingKnown: true, Timestamps: true})
	}
	for _, port := range resMapped.Ports {
		want = append(want, Socket{State: TimeWait, Substate: TimeWait, Saddr: lo4, Sport: uint16(port), Daddr: lo4, Dport: srv4.Addr.Port(), RemainingKnown: true, Timestamps: true})
	}
	sortSockets(want)
	var got []Socket
	for _, sock := range inv.All() {
		if sock.State == TimeWait {
			sock = withoutTimer(t, sock, 60*time.Second)
		}
		got = append(got, sock)
	}
	sortSockets(got)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sockets\n%+v\nwant\n%+v", got, want)
	}
}

// Without TCP timestamps a timewait socket has none (tcp_tw_reuse could
// not reuse it).
func TestScanWithoutTimestamps(t *testing.T) {
	s := openScanner(t)
	ns := newNetns(t)
	ns.Sysctl(t, "ipv4/tcp_timestamps", "0")
	p := park(t, ns)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	res := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: 1})
	var inv *Namespace
	testnet.WaitFor(10*time.Second, func() bool {
		inv = scan(t, s, p.ref)
		return len(timewaits(inv, TimeWait)) == 1
	})
	tws := timewaits(inv, TimeWait)
	if len(tws) != 1 {
		t.Fatalf("sockets %+v, want one TIME_WAIT", inv.All())
	}
	want := Socket{State: TimeWait, Substate: TimeWait, Saddr: lo4, Sport: uint16(res.Ports[0]), Daddr: lo4, Dport: srv.Addr.Port(), RemainingKnown: true}
	if got := withoutTimer(t, tws[0], 60*time.Second); got != want {
		t.Errorf("timewait\n%+v\nwant\n%+v", got, want)
	}
	if inv.Sysctls.Timestamps != 0 {
		t.Errorf("tcp_timestamps read as %d, want 0", inv.Sysctls.Timestamps)
	}
}

// Namespaces finds a namespace through a thread of ours, then also through
// its /run/netns bind mount (named, and preferred as the path), then
// through the mount alone; Scan reaches it by each.
func TestNamespacesThreadsAndBindMounts(t *testing.T) {
	s := openScanner(t)
	ns := newNetns(t)
	ns.Sysctl(t, "ipv4/ip_local_port_range", "41000 41999")
	p := park(t, ns)
	comm := ownComm(t)

	find := func() NamespaceRef {
		t.Helper()
		refs, err := Namespaces()
		if err != nil {
			t.Fatal(err)
		}
		for i := 2; i < len(refs); i++ { // ours first, then by inode
			if refs[i].Inode <= refs[i-1].Inode {
				t.Fatalf("namespaces out of order: %+v", refs)
			}
		}
		for _, ref := range refs {
			if ref.Inode == ns.Inode {
				return ref
			}
		}
		t.Fatalf("namespace %d not among %+v", ns.Inode, refs)
		return NamespaceRef{}
	}
	checkScan := func(ref NamespaceRef) {
		t.Helper()
		inv := scan(t, s, ref)
		if inv.Sysctls.PortRange != (PortSpan{41000, 41999}) || !reflect.DeepEqual(inv.NamespaceRef, ref) {
			t.Errorf("scan through %s: %+v with port range %+v", ref.Path, inv.NamespaceRef, inv.Sysctls.PortRange)
		}
	}

	want := NamespaceRef{Inode: ns.Inode, Path: p.ref.Path, PID: os.Getpid(), Comm: comm}
	if got := find(); !sameRef(got, want) {
		t.Errorf("through a thread: %+v, want %+v", got, want)
	}
	checkScan(want)

	mount := bindMount(t, p.ref.Path)
	want.Path, want.Name = mount, "twtrace-inv-test"
	if got := find(); !sameRef(got, want) {
		t.Errorf("with a bind mount: %+v, want %+v", got, want)
	}
	checkScan(want)

	p.leave()
	want.PID, want.Comm = 0, ""
	if got := find(); !sameRef(got, want) {
		t.Errorf("through the bind mount alone: %+v, want %+v", got, want)
	}
	checkScan(want)
}

// bindMount keeps the namespace at path alive at /run/netns/NAME, as
// "ip netns add" does, until the test ends.
func bindMount(t *testing.T, path string) string {
	t.Helper()
	const dir, name = "/run/netns", "twtrace-inv-test"
	if _, err := os.Stat(dir); err != nil {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(dir) }) // only if empty
	}
	target := dir + "/" + name
	f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { os.Remove(target) })
	if err := unix.Mount(path, target, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mounting %s on %s: %v", path, target, err)
	}
	t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
	return target
}

// A namespace whose path no longer opens, or opens another namespace (a
// reused PID), is reported gone; ScanAll's loop goes on with the others.
func TestScanGoneNamespace(t *testing.T) {
	s := openScanner(t)
	ns := newNetns(t)
	p := park(t, ns)
	exited := p.ref
	p.leave()
	if _, err := s.Scan(exited); !errors.Is(err, ErrNamespaceGone) {
		t.Errorf("scanning through an exited thread: %v, want ErrNamespaceGone", err)
	}
	reused := NamespaceRef{Inode: ns.Inode, Path: "/proc/self/ns/net"}
	if _, err := s.Scan(reused); !errors.Is(err, ErrNamespaceGone) {
		t.Errorf("scanning a path that names another namespace: %v, want ErrNamespaceGone", err)
	}

	refs, err := Namespaces()
	if err != nil {
		t.Fatal(err)
	}
	got, errs := s.scanEach([]NamespaceRef{exited, refs[0], reused})
	if len(got) != 1 || got[0].Inode != refs[0].Inode || len(errs) != 2 ||
		!errors.Is(errs[0], ErrNamespaceGone) || !errors.Is(errs[1], ErrNamespaceGone) {
		t.Errorf("scanEach: %d namespaces, errors %v; want ours and two ErrNamespaceGone", len(got), errs)
	}
}

func TestScanAll(t *testing.T) {
	s := openScanner(t)
	ns := newNetns(t)
	park(t, ns)
	all, errs := s.ScanAll()
	for _, err := range errs {
		if !errors.Is(err, ErrNamespaceGone) {
			t.Errorf("ScanAll: %v", err)
		}
	}
	if !slices.ContainsFunc(all, func(n *Namespace) bool { return n.Inode == ns.Inode }) {
		refs, _ := Namespaces()
		t.Errorf("ScanAll did not scan namespace %d; errs %v; refs now %+v", ns.Inode, errs, refs)
	}
}

// A ref whose Path is gone (its thread exited; a new namespace may even
// have taken the old one's inode number) is scanned through another task
// in the namespace; with none left it is ErrNamespaceGone.
func TestScanFallsBackToAnotherTask(t *testing.T) {
	s := openScanner(t)
	ns := newNetns(t)
	ns.Sysctl(t, "ipv4/ip_local_port_range", "41000 41999")
	p := park(t, ns)
	gone := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), 1<<30)
	ref := NamespaceRef{Inode: ns.Inode, Path: gone, PID: os.Getpid(), alts: []string{"/proc/self/ns/net", p.ref.Path}}
	inv, err := s.Scan(ref)
	if err != nil {
		t.Fatalf("scan with a gone path and a live alternative: %v", err)
	}
	if inv.Inode != ns.Inode || inv.Sysctls.PortRange != (PortSpan{41000, 41999}) {
		t.Errorf("scanned namespace %d with range %+v, want %d with 41000-41999", inv.Inode, inv.Sysctls.PortRange, ns.Inode)
	}
	ref.alts = []string{"/proc/self/ns/net"} // another namespace: not a match
	if _, err := s.Scan(ref); !errors.Is(err, ErrNamespaceGone) {
		t.Errorf("scan with no live path: %v, want ErrNamespaceGone", err)
	}
}

// Close unloads the program: nothing of the scanner stays in the kernel.
func TestCloseUnloads(t *testing.T) {
	requireBPF(t)
	names := map[string]bool{ProgramName: true}
	before := testnet.CountPrograms(names)
	s, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	if n := testnet.CountPrograms(names); n != before+1 {
		t.Errorf("%d %s programs loaded while open, want %d", n, ProgramName, before+1)
	}
	// The program uses no map: the program and its link are all there is.
	if info, err := s.prog.Info(); err != nil {
		t.Error(err)
	} else if ids, _ := info.MapIDs(); len(ids) != 0 {
		t.Errorf("the program uses maps %v", ids)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := testnet.CountPrograms(names); n != before {
		t.Errorf("%d %s programs loaded after Close, want %d", n, ProgramName, before)
	}
	if _, err := s.Scan(NamespaceRef{}); err == nil {
		t.Error("Scan after Close succeeded")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// The kernel counts a timewait socket in TW, or in TWKilled when its first
// timer is 4 s or less: an orphaned FIN_WAIT2 under a short
// tcp_fin_timeout. While it lives TWKilled reads 1 on a kernel that counts
// timewait sockets when made, 0 on one that counts them when they end
// (twCounting); once its 3 s timer has ended it (the server never sends
// its FIN, so nothing re-arms the timer), TWKilled reads 1 on both.
func TestCountersShortFinTimeout(t *testing.T) {
	s := openScanner(t)
	ns := newNetns(t)
	ns.Sysctl(t, "ipv4/tcp_fin_timeout", "3")
	p := park(t, ns)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerHold)
	t.Cleanup(srv.Release)

	fd, client := dial(t, ns, srv.Addr, false)
	unix.Close(fd)
	var inv *Namespace
	testnet.WaitFor(10*time.Second, func() bool {
		inv = scan(t, s, p.ref)
		return len(timewaits(inv, FinWait2)) == 1
	})
	tws := timewaits(inv, FinWait2)
	if len(tws) != 1 {
		t.Fatalf("no FIN_WAIT2 timewait socket: %+v", inv.All())
	}
	want := Socket{State: TimeWait, Substate: FinWait2, Saddr: lo4, Sport: client.Port(), Daddr: lo4, Dport: srv.Addr.Port(), RemainingKnown: true, Timestamps: true}
	if got := withoutTimer(t, tws[0], 3*time.Second); got != want {
		t.Errorf("orphan\n%+v\nwant\n%+v", got, want)
	}
	counting := twCountingOf(t, inv.Counters, Counters{TWKilled: 1})
	t.Logf("timewait sockets %s", counting)

	// Its timer ends it. A kernel that counts when it ends does so in the
	// timer's handler before it takes the socket out of the table, so once
	// the scan no longer finds it the count is final.
	testnet.WaitFor(10*time.Second, func() bool {
		inv = scan(t, s, p.ref)
		return len(withState(inv, TimeWait)) == 0
	})
	if tws := withState(inv, TimeWait); len(tws) != 0 {
		t.Fatalf("the FIN_WAIT2 timewait socket outlived its 3 s timer: %+v", tws)
	}
	if want := (Counters{TWKilled: 1}); inv.Counters != want {
		t.Errorf("counters %+v after the timer ended the socket, want %+v (%s)", inv.Counters, want, counting)
	}
}

// sameRef compares what a NamespaceRef tells; want's path may be one of
// got's fallbacks: a thread that ns.Do left in the namespace can still be
// listed, with a lower tid, while it exits.
func sameRef(got, want NamespaceRef) bool {
	return got.Inode == want.Inode && (got.Path == want.Path || slices.Contains(got.alts, want.Path)) &&
		got.PID == want.PID && got.Comm == want.Comm && got.Name == want.Name
}
