// Package filter decides which events twtrace reports, from the options a
// user gave on the command line.
//
// Options of different kinds must all match (AND); the values given for one
// kind are alternatives (OR). So --pid 1 --pid 2 --dport 443 reports events
// of process 1 or 2 towards port 443.
package filter

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/twtrace/twtrace/pkg/event"
)

// Options are the filter flags as the command line hands them over, not yet
// validated. Empty fields do not restrict anything.
type Options struct {
	PIDs     []string // --pid: process IDs
	Comms    []string // --comm: exact process names, as the kernel keeps them
	Daddrs   []string // --daddr: destination IPs or CIDR prefixes
	Dports   []string // --dport: destination ports or ranges ("8000-8100")
	IPv4Only bool     // --ipv4
	IPv6Only bool     // --ipv6
	Netns    []string // --netns: network namespace inode numbers
	Events   string   // --events: comma-separated event kinds or "all"; "" = DefaultKinds
}

// allKinds has bit 1<<Kind set for every kind there is.
const allKinds = 1<<event.KindTimewait | 1<<event.KindConnectError | 1<<event.KindBindError |
	1<<event.KindTimewaitEnd | 1<<event.KindOverflow | 1<<event.KindReuse

// DefaultKinds are the kinds reported without --events: bind_error must be
// asked for, because catching it takes syscall tracepoints, which slow
// every syscall on the host while attached; timewait_end, one per
// timewait entry a minute later, doubles the output and is asked for too.
// (timewait_overflow and timewait_reuse come from the precise tier only.)
const DefaultKinds = 1<<event.KindTimewait | 1<<event.KindConnectError |
	1<<event.KindOverflow | 1<<event.KindReuse

// maxComm is the most bytes of a comm the kernel keeps (TASK_COMM_LEN - 1).
const maxComm = 15

type portRange struct{ lo, hi uint16 }

type family uint8

const (
	anyFamily family = iota
	ipv4Only
	ipv6Only
)

// Filter is a validated set of Options. The zero Filter and a nil *Filter
// match everything.
type Filter struct {
	kinds    uint32 // 0 = all
	pids     []uint32
	comms    []string
	prefixes []netip.Prefix
	ports    []portRange
	family   family
	netns    []uint32
}

// Parse validates o and turns it into a Filter. Its errors are one line that
// names the flag and the value at fault, fit to show the user as they are.
func Parse(o Options) (*Filter, error) {
	f := &Filter{}

	if o.IPv4Only && o.IPv6Only {
		return nil, errors.New("invalid --ipv6: cannot be combined with --ipv4")
	}
	switch {
	case o.IPv4Only:
		f.family = ipv4Only
	case o.IPv6Only:
		f.family = ipv6Only
	}

	if strings.TrimSpace(o.Events) != "" {
		for name := range strings.SplitSeq(o.Events, ",") {
			name = strings.TrimSpace(name)
			if name == "all" {
				f.kinds |= allKinds
				continue
			}
			k, ok := event.ParseKind(name)
			if !ok {
				return nil, fmt.Errorf("invalid --events %q: unknown event %q (valid: %s, all)", o.Events, name, kindList())
			}
			f.kinds |= 1 << k
		}
	}

	for _, s := range o.PIDs {
		pid, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
		if err != nil || pid == 0 {
			return nil, fmt.Errorf("invalid --pid %q: not a process ID (a positive integer)", s)
		}
		f.pids = append(f.pids, uint32(pid))
	}

	for _, s := range o.Comms {
		switch {
		case s == "":
			return nil, fmt.Errorf("invalid --comm %q: empty process name", s)
		case strings.IndexByte(s, 0) >= 0:
			return nil, fmt.Errorf("invalid --comm %q: contains a NUL byte", s)
		case len(s) > maxComm:
			// The kernel cuts names to 15 bytes; say what would match
			// instead of silently matching nothing.
			return nil, fmt.Errorf("invalid --comm %q: longer than the %d bytes the kernel keeps (try %q)", s, maxComm, s[:maxComm])
		}
		f.comms = append(f.comms, s)
	}

	for _, s := range o.Daddrs {
		p, err := parseAddrOrPrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("invalid --daddr %q: %v", s, err)
		}
		f.prefixes = append(f.prefixes, p)
	}

	for _, s := range o.Dports {
		r, err := parsePortRange(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("invalid --dport %q: %v", s, err)
		}
		f.ports = append(f.ports, r)
	}

	for _, s := range o.Netns {
		t := strings.TrimSpace(s)
		// Accept what `readlink /proc/PID/ns/net` prints, too.
		if inner, ok := strings.CutPrefix(t, "net:["); ok {
			t, _ = strings.CutSuffix(inner, "]")
		}
		ino, err := strconv.ParseUint(t, 10, 32)
		if err != nil || ino == 0 {
			return nil, fmt.Errorf("invalid --netns %q: not a network namespace inode number", s)
		}
		f.netns = append(f.netns, uint32(ino))
	}
	return f, nil
}

