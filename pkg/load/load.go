// Package load generates short TCP connections as fast as the kernel takes
// them (or at a fixed rate), to fill the TIME_WAIT table and exhaust
// ephemeral ports on purpose: for benchmarks, demos and tests of twtrace.
//
// Clients and the built-in server use raw blocking sockets, one locked OS
// thread each, so that the kernel's work, not Go's, dominates the cost of a
// connection.
package load

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Mode is the side that closes first, and therefore the side whose socket
// ends in TIME_WAIT.
type Mode string

// Close modes.
const (
	// ClientClose: the client connects and closes at once; the built-in
	// server reads until EOF and then closes. The client side ends in
	// TIME_WAIT.
	ClientClose Mode = "client-close"
	// ServerClose: the built-in server accepts and closes at once; the
	// client reads until EOF and then closes. The server side ends in
	// TIME_WAIT.
	ServerClose Mode = "server-close"
)

// ParseMode returns the Mode named s.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ClientClose, ServerClose:
		return m, nil
	}
	return "", fmt.Errorf("invalid mode %q: want %s or %s", s, ClientClose, ServerClose)
}

// MaxClients bounds Config.Clients: every client is an OS thread.
const MaxClients = 1024

// Config describes a load run.
type Config struct {
	// Clients is the number of concurrent clients, at least 1.
	Clients int
	// Mode is who closes first; empty means ClientClose. With Addr it only
	// affects the client.
	Mode Mode
	// Rate is the total of new connections per second across all clients;
	// 0 means as fast as possible.
	Rate float64
	// Duration stops the run after this long; 0 means no time limit.
	Duration time.Duration
	// Connections stops the run after this many attempts in total,
	// successful or not; 0 means no limit.
	Connections int64
	// IPv6 selects the built-in server's [::1] over 127.0.0.1. With Addr it
	// only restricts name resolution to IPv6.
	IPv6 bool
	// Addr is an external server, host:port. Empty: start a built-in server
	// on an ephemeral loopback port.
	Addr string
}

// Validate reports the first invalid field of c. Run calls it too; callers
// use it to tell a bad configuration from a failure of the host.
func (c Config) Validate() error {
	switch {
	case c.Clients < 1 || c.Clients > MaxClients:
		return fmt.Errorf("invalid number of clients %d: want 1 to %d", c.Clients, MaxClients)
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return fmt.Errorf("invalid rate %v: want a finite number of connections per second, 0 for no limit", c.Rate)
	case c.Duration < 0:
		return fmt.Errorf("invalid duration %s: must not be negative", c.Duration)
	case c.Connections < 0:
		return fmt.Errorf("invalid number of connections %d: must not be negative", c.Connections)
	}
	if c.Mode != "" {
		if _, err := ParseMode(string(c.Mode)); err != nil {
			return err
		}
	}
	if c.Addr != "" {
		if _, err := splitAddr(c.Addr); err != nil {
			return err
		}
	}
	return nil
}

// splitAddr checks the form of an external server address and returns its
// port.
func splitAddr(addr string) (int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("invalid address %q: want host:port", addr)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 || host == "" {
		return 0, fmt.Errorf("invalid address %q: want host:port with a port from 1 to 65535", addr)
	}
	return int(p), nil
}

// Result is the report of a run. The JSON field names are a stable
// interface: benchmark harnesses parse them.
type Result struct {
	Mode    Mode   `json:"mode"`
	Clients int    `json:"clients"`
	Family  string `json:"family"` // ipv4 or ipv6
	Addr    string `json:"addr"`   // the server's address
	// DurationSec is how long the clients ran, in seconds (to 0.1 ms).
	DurationSec float64 `json:"duration_s"`
	// Attempts counts connect attempts, successful or not. Attempts cut
	// short by the end of the run are not counted.
	Attempts int64 `json:"attempts"`
	// Connections counts successful connects.
	Connections int64 `json:"connections"`
	// ConnectsPerSec is Connections / DurationSec (to 0.1).
	ConnectsPerSec float64 `json:"connects_per_s"`
	// Errors counts failures by errno name (EADDRNOTAVAIL, ECONNREFUSED):
	// of socket() and connect(), each one a failed attempt, and in
	// server-close mode of the read after a successful connect.
	Errors map[string]int64 `json:"errors"`
	// ServerAccepted counts the connections the built-in server accepted;
	// nil with an external server.
	ServerAccepted *int64 `json:"server_accepted,omitempty"`
}

// Run generates load as cfg says until the duration elapses, the number of
// connections is reached or ctx is done, whichever comes first. Failures of
// individual connections are counted, never returned: errors are about the
// configuration or setting up the built-in server.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	if cfg.Mode == "" {
		cfg.Mode = ClientClose
	}
	srv, ep, err := start(ctx, cfg)
	if err != nil {
		return Result{}, err
	}
	res := Result{Mode: cfg.Mode, Clients: cfg.Clients, Addr: ep.addr.String(), Family: "ipv4"}
	if ep.domain == unix.AF_INET6 {
		res.Family = "ipv6"
	}

	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	st, elapsed := runClients(ctx, cfg, ep)
	if srv != nil {
		accepted := srv.stop(st.connections)
		res.ServerAccepted = &accepted
	}

	res.Attempts, res.Connections = st.attempts, st.connections
	res.Errors = st.errorNames()
	res.DurationSec = round(elapsed.Seconds(), 1e4)
	if elapsed > 0 {
		res.ConnectsPerSec = round(float64(st.connections)/elapsed.Seconds(), 10)
	}
	return res, nil
}

