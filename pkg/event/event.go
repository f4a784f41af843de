// Package event holds twtrace's typed events: what the BPF programs report,
// decoded without per-event allocation, and their JSON and table forms.
package event

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"syscall"
	"time"
)

// Kind is what happened.
type Kind uint8

const (
	// KindTimewait: a TCP socket left its process and the kernel now holds
	// its 4-tuple in a timewait socket.
	KindTimewait Kind = 1
	// KindConnectError: connect() failed locally with EADDRNOTAVAIL.
	KindConnectError Kind = 2
	// KindBindError: bind() to port 0 failed with EADDRINUSE.
	KindBindError Kind = 3
)

var kindNames = [...]string{KindTimewait: "timewait", KindConnectError: "connect_error", KindBindError: "bind_error"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "unknown"
}

// ParseKind is the inverse of Kind.String.
func ParseKind(s string) (Kind, bool) {
	for k, name := range kindNames {
		if name != "" && name == s {
			return Kind(k), true
		}
	}
	return 0, false
}

// Role says which side of the connection the closing process was.
type Role uint8

const (
	RoleUnknown Role = 0 // the socket was opened before tracing began
	RoleClient  Role = 1 // opened by connect()
	RoleServer  Role = 2 // accepted from a listen()ing socket
)

func (r Role) String() string {
	switch r {
	case RoleClient:
		return "client"
	case RoleServer:
		return "server"
	}
	return "unknown"
}

// Event is one decoded record. Zero values mean "not known", never a guess.
type Event struct {
	Time       time.Time
	Kind       Kind
	PID        uint32 // tgid of the process responsible
	TID        uint32
	Comm       [16]byte // NUL-padded, attacker-controlled: escape before printing
	Netns      uint32
	CgroupID   uint64
	IPv6       bool // family; v4-mapped IPv6 is reported as IPv4
	Saddr      netip.Addr
	Sport      uint16
	Daddr      netip.Addr
	Dport      uint16
	Role       Role
	OpenerPID  uint32
	OpenerComm [16]byte
	Lifetime   time.Duration // open to timewait entry; 0 when unknown
	BytesSent  uint64
	BytesRecv  uint64
	Errno      syscall.Errno // connect_error: EADDRNOTAVAIL, bind_error: EADDRINUSE
	// Recovered marks a timewait entry reported late: the kernel ran none
	// of twtrace's programs when the socket left for timewait, and the
	// entry was found afterwards from the socket's record. Time is then
	// when the process closed the socket (at most the entry's time);
	// everything else is as exact as for other entries.
	Recovered bool
}

// RecordSize is the size of struct event in bpf/twtrace.bpf.c.
const RecordSize = 136

// flagRecovered is EVENT_F_RECOVERED in struct event's flags.
const flagRecovered = 1

// ErrShortRecord means a ring-buffer record was smaller than struct event.
var ErrShortRecord = errors.New("short event record")

const (
	afInet  = 2
	afInet6 = 10
)

// Clock converts the kernel's CLOCK_MONOTONIC nanoseconds to wall time.
type Clock struct {
	// BootWall is the wall-clock time at which CLOCK_MONOTONIC was zero.
	BootWall time.Time
}

// Decode fills e from one ring-buffer record. It does not allocate.
func Decode(raw []byte, clock Clock, e *Event) error {
	if len(raw) < RecordSize {
		return ErrShortRecord
	}
	le := binary.LittleEndian
	ts := le.Uint64(raw[0:])
	openNs := le.Uint64(raw[8:])
	kind := Kind(raw[66])
	if kind < KindTimewait || kind > KindBindError {
		return errors.New("unknown event kind")
	}
	*e = Event{
		Time:      clock.BootWall.Add(time.Duration(ts)),
		Kind:      kind,
		CgroupID:  le.Uint64(raw[16:]),
		BytesSent: le.Uint64(raw[24:]),
		BytesRecv: le.Uint64(raw[32:]),
		PID:       le.Uint32(raw[40:]),
		TID:       le.Uint32(raw[44:]),
		OpenerPID: le.Uint32(raw[48:]),
		Netns:     le.Uint32(raw[52:]),
		Errno:     syscall.Errno(le.Uint32(raw[56:])),
		Sport:     le.Uint16(raw[62:]),
		Dport:     le.Uint16(raw[64:]),
		Role:      Role(raw[67]),
		Recovered: le.Uint32(raw[132:])&flagRecovered != 0,
	}
	if openNs != 0 && ts > openNs {
		e.Lifetime = time.Duration(ts - openNs)
	}
	copy(e.Comm[:], raw[100:116])
	copy(e.OpenerComm[:], raw[116:132])

	family := le.Uint16(raw[60:])
	saddr := (*[16]byte)(raw[68:84])
	daddr := (*[16]byte)(raw[84:100])
	switch family {
	case afInet:
		e.Saddr = netip.AddrFrom4([4]byte(saddr[:4]))
		e.Daddr = netip.AddrFrom4([4]byte(daddr[:4]))
	case afInet6:
		s, d := netip.AddrFrom16(*saddr), netip.AddrFrom16(*daddr)
		// A dual-stack socket talking IPv4 carries v4-mapped addresses:
		// the wire protocol is IPv4, so report it as such.
		if d.Is4In6() && (s.Is4In6() || s.IsUnspecified()) {
			d = d.Unmap()
			if s.IsUnspecified() {
				s = netip.IPv4Unspecified()
			} else {
				s = s.Unmap()
			}
		} else {
			e.IPv6 = true
		}
		e.Saddr, e.Daddr = s, d
	default:
		return errors.New("unknown address family")
	}
	if kind == KindBindError {
		// bind() has no destination.
		e.Daddr = netip.Addr{}
	}
	return nil
}

// CommString returns a NUL-terminated kernel comm as a Go string (unescaped).
func CommString(c *[16]byte) string {
	n := 0
	for n < len(c) && c[n] != 0 {
		n++
	}
	return string(c[:n])
}