var (
	errNotAddr  = errors.New("not an IP address or CIDR")
	errZone     = errors.New("addresses with a zone are not supported")
	errNotPorts = errors.New("not a port (1-65535) or port range (low-high)")
)

// parseAddrOrPrefix reads an IP as a single-address prefix, so that Match
// has only one thing to check.
func parseAddrOrPrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return p, errNotAddr
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return p, errNotAddr
		}
		if a.Zone() != "" {
			return p, errZone
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	// Events report IPv4 over a dual-stack socket as IPv4, so
	// ::ffff:10.0.0.1 has to be written as 10.0.0.1 to ever match.
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

func parsePortRange(s string) (portRange, error) {
	loStr, hiStr, isRange := strings.Cut(s, "-")
	lo, ok := parsePort(loStr)
	if !ok {
		return portRange{}, errNotPorts
	}
	if !isRange {
		return portRange{lo, lo}, nil
	}
	hi, ok := parsePort(hiStr)
	if !ok {
		return portRange{}, errNotPorts
	}
	if lo > hi {
		return portRange{}, fmt.Errorf("range start %d is above its end %d", lo, hi)
	}
	return portRange{lo, hi}, nil
}

func parsePort(s string) (uint16, bool) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	return uint16(n), err == nil && n != 0
}

// KindMask returns a mask with bit 1<<Kind set for each kind of event the
// filter wants, for the BPF programs to drop the rest before they cost a
// ring-buffer slot, and to attach only the hooks they need. It is never
// 0: with no --events, it is DefaultKinds.
func (f *Filter) KindMask() uint32 {
	if f == nil || f.kinds == 0 {
		return DefaultKinds
	}
	return f.kinds
}

// Match reports whether e passes the filter. It does not allocate, since it
// runs for every event.
//
// A timewait has two processes: the one whose close put the socket in
// TIME_WAIT (PID, Comm) and the one that opened it (OpenerPID, OpenerComm);
// --pid and --comm match either. Events without a destination (bind_error)
// never pass --daddr or --dport.
func (f *Filter) Match(e *event.Event) bool {
	if f == nil {
		return true
	}
	// Kinds not asked for are not produced in the first place; without
	// --events any kind that arrives (a caller's own tracer) passes.
	if f.kinds != 0 && f.kinds&(1<<e.Kind) == 0 {
		return false
	}
	return f.MatchAnyKind(e)
}

// MatchAnyKind is Match without --events: for what twtrace counts besides
// events, such as connect() attempts (filled in as an event of kind 0).
func (f *Filter) MatchAnyKind(e *event.Event) bool {
	if f == nil {
		return true
	}
	switch f.family {
	case ipv4Only:
		if e.IPv6 {
			return false
		}
	case ipv6Only:
		if !e.IPv6 {
			return false
		}
	}
	if len(f.netns) > 0 && !containsUint32(f.netns, e.Netns) {
		return false
	}
	if len(f.pids) > 0 {
		ok := containsUint32(f.pids, e.PID)
		if !ok && e.Kind == event.KindTimewait && e.OpenerPID != 0 {
			ok = containsUint32(f.pids, e.OpenerPID)
		}
		if !ok {
			return false
		}
	}
	if len(f.comms) > 0 {
		ok := f.matchComm(&e.Comm)
		if !ok && e.Kind == event.KindTimewait {
			ok = f.matchComm(&e.OpenerComm)
		}
		if !ok {
			return false
		}
	}
	if len(f.prefixes) > 0 {
		if !e.Daddr.IsValid() {
			return false
		}
		d := e.Daddr.Unmap().WithZone("")
		ok := false
		for _, p := range f.prefixes {
			if p.Contains(d) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(f.ports) > 0 {
		ok := false
		for _, r := range f.ports {
			if r.lo <= e.Dport && e.Dport <= r.hi {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func (f *Filter) matchComm(c *[16]byte) bool {
	n := 0
	for n < len(c) && c[n] != 0 {
		n++
	}
	for _, want := range f.comms {
		// The compiler compares string(bytes) in place, without a copy.
		if string(c[:n]) == want {
			return true
		}
	}
	return false
}

func containsUint32(s []uint32, v uint32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// SingleNetns is the one namespace the filter admits, for filtering in the
// kernel, or 0 when it admits several or all.
func (f *Filter) SingleNetns() uint32 {
	if f == nil || len(f.netns) != 1 {
		return 0
	}
	return f.netns[0]
}

// AdmitsNetns reports whether events of namespace inode can pass --netns.
func (f *Filter) AdmitsNetns(inode uint32) bool {
	return f == nil || len(f.netns) == 0 || containsUint32(f.netns, inode)
}

// kindList names every kind, for error messages.
func kindList() string {
	var names []string
	for _, k := range event.Kinds() {
		names = append(names, k.String())
	}
	return strings.Join(names, ", ")
}
