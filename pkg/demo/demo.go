// Package demo is `twtrace demo`: the ephemeral-port problem reproduced in
// a throwaway network namespace, and twtrace top finding it.
//
// The namespace has only loopback, a port range of 500 ports
// (40000-40499) and tcp_tw_reuse=0. Three processes run in it, each this
// program re-executed under its own name:
//
//   - server answers on 127.0.0.1:8080 (outside the range: it takes none
//     of its ports), sending back whatever it receives;
//   - churner opens a new connection per request and closes it first, 150
//     a second: each connection leaves its port in TIME_WAIT for 60 s, so
//     the range is used up after 500 / 150 = 3.3 s, and from then on
//     connect() fails with EADDRNOTAVAIL, 150 times a second;
//   - pooled sends the same 150 requests a second over one connection,
//     made once: one port, no TIME_WAIT.
//
// twtrace's live engine runs meanwhile, restricted to the namespace; its
// frames, as top shows them, are the demo's output. When the demo ends, however it ends, nothing it made
// remains: the processes die (PR_SET_PDEATHSIG covers a SIGKILLed demo),
// with them the namespace (no bind mount or descriptor keeps it) and its
// sockets, and the BPF programs go with the demo's descriptors.
package demo

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/pkg/live"
	"github.com/twtrace/twtrace/pkg/load"
	"github.com/twtrace/twtrace/pkg/tracer"
)

// The demo's settings.
const (
	// PortFirst and PortLast are the namespace's ip_local_port_range.
	PortFirst, PortLast = 40000, 40499
	// PortsUsable is what connect() can pick toward the server with
	// nothing in use: the whole range (nothing is reserved, and the
	// listener is outside it). 500 is even: the kernel, which searches
	// an even number of ports, leaves none out.
	PortsUsable = PortLast - PortFirst + 1
	// Rate is the requests per second of each client: the churner's
	// connections, the pooled client's requests.
	Rate = 150.0
	// DefaultDuration leaves a few seconds of failures after the range
	// runs out (at about 3.3 s).
	DefaultDuration = 12 * time.Second
)

// ServerAddr is where the demo's server listens, in its namespace.
var ServerAddr = netip.MustParseAddrPort("127.0.0.1:8080")

// sysctls are the namespace's settings. tcp_rfc1337=1 keeps an RST (seen
// on loopback when a retransmitted FIN crosses the last ACK) from ending
// a TIME_WAIT early, so that every figure of the demo is exact.
func sysctls() []load.Sysctl {
	return []load.Sysctl{
		{Key: "net.ipv4.ip_local_port_range", Value: fmt.Sprintf("%d %d", PortFirst, PortLast)},
		{Key: "net.ipv4.tcp_tw_reuse", Value: "0"},
		{Key: "net.ipv4.tcp_rfc1337", Value: "1"},
	}
}

// ErrPermission: the demo creates a network namespace and sets loopback up
// in it, besides loading BPF.
var ErrPermission = errors.New("missing privileges: run as root or grant CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF and CAP_PERFMON")

// Preflight reports the first reason the demo cannot run here, or nil.
func Preflight() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		if os.Geteuid() != 0 {
			return ErrPermission
		}
	} else {
		has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
		// CAP_SYS_ADMIN stands for CAP_BPF and CAP_PERFMON too.
		if !has(unix.CAP_SYS_ADMIN) || !has(unix.CAP_NET_ADMIN) {
			return ErrPermission
		}
	}
	if err := tracer.Preflight(); err != nil {
		if errors.Is(err, tracer.ErrPermission) {
			return ErrPermission
		}
		return err
	}
	return nil
}

// Config of a demo run.
type Config struct {
	Interval time.Duration // between frames; default 1 s
	Count    int           // frames; 0: until ctx is done
	// Ready is called once tracing runs and the processes are started.
	Ready func(*Info)
}

// Info is what the demo set up.
type Info struct {
	Netns     uint32 // the namespace's inode, as twtrace reports it
	Server    netip.AddrPort
	PortRange [2]uint16
	Usable    int
	Rate      float64
	// The processes' pids.
	ServerPID, ChurnerPID, PooledPID int
	Start                            time.Time
}

// Run sets the demo up, then runs the live engine on its namespace and
// calls emit with every frame, until ctx is done or cfg.Count frames were
// emitted. It removes everything it made before it returns.
func Run(ctx context.Context, cfg Config, emit func(*live.Frame) error) (err error) {
	if err := Preflight(); err != nil {
		return err
	}
	ns, err := newNetns(sysctls())
	if err != nil {
		return err
	}
	defer ns.close() // last: the processes are reaped by then

	var ln *os.File
	if err := ns.do(func() (err error) { ln, err = listen(ServerAddr); return err }); err != nil {
		return err
	}
	defer func() {
		if ln != nil {
			ln.Close()
		}
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g := &group{onFail: cancel}
	defer g.stop()

	var startErr error
	ready := func() {
		if ctx.Err() != nil {
			return // stopped while loading: start nothing
		}
		info, err := start(ns, g, ln)
		ln.Close() // the server has its own copy
		ln = nil
		if err != nil {
			startErr = err
			cancel()
			return
		}
		if cfg.Ready != nil {
			cfg.Ready(info)
		}
	}
	// The demo's namespace holds a few hundred sockets: every frame reads
	// them (the budget is for hosts that hold hundreds of thousands).
	err = live.Run(ctx, live.Config{
		Interval: cfg.Interval, Count: cfg.Count, Netns: ns.inode, Ready: ready, InventoryCPU: 1,
	}, emit)
	g.stop()
	// What stopped the demo comes first: a process that ended early
	// also makes emit fail, or the engine find nothing.
	return errors.Join(startErr, g.err(), err)
}

// start starts the processes: server, then pooled (whose one connection
// must come before the churner takes every port), then churner. Then the
// namespace thread leaves the namespace: the processes alone keep it.
func start(ns *nsThread, g *group, ln *os.File) (*Info, error) {
	info := &Info{
		Netns: ns.inode, Server: ServerAddr, PortRange: [2]uint16{PortFirst, PortLast},
		Usable: PortsUsable, Rate: Rate, Start: time.Now(),
	}
	parent := os.Getpid()
	client := func(role string) childSpec {
		return childSpec{Role: role, Addr: ServerAddr.String(), Rate: Rate, Parent: parent}
	}
	err := ns.do(func() error {
		for _, s := range []struct {
			spec  childSpec
			extra *os.File
			pid   *int
		}{
			{childSpec{Role: roleServer, Parent: parent}, ln, &info.ServerPID},
			{client(rolePooled), nil, &info.PooledPID},
			{client(roleChurner), nil, &info.ChurnerPID},
		} {
			p, err := startProc(s.spec, s.extra)
			if err != nil {
				return err
			}
			g.add(p)
			*s.pid = p.pid()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := ns.leave(); err != nil {
		return nil, err
	}
	return info, nil
}

// listen makes the server's listening socket, in the calling thread's
// namespace.
func listen(ap netip.AddrPort) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return nil, fmt.Errorf("server socket: %w", err)
	}
	sa := &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("server bind %s: %w", ap, err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("server listen: %w", err)
	}
	return os.NewFile(uintptr(fd), "demo listener"), nil
}