// start starts the built-in server, or resolves the external one, and
// returns the endpoint the clients connect to. The server is nil with an
// external one.
// acceptors is how many threads the built-in server accepts with. In
// client-close mode each one waits for its connection's FIN, so several
// serve the clients at once. In server-close mode an acceptor only accepts
// and closes: one thread does it fastest, and makes the run CPU-bound and
// repeatable, where several contend for the listener and leave a third of
// a 2-CPU machine idle (measured: 1 acceptor, 23-24k conn/s at 25 % idle;
// 4 acceptors, 17-18k conn/s at 40 % idle, and noisier).
func acceptors(cfg Config) int {
	if cfg.Mode == ServerClose {
		return 1
	}
	return min(cfg.Clients, 4)
}

func start(ctx context.Context, cfg Config) (*server, endpoint, error) {
	if cfg.Addr != "" {
		target, err := resolve(ctx, cfg.Addr, cfg.IPv6)
		if err != nil {
			return nil, endpoint{}, err
		}
		ep, err := newEndpoint(target)
		return nil, ep, err
	}
	srv, err := listen(cfg.IPv6, cfg.Mode, acceptors(cfg))
	if err != nil {
		return nil, endpoint{}, err
	}
	ep, err := newEndpoint(srv.addr)
	if err != nil {
		srv.stop(0)
		return nil, endpoint{}, err
	}
	return srv, ep, nil
}

// round rounds x to the nearest 1/scale, for reports free of noise digits.
func round(x, scale float64) float64 { return math.Round(x*scale) / scale }

// resolve turns an external server's host:port into one address.
func resolve(ctx context.Context, addr string, ipv6Only bool) (netip.AddrPort, error) {
	port, err := splitAddr(addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	host, _, _ := net.SplitHostPort(addr)
	network := "ip"
	if ipv6Only {
		network = "ip6"
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, network, host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("resolving %q: %w", host, err)
	}
	if len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("resolving %q: no address", host)
	}
	ip := ips[0].Unmap()
	if ipv6Only && ip.Is4() {
		return netip.AddrPort{}, fmt.Errorf("address %q is not IPv6", addr)
	}
	return netip.AddrPortFrom(ip, uint16(port)), nil
}

// runClients runs cfg.Clients clients against ep until they are done or
// ctx is. It returns their summed statistics and how long they ran.
func runClients(ctx context.Context, cfg Config, ep endpoint) (stats, time.Duration) {
	sched := &schedule{start: time.Now(), rate: cfg.Rate, limit: cfg.Connections}
	clients := make([]*client, cfg.Clients)
	var stopped atomic.Bool
	var wg sync.WaitGroup
	for i := range clients {
		c := newClient(ep, cfg.Mode, &stopped)
		clients[i] = c
		wg.Go(func() { c.run(ctx, sched) })
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		stopped.Store(true)
		abortUntilDone(clients, done)
	}
	elapsed := time.Since(sched.start)

	var total stats
	for _, c := range clients {
		total.add(&c.stats)
	}
	return total, elapsed
}

// abortUntilDone wakes the clients still blocked on the same socket from
// one pass to the next, until every client has returned. Over loopback a
// connection takes microseconds: only those that wait for a SYN to be
// retransmitted or for a server that does not close get aborted.
func abortUntilDone(clients []*client, done <-chan struct{}) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	seen := make([]uint64, len(clients))
	for {
		for i, c := range clients {
			c.abortIfStuck(&seen[i])
		}
		select {
		case <-done:
			return
		case <-tick.C:
		}
	}
}

// endpoint is the server address in the form connect(2) takes.
type endpoint struct {
	domain int // AF_INET or AF_INET6
	addr   netip.AddrPort
	zoneID uint32 // interface index of an IPv6 link-local address
}

func newEndpoint(ap netip.AddrPort) (endpoint, error) {
	ip := ap.Addr()
	if ip.Is4() {
		return endpoint{domain: unix.AF_INET, addr: ap}, nil
	}
	ep := endpoint{domain: unix.AF_INET6, addr: ap}
	if zone := ip.Zone(); zone != "" {
		if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
			ep.zoneID = uint32(n)
			return ep, nil
		}
		ifi, err := net.InterfaceByName(zone)
		if err != nil {
			return endpoint{}, fmt.Errorf("address %s: %w", ap, err)
		}
		ep.zoneID = uint32(ifi.Index)
	}
	return ep, nil
}

// sockaddr returns a new sockaddr for ep. Every client needs its own:
// unix.Connect writes the raw form into the value it is given.
func (ep endpoint) sockaddr() unix.Sockaddr {
	if ep.domain == unix.AF_INET {
		return &unix.SockaddrInet4{Port: int(ep.addr.Port()), Addr: ep.addr.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ep.addr.Port()), Addr: ep.addr.Addr().As16(), ZoneId: ep.zoneID}
}
