package inventory

import (
	"net/netip"
	"time"
)

// State is a TCP state, numbered as the kernel numbers it.
type State uint8

// TCP states (include/net/tcp_states.h).
const (
	Established State = 1
	SynSent     State = 2
	SynRecv     State = 3
	FinWait1    State = 4
	FinWait2    State = 5
	TimeWait    State = 6
	Close       State = 7
	CloseWait   State = 8
	LastAck     State = 9
	Listen      State = 10
	Closing     State = 11
	NewSynRecv  State = 12
)

var stateNames = [...]string{
	Established: "ESTABLISHED", SynSent: "SYN_SENT", SynRecv: "SYN_RECV",
	FinWait1: "FIN_WAIT1", FinWait2: "FIN_WAIT2", TimeWait: "TIME_WAIT",
	Close: "CLOSE", CloseWait: "CLOSE_WAIT", LastAck: "LAST_ACK",
	Listen: "LISTEN", Closing: "CLOSING", NewSynRecv: "NEW_SYN_RECV",
}

func (s State) String() string {
	if int(s) < len(stateNames) && stateNames[s] != "" {
		return stateNames[s]
	}
	return "UNKNOWN"
}

// Socket is one TCP socket of a network namespace, as the kernel holds it.
type Socket struct {
	// State is the socket's state; TimeWait for every timewait socket.
	State State
	// Substate is, for a timewait socket, TimeWait or FinWait2 (an orphaned
	// FIN_WAIT2 the kernel holds as a timewait socket, bounded by
	// tcp_fin_timeout); State otherwise.
	Substate State
	IPv6     bool // family; v4-mapped addresses are reported as IPv4
	Saddr    netip.Addr
	Sport    uint16
	Daddr    netip.Addr
	Dport    uint16
	// Bound: the socket's local port came from bind() or listen() (its
	// bind bucket is not one connect() made), so connect() skips that port
	// for every destination.
	Bound bool
	// Remaining is what is left of a timewait socket's timer; valid when
	// RemainingKnown (the kernel's HZ is known).
	Remaining      time.Duration
	RemainingKnown bool
	// Timestamps: a timewait socket that saw TCP timestamps (tcp_tw_reuse
	// can only reuse those).
	Timestamps bool
}

// PortSpan is an inclusive range of ports.
type PortSpan struct{ Lo, Hi uint16 }

// Sysctls are a namespace's settings that decide port exhaustion.
type Sysctls struct {
	// PortRange is net.ipv4.ip_local_port_range, inclusive.
	PortRange PortSpan
	// Reserved is net.ipv4.ip_local_reserved_ports, sorted, merged.
	Reserved []PortSpan
	// TwReuse is net.ipv4.tcp_tw_reuse: 0 off, 1 on, 2 loopback only.
	TwReuse int
	// TwReuseDelay is net.ipv4.tcp_tw_reuse_delay (6.14+); 1 s when the
	// kernel has no such sysctl (TwReuseDelayKnown false).
	TwReuseDelay      time.Duration
	TwReuseDelayKnown bool
	// MaxTwBuckets is net.ipv4.tcp_max_tw_buckets.
	MaxTwBuckets int
	// FinTimeout is net.ipv4.tcp_fin_timeout.
	FinTimeout time.Duration
	// Timestamps is net.ipv4.tcp_timestamps.
	Timestamps int
}

// Counters are the namespace's TcpExt counters (/proc/net/netstat),
// cumulative since the namespace was created.
type Counters struct {
	// TW counts timewait sockets created with a first timer over 4 s:
	// every TIME_WAIT (60 s), and orphaned FIN_WAIT2s when tcp_fin_timeout
	// is over 4 s. Counted once, however the socket ends.
	TW         uint64
	TWRecycled uint64 // timewait sockets reused by connect()
	// TWKilled counts the other timewait sockets created, those with a
	// first timer of 4 s or less; TW + TWKilled is all of them. Not the
	// ones an RST ends early: no counter shows those.
	TWKilled            uint64
	TCPTimeWaitOverflow uint64 // sockets closed without timewait: tcp_max_tw_buckets reached
}

// NamespaceRef names a network namespace of the host.
type NamespaceRef struct {
	// Inode is the namespace's inode number (as in /proc/PID/ns/net and in
	// twtrace's events).
	Inode uint32
	// Path opens the namespace: /proc/PID/ns/net or a bind mount such as
	// /run/netns/NAME.
	Path string
	// PID and Comm are a process in the namespace (the lowest PID); 0 and
	// "" when it has none (kept alive by a bind mount only).
	PID  int
	Comm string
	// Name is the bind mount's name under /run/netns, if any.
	Name string
	// alts are other tasks' paths to the same namespace (up to maxAlts),
	// tried when Path is gone by the time of the scan: the thread it
	// names exited, or its namespace died and a new one took its inode
	// number.
	alts []string
}

// maxAlts bounds NamespaceRef.alts.
const maxAlts = 3

