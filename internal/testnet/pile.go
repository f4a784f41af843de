package testnet

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/pkg/load"
)

// PileSpec says how large a pile of timewait sockets BuildPile makes.
type PileSpec struct {
	// N is how many client-side TIME_WAIT sockets to make, spread evenly
	// over the destinations (the first N mod D get one more).
	N int
	// Destinations are servers on 127.0.0.1, 127.0.0.2, ... 127.0.0.D,
	// all on Port: loopback routes all of 127/8, and every address is a
	// destination of its own, with its own 64,512 ports.
	Destinations int
	// Port is the servers' port on every address. 0 means 80, below the
	// ephemeral range: no port is then held by listen() in the range.
	Port uint16
	// Workers is how many client threads connect at once; 0 means four per
	// CPU: a thread waits in connect() while the server side runs (on 2
	// cores, 8 threads made 21,000-30,000 connections a second, 4 threads
	// ~20,000).
	Workers int
	// Deadline stops making connections this long after the first one
	// (0: never): a pile too large for the host then holds what it could
	// make, and PileDestination.Made says how many that was.
	Deadline time.Duration
}

// PileDestination is one server of a pile and what was made toward it.
type PileDestination struct {
	Addr netip.AddrPort
	// Made is the connections that succeeded: each left one client-side
	// TIME_WAIT socket (unless it has expired since).
	Made int64
	// Failed is the connect() calls that failed (the errno is not kept).
	Failed int64
	// FinWait2 is the sockets of Made left in substate FIN_WAIT2 for good:
	// their server closed, and its FIN was acknowledged, yet it never
	// moved them to TIME_WAIT. On loopback about one connection in
	// 100,000 to a million ends so; such a socket lasts tcp_fin_timeout.
	// Made − FinWait2 are in TIME_WAIT.
	FinWait2 int64
}

// Pile is a namespace's pile of client-side TIME_WAIT sockets, and the
// servers that closed second; Close stops the servers.
type Pile struct {
	Destinations []PileDestination
	// Took is from the first connect() to the moment every client socket
	// of the pile was in TIME_WAIT.
	Took    time.Duration
	servers []*pileServer
}

// Made is the connections made toward every destination.
func (p *Pile) Made() int64 {
	var n int64
	for _, d := range p.Destinations {
		n += d.Made
	}
	return n
}

// Close stops the servers (their listening sockets close). The timewait
// sockets stay until their timers end.
func (p *Pile) Close() {
	for _, s := range p.servers {
		s.stop()
	}
}

// BuildPile fills the network namespace at nsPath (/run/netns/NAME,
// /proc/PID/ns/net, or a Netns's Path) with spec.N client-side TIME_WAIT
// sockets: each client connects over loopback and closes first, its
// server reads to EOF and closes second (LAST_ACK, then gone), so only the
// client side is left, in TIME_WAIT. It sets the namespace up for that:
// lo up, ip_local_port_range 1024-65535, tcp_max_tw_buckets 2,000,000,
// tcp_tw_reuse 0 and tcp_rfc1337 1 (an RST, such as one crossing a
// retransmitted FIN, cannot end a TIME_WAIT early).
//
// It returns when the connections are made (or spec.Deadline passed) and
// every client socket is in TIME_WAIT, with exact counts per destination.
// The servers keep listening until Pile.Close.
//
// TIME_WAIT lasts 60 s: measure soon after building. At the 20,000 to
// 30,000 connections a second two cores make, 250,000 take ~10 s, and
// the first ones end 60 s after they were made: a host holds at most 60 s
// times its connection rate (1M needs more than 16,700 a second, kept up
// for the whole minute).
func BuildPile(nsPath string, spec PileSpec) (*Pile, error) {
	if spec.N < 0 || spec.Destinations < 1 || spec.Destinations > 254 {
		return nil, fmt.Errorf("pile of %d sockets over %d destinations: want N ≥ 0 and 1 to 254 destinations", spec.N, spec.Destinations)
	}
	if spec.Port == 0 {
		spec.Port = 80
	}
	if spec.Workers <= 0 {
		spec.Workers = 4 * runtime.NumCPU()
	}
	if err := InNetns(nsPath, preparePileNetns); err != nil {
		return nil, err
	}
	p := &Pile{Destinations: make([]PileDestination, spec.Destinations)}
	for i := range p.Destinations {
		addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(i + 1)}), spec.Port)
		p.Destinations[i].Addr = addr
		s, err := startPileServer(nsPath, addr)
		if err != nil {
			p.Close()
			return nil, err
		}
		p.servers = append(p.servers, s)
	}
	t0 := time.Now()
	if err := p.connectAll(nsPath, spec, t0); err != nil {
		p.Close()
		return nil, err
	}
	if err := p.waitTimewait(nsPath); err != nil {
		p.Close()
		return nil, err
	}
	p.Took = time.Since(t0)
	return p, nil
}

