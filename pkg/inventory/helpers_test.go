package inventory

import (
	"cmp"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/internal/testnet"
)

func TestMain(m *testing.M) {
	testnet.RunClientIfAsked()
	os.Exit(m.Run())
}

func requireBPF(t testing.TB) { testnet.RequireBPF(t, preflight) }

func openScanner(t testing.TB) *Scanner {
	t.Helper()
	requireBPF(t)
	s, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newNetns is a private namespace in which an RST cannot end a TIME_WAIT
// early (tcp_rfc1337=1). Under load a server's FIN can be retransmitted
// (tail loss probe) after the client's ACK already closed the server's
// socket; the client's TIME_WAIT ACKs it again, the listener answers with
// an RST, and by default that RST kills the TIME_WAIT ("TIME-WAIT
// assassination", RFC 1337): TW counts it, the table no longer holds it.
// Seen here at 1 to 5 of 5000 loopback connections in a row.
func newNetns(t testing.TB) *testnet.Netns {
	t.Helper()
	ns := testnet.New(t)
	ns.Sysctl(t, "ipv4/tcp_rfc1337", "1")
	return ns
}

func scan(t testing.TB, s *Scanner, ref NamespaceRef) *Namespace {
	t.Helper()
	ns, err := s.Scan(ref)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// parkedThread is an OS thread of the test process inside a namespace. The
// namespace of testnet.New is otherwise held only by an open file, which
// Namespaces does not look for; the thread gives it a /proc path.
type parkedThread struct {
	ref     NamespaceRef
	tid     int
	release chan struct{}
	once    sync.Once
}

func park(t testing.TB, ns *testnet.Netns) *parkedThread {
	t.Helper()
	p := &parkedThread{release: make(chan struct{})}
	tids := make(chan int, 1)
	go ns.Do(t, func() error {
		tids <- unix.Gettid()
		<-p.release
		return nil
	})
	p.tid = <-tids
	p.ref = NamespaceRef{
		Inode: ns.Inode,
		Path:  fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), p.tid),
		PID:   os.Getpid(),
	}
	t.Cleanup(p.leave)
	return p
}

// leave ends the thread (its goroutine returns still locked to it) and
// waits until the kernel has reaped it.
func (p *parkedThread) leave() {
	p.once.Do(func() { close(p.release) })
	testnet.WaitFor(10*time.Second, func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", p.tid))
		return err != nil
	})
}

func sockaddrOf(ap netip.AddrPort) (unix.Sockaddr, int) {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}, unix.AF_INET
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}, unix.AF_INET6
}

func addrPortOf(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// listenAt makes a listening socket inside ns, closed when the test ends.
func listenAt(t testing.TB, ns *testnet.Netns, at netip.AddrPort) {
	t.Helper()
	fd := -1
	ns.Do(t, func() error {
		sa, family := sockaddrOf(at)
		var err error
		if fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		if err := unix.Bind(fd, sa); err != nil {
			return fmt.Errorf("bind %s: %w", at, err)
		}
		return unix.Listen(fd, 16)
	})
	t.Cleanup(func() { unix.Close(fd) })
}

// dial connects to dst from inside ns; bindFirst bind()s the socket to port
// 0 of dst's address first. The caller closes the socket.
func dial(t testing.TB, ns *testnet.Netns, dst netip.AddrPort, bindFirst bool) (int, netip.AddrPort) {
	t.Helper()
	fd := -1
	var local netip.AddrPort
	ns.Do(t, func() error {
		sa, family := sockaddrOf(dst)
		var err error
		if fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		if bindFirst {
			src, _ := sockaddrOf(netip.AddrPortFrom(dst.Addr(), 0))
			if err := unix.Bind(fd, src); err != nil {
				return fmt.Errorf("bind: %w", err)
			}
		}
		if err := unix.Connect(fd, sa); err != nil {
			return fmt.Errorf("connect %s: %w", dst, err)
		}
		lsa, err := unix.Getsockname(fd)
		local = addrPortOf(lsa)
		return err
	})
	return fd, local
}

func timewaits(ns *Namespace, substate State) []Socket {
	var out []Socket
	for _, s := range ns.All() {
		if s.State == TimeWait && s.Substate == substate {
			out = append(out, s)
		}
	}
	return out
}

// withState returns the sockets in state st, sorted by local then remote port.
func withState(ns *Namespace, st State) []Socket {
	var out []Socket
	for _, s := range ns.All() {
		if s.State == st {
			out = append(out, s)
		}
	}
	sortSockets(out)
	return out
}

func sortSockets(ss []Socket) {
	slices.SortFunc(ss, func(a, b Socket) int {
		return cmp.Or(cmp.Compare(a.Sport, b.Sport), cmp.Compare(a.Dport, b.Dport), a.Saddr.Compare(b.Saddr))
	})
}

// withoutTimer zeroes a timewait socket's Remaining after checking it is
// known and within (0, limit]: the rest can then be compared exactly.
func withoutTimer(t testing.TB, s Socket, limit time.Duration) Socket {
	t.Helper()
	if !s.RemainingKnown || s.Remaining <= 0 || s.Remaining > limit {
		t.Errorf("%s:%d timer: remaining %v (known %v), want within (0, %v]", s.Saddr, s.Sport, s.Remaining, s.RemainingKnown, limit)
	}
	s.Remaining = 0
	return s
}

func ownComm(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:len(b)-1])
}

var (
	lo4 = netip.MustParseAddr("127.0.0.1")
	lo6 = netip.MustParseAddr("::1")
)

// twCounting is when the running kernel counts a timewait socket in its
// namespace's TcpExt TW (or TWKilled, when the socket's first timer is 4 s
// or less). Kernels do it at one of two moments, and a test tells which
// from what it reads, never from the kernel's version:
//
//   - countedWhenMade: as the socket's timer is first armed, when it is
//     made (6.1, 6.12 and the host's 6.18 here). A re-armed timer is not
//     counted again.
//   - countedWhenEnded: in the timer's handler, when the timer fires (5.10
//     here: TW is 0 right after a TIME_WAIT, 1 after 60 s). The socket is
//     counted only when it ends, by the timer it has then, and never if it
//     ends early (an RST, tcp_tw_reuse, the namespace's end). Counting
//     moved to the arming in 2022 ("tcp/dccp: no longer use twsk_net(tw)
//     from tw_timer_handler()").
//
// While every timewait socket a test made is still in the table, its
// counters are therefore exactly what it made, or exactly zero.
type twCounting int

const (
	countedWhenMade twCounting = iota + 1
	countedWhenEnded
)

func (c twCounting) String() string {
	if c == countedWhenMade {
		return "counted when made"
	}
	return "counted when they end"
}

// twCountingOf tells how the kernel counts from got, counters read while
// the timewait sockets counted in made are all still in the table: got is
// made exactly, or zero exactly; anything else fails the test.
func twCountingOf(t testing.TB, got, made Counters) twCounting {
	t.Helper()
	switch got {
	case made:
		return countedWhenMade
	case Counters{}:
		return countedWhenEnded
	}
	t.Fatalf("counters %+v while the timewait sockets are in the table, want exactly %+v (counted when made) or none (counted when they end)", got, made)
	return 0
}

// live is what the counters read, under c, while the timewait sockets
// counted in made are all still in the table.
func (c twCounting) live(made Counters) Counters {
	if c == countedWhenMade {
		return made
	}
	return Counters{}
}