// Namespace is the inventory of one network namespace.
type Namespace struct {
	NamespaceRef
	Time     time.Time // when it was read
	Sysctls  Sysctls
	Counters Counters
	// Sockets are the sockets that are in no group: listeners, bound
	// sockets that are not accepted connections, sockets with no peer.
	// A Namespace built by hand may hold any socket here.
	Sockets []Socket
	// Groups and Conns hold the other sockets compactly: connections a
	// process opened (client groups, by destination) and connections
	// accepted on a listener (server groups). Socket and All expand them.
	Groups []Group
	Conns  []Conn
}

// Group is what the connections of a run share: their addresses, and the
// port of their destination (a client group) or their listener (a server
// group). Most of a namespace's sockets are in groups (Namespace.Conns),
// so a scan of a quarter of a million timewait sockets holds 12 bytes per
// socket, not a Socket each.
type Group struct {
	// Server: connections accepted on the local port Port (its listener's);
	// each Conn's Port is then its remote port. Otherwise connections
	// toward (Daddr, Port), each Conn's Port its local port.
	Server bool
	IPv6   bool // family; v4-mapped addresses are reported as IPv4
	Saddr  netip.Addr
	Daddr  netip.Addr
	Port   uint16
}

// Conn is one socket of a Group: a connected or closing socket, or a
// timewait socket. A client group's sockets are never Bound (a port
// whose bucket bind() or listen() marked is never one connect() picks,
// and the mark is per port); a server group's share their listener's
// bucket, and are.
type Conn struct {
	Group uint32 // index in Namespace.Groups
	Port  uint16 // the local port in a client group, the remote one in a server group
	// RemainingMs is what is left of a timewait socket's timer in
	// milliseconds (at most 65,535), when the flag connTimer is set.
	RemainingMs     uint16
	State, Substate State
	flags           uint8
}

// Conn flags.
const (
	connTimer      = 1 << 0 // RemainingMs is known
	connTimestamps = 1 << 1
)

// Timestamps reports a timewait socket that saw TCP timestamps.
func (c *Conn) Timestamps() bool { return c.flags&connTimestamps != 0 }

// Remaining is what is left of a timewait socket's timer, and whether it
// is known.
func (c *Conn) Remaining() (time.Duration, bool) {
	return time.Duration(c.RemainingMs) * time.Millisecond, c.flags&connTimer != 0
}

// Socket is c as a Socket of ns.
func (ns *Namespace) Socket(c *Conn) Socket {
	g := &ns.Groups[c.Group]
	s := Socket{State: c.State, Substate: c.Substate, IPv6: g.IPv6, Saddr: g.Saddr, Daddr: g.Daddr,
		Sport: c.Port, Dport: g.Port, Timestamps: c.Timestamps()}
	if g.Server {
		s.Sport, s.Dport, s.Bound = g.Port, c.Port, true
	}
	s.Remaining, s.RemainingKnown = c.Remaining()
	return s
}

// Len is the number of sockets of ns.
func (ns *Namespace) Len() int { return len(ns.Sockets) + len(ns.Conns) }

// All returns every socket of ns, Sockets then Conns, as Sockets: for
// tests and small namespaces; the figures are computed from the groups.
func (ns *Namespace) All() []Socket {
	out := make([]Socket, 0, ns.Len())
	out = append(out, ns.Sockets...)
	for i := range ns.Conns {
		out = append(out, ns.Socket(&ns.Conns[i]))
	}
	return out
}

// Compact moves the sockets of ns.Sockets that belong in groups to
// ns.Groups and ns.Conns, as a scan would have put them, and returns ns:
// for a Namespace built by hand. A timer is kept to the millisecond.
func Compact(ns *Namespace) *Namespace {
	var listening portSet
	for i := range ns.Sockets {
		if ns.Sockets[i].State == Listen {
			listening.add(ns.Sockets[i].Sport)
		}
	}
	index := map[Group]uint32{}
	for i := range ns.Groups {
		index[ns.Groups[i]] = uint32(i)
	}
	kept := ns.Sockets[:0]
	for _, s := range ns.Sockets {
		server := listening.has(s.Sport)
		if !groupable(s.State, s.Bound, server) || s.Dport == 0 || !s.Daddr.IsValid() || s.Daddr.IsUnspecified() {
			kept = append(kept, s)
			continue
		}
		g := Group{Server: server, IPv6: s.IPv6, Saddr: s.Saddr, Daddr: s.Daddr, Port: s.Dport}
		c := Conn{Port: s.Sport, State: s.State, Substate: s.Substate}
		if server {
			g.Port, c.Port = s.Sport, s.Dport
		}
		id, ok := index[g]
		if !ok {
			id = uint32(len(ns.Groups))
			index[g] = id
			ns.Groups = append(ns.Groups, g)
		}
		c.Group = id
		if s.Timestamps {
			c.flags |= connTimestamps
		}
		if s.RemainingKnown {
			c.RemainingMs, c.flags = uint16(min(max(s.Remaining.Milliseconds(), 0), 1<<16-1)), c.flags|connTimer
		}
		ns.Conns = append(ns.Conns, c)
	}
	ns.Sockets = kept
	return ns
}