func preparePileNetns() error {
	if err := load.LoopbackUp(); err != nil {
		return err
	}
	for name, value := range map[string]string{
		"ipv4/ip_local_port_range": "1024 65535",
		"ipv4/tcp_max_tw_buckets":  "2000000",
		"ipv4/tcp_tw_reuse":        "0",
		"ipv4/tcp_rfc1337":         "1",
	} {
		if err := os.WriteFile("/proc/sys/net/"+name, []byte(value), 0o644); err != nil {
			return fmt.Errorf("setting %s: %w", name, err)
		}
	}
	return nil
}

// InNetns runs fn on an OS thread inside the namespace at nsPath; sockets
// and child processes fn makes belong to it. The thread is never handed
// back to the scheduler: it ends with fn.
func InNetns(nsPath string, fn func() error) error {
	f, err := os.Open(nsPath)
	if err != nil {
		return fmt.Errorf("opening network namespace: %w", err)
	}
	defer f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering network namespace %s: %w", nsPath, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// connectAll runs the client threads. Each destination has a count of
// connections left to make; a thread takes one (round robin over the
// destinations, so they fill evenly and at the same pace, and a deadline
// leaves them even too) and gives it back when connect() fails.
func (p *Pile) connectAll(nsPath string, spec PileSpec, t0 time.Time) error {
	d := len(p.Destinations)
	left := make([]atomic.Int64, d)
	for i := range left {
		q := spec.N / d
		if i < spec.N%d {
			q++
		}
		left[i].Store(int64(q))
	}
	c := pileClients{dests: p.Destinations, left: left, made: make([]atomic.Int64, d), failed: make([]atomic.Int64, d)}
	if spec.Deadline > 0 {
		c.deadline = t0.Add(spec.Deadline)
	}
	var wg sync.WaitGroup
	errs := make([]error, spec.Workers)
	for w := range spec.Workers {
		wg.Go(func() { errs[w] = InNetns(nsPath, c.run) })
	}
	wg.Wait()
	for i := range p.Destinations {
		p.Destinations[i].Made = c.made[i].Load()
		p.Destinations[i].Failed = c.failed[i].Load()
	}
	return errors.Join(errs...)
}

// pileClients is the state the client threads share.
type pileClients struct {
	dests    []PileDestination
	left     []atomic.Int64 // connections still to make, per destination
	made     []atomic.Int64
	failed   []atomic.Int64
	next     atomic.Int64 // round robin over the destinations
	deadline time.Time
}

// run connects and closes until no destination has a connection left to
// make. A destination whose connect() failed more often than it had
// connections to make stops the pile: that namespace will not make it.
func (c *pileClients) run() error {
	addrs := make([]unix.SockaddrInet4, len(c.dests))
	for i, dst := range c.dests {
		addrs[i] = unix.SockaddrInet4{Port: int(dst.Addr.Port()), Addr: dst.Addr.Addr().As4()}
	}
	for n := 0; ; n++ {
		if !c.deadline.IsZero() && n%256 == 0 && time.Now().After(c.deadline) {
			return nil
		}
		i, ok := c.take()
		if !ok {
			return nil
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			c.left[i].Add(1)
			return fmt.Errorf("pile: socket: %w", err)
		}
		err = connectFully(fd, &addrs[i])
		unix.Close(fd)
		if err == nil {
			c.made[i].Add(1)
			continue
		}
		c.left[i].Add(1)
		if f := c.failed[i].Add(1); f > c.made[i].Load()+c.left[i].Load() {
			return fmt.Errorf("pile: %d connects to %s failed (last: %w)", f, c.dests[i].Addr, err)
		}
	}
}

// connectFully is a blocking connect() that a signal cannot cut short:
// interrupted (EINTR), the kernel carries on with the handshake, so it
// waits for its outcome rather than closing a connection that may yet
// be made (it would leave a timewait socket no count holds).
func connectFully(fd int, sa unix.Sockaddr) error {
	err := unix.Connect(fd, sa)
	if err != unix.EINTR {
		return err
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for {
		_, err := unix.Poll(pfd, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soErr != 0 {
			return unix.Errno(soErr)
		}
		return nil
	}
}

// take claims one connection to make: from the next destination in turn,
// or the first after it that has one left.
func (c *pileClients) take() (int, bool) {
	d := len(c.dests)
	start := int(c.next.Add(1) % int64(d))
	for j := range d {
		i := (start + j) % d
		for {
			n := c.left[i].Load()
			if n <= 0 {
				break
			}
			if c.left[i].CompareAndSwap(n, n-1) {
				return i, true
			}
		}
	}
	return 0, false
}

// waitTimewait waits until the servers have closed every connection and
// the namespace holds no client socket short of TIME_WAIT: until a
// server's FIN arrives, a client's closed socket is a timewait socket in
// substate FIN_WAIT2.
func (p *Pile) waitTimewait(nsPath string) error {
	var made int64
	for _, d := range p.Destinations {
		made += d.Made
	}
	deadline := time.Now().Add(30 * time.Second)
	var stuck time.Time // since when only FIN_WAIT2 sockets are left
	for {
		var closed int64
		for _, s := range p.servers {
			closed += s.closed.Load()
		}
		var states map[int]int
		err := InNetns(nsPath, func() error {
			var err error
			states, err = TCPStates()
			return err
		})
		if err != nil {
			return err
		}
		// A client socket in FIN_WAIT2 waits for its server's FIN, unless
		// every server closed and none waits for an acknowledgement
		// (LAST_ACK): then no FIN is on its way, and it stays.
		settling := states[tcpSynSent] + states[tcpEstablished] + states[tcpFinWait1] + states[tcpLastAck]
		if closed >= made && settling == 0 {
			if states[tcpFinWait2] == 0 {
				return nil
			}
			if stuck.IsZero() {
				stuck = time.Now()
			} else if time.Since(stuck) > time.Second {
				return p.countFinWait2(nsPath)
			}
		} else {
			stuck = time.Time{}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pile: after 30 s the servers closed %d of %d connections, and %d sockets are short of TIME_WAIT (by state: %v)", closed, made, settling, states)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countFinWait2 sets each destination's FinWait2.
func (p *Pile) countFinWait2(nsPath string) error {
	peers := map[netip.AddrPort]int64{}
	err := InNetns(nsPath, func() error {
		return readProcTCP(func(state int, remote netip.AddrPort) {
			if state == tcpFinWait2 {
				peers[remote]++
			}
		})
	})
	for i := range p.Destinations {
		p.Destinations[i].FinWait2 = peers[p.Destinations[i].Addr]
	}
	return err
}

// FinWait2 is the pile's sockets left in substate FIN_WAIT2.
func (p *Pile) FinWait2() int64 {
	var n int64
	for _, d := range p.Destinations {
		n += d.FinWait2
	}
	return n
}

// TCP states as /proc/net/tcp numbers them (include/net/tcp_states.h).
const (
	tcpEstablished = 1
	tcpSynSent     = 2
	tcpFinWait1    = 4
	tcpFinWait2    = 5 // also a timewait socket in substate FIN_WAIT2
	tcpTimeWait    = 6
	tcpLastAck     = 9
)

// TCPStates counts the IPv4 TCP sockets of the calling thread's network
// namespace by state, as /proc/net/tcp lists them (a timewait socket under
// its substate).
func TCPStates() (map[int]int, error) {
	states := map[int]int{}
	err := readProcTCP(func(state int, _ netip.AddrPort) { states[state]++ })
	return states, err
}

// TimewaitPeers counts the IPv4 sockets in TIME_WAIT of the calling
// thread's network namespace by remote address, from /proc/net/tcp.
func TimewaitPeers() (map[netip.AddrPort]int, error) {
	peers := map[netip.AddrPort]int{}
	err := readProcTCP(func(state int, remote netip.AddrPort) {
		if state == tcpTimeWait {
			peers[remote]++
		}
	})
	return peers, err
}

func readProcTCP(fn func(state int, remote netip.AddrPort)) error {
	b, err := os.ReadFile("/proc/thread-self/net/tcp")
	if err != nil {
		return err
	}
	return parseProcTCP(b, fn)
}

// parseProcTCP calls fn with the state and remote address of every socket
// of a /proc/net/tcp listing: "sl local_address rem_address st ...", the
// address as the kernel's 32-bit word in hex (its bytes in host order),
// the port and state in hex.
func parseProcTCP(b []byte, fn func(state int, remote netip.AddrPort)) error {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for first := true; sc.Scan(); first = false {
		if first { // the header
			continue
		}
		f := bytes.Fields(sc.Bytes())
		if len(f) < 4 {
			return fmt.Errorf("/proc/net/tcp: short line %q", sc.Bytes())
		}
		addr, port, ok := bytes.Cut(f[2], []byte(":"))
		a, aok := parseHex(addr, 8)
		p, pok := parseHex(port, 4)
		st, sok := parseHex(f[3], 2)
		if !ok || !aok || !pok || !sok {
			return fmt.Errorf("/proc/net/tcp: unexpected line %q", sc.Bytes())
		}
		var ip [4]byte
		binary.NativeEndian.PutUint32(ip[:], uint32(a))
		fn(int(st), netip.AddrPortFrom(netip.AddrFrom4(ip), uint16(p)))
	}
	return sc.Err()
}

// parseHex reads exactly digits upper-case hex digits.
func parseHex(b []byte, digits int) (uint64, bool) {
	if len(b) != digits {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		d := bytes.IndexByte([]byte("0123456789ABCDEF"), c)
		if d < 0 {
			return 0, false
		}
		v = v<<4 | uint64(d)
	}
	return v, true
}

// pileServer accepts on one address, reads each connection to EOF and
// closes it: its client always closes first.
type pileServer struct {
	fd     int
	closed atomic.Int64
	done   chan struct{}
}

func startPileServer(nsPath string, addr netip.AddrPort) (*pileServer, error) {
	s := &pileServer{fd: -1, done: make(chan struct{})}
	err := InNetns(nsPath, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("pile server: binding %s: %w", addr, err)
		}
		if err := unix.Listen(fd, 4096); err != nil {
			unix.Close(fd)
			return fmt.Errorf("pile server: listening on %s: %w", addr, err)
		}
		s.fd = fd
		return nil
	})
	if err != nil {
		return nil, err
	}
	go s.serve()
	return s, nil
}

// serve is a blocking accept, read, close loop on a thread of its own:
// cheaper than the netpoller for connections that carry nothing. It ends
// when stop shuts the listener down (accept then fails).
func (s *pileServer) serve() {
	defer close(s.done)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, 512)
	for {
		c, _, err := unix.Accept4(s.fd, unix.SOCK_CLOEXEC)
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		if err != nil {
			return
		}
		for {
			n, err := unix.Read(c, buf)
			if err == unix.EINTR || n > 0 {
				continue
			}
			break
		}
		unix.Close(c)
		s.closed.Add(1)
	}
}

func (s *pileServer) stop() {
	unix.Shutdown(s.fd, unix.SHUT_RDWR)
	<-s.done
	unix.Close(s.fd)
}
