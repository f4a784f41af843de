// Package event holds twtrace's typed events: what the BPF programs report,
// decoded without per-event allocation, and their JSON and table forms.
package event

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"
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

	// The precise tier's kinds (fentry/fexit, where the kernel allows it).

	// KindTimewaitEnd: a timewait socket of a traced connection went away;
	// Reason says why, Lifetime is how long it lived.
	KindTimewaitEnd Kind = 4
	// KindOverflow: a socket closed first went to CLOSE with no timewait
	// socket, because tcp_max_tw_buckets was reached.
	KindOverflow Kind = 5
	// KindReuse: connect() took over a timewait socket's 4-tuple
	// (tcp_tw_reuse). PID is the connecting process, OpenerPID the
	// process whose timewait socket it was, Lifetime that socket's age.
	KindReuse Kind = 6
	// KindStack: a connect() stack seen for the first time (Stack names
	// it), by the process in PID. Not a report: the engine reads what
	// symbolizing the stack needs while the process lives. Not in Kinds.
	KindStack Kind = 7

	maxKind = KindStack
)

var kindNames = [...]string{KindTimewait: "timewait", KindConnectError: "connect_error", KindBindError: "bind_error",
	KindTimewaitEnd: "timewait_end", KindOverflow: "timewait_overflow", KindReuse: "timewait_reuse"}

// Kinds lists every kind, in order.
func Kinds() []Kind {
	return []Kind{KindTimewait, KindConnectError, KindBindError, KindTimewaitEnd, KindOverflow, KindReuse}
}

// Reason is why a timewait socket ended (KindTimewaitEnd).
type Reason uint8

const (
	ReasonNone    Reason = 0
	ReasonExpired Reason = 1 // its timer ran out
	ReasonRST     Reason = 2 // an RST killed it (tcp_rfc1337=0)
	ReasonSYN     Reason = 3 // a new SYN from the peer took it over
	ReasonReused  Reason = 4 // a local connect() took it over (tcp_tw_reuse)
	ReasonKilled  Reason = 5 // anything else: its namespace went away, ...
)

var reasonNames = [...]string{ReasonExpired: "expired", ReasonRST: "rst", ReasonSYN: "syn", ReasonReused: "reused", ReasonKilled: "killed"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return ""
}

// Substate is the TCP state a timewait socket stands for.
type Substate uint8

const (
	SubstateUnknown  Substate = 0
	SubstateFinWait2 Substate = 5 // an orphan waiting tcp_fin_timeout for the peer's FIN
	SubstateTimeWait Substate = 6
)

func (s Substate) String() string {
	switch s {
	case SubstateFinWait2:
		return "FIN_WAIT2"
	case SubstateTimeWait:
		return "TIME_WAIT"
	}
	return ""
}

func (k Kind) String() string {
	if k == KindStack {
		return "stack"
	}
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
	Lifetime   time.Duration // timewait: open to timewait entry; timewait_end and timewait_reuse: the timewait socket's age; 0 when unknown
	BytesSent  uint64
	BytesRecv  uint64
	Errno      syscall.Errno // connect_error: EADDRNOTAVAIL, bind_error: EADDRINUSE
	// Recovered marks a timewait entry reported late: the kernel ran none
	// of twtrace's programs when the socket left for timewait, and the
	// entry was found afterwards from the socket's record. Time is then
	// when the process closed the socket (at most the entry's time);
	// everything else is as exact as for other entries.
	Recovered bool
	// Confirmed marks what the precise tier saw where the kernel decided
	// it: a timewait entry when inet_twsk_alloc made the socket, a connect
	// error when tcp_v4_connect/tcp_v6_connect returned it.
	Confirmed bool
	Reason    Reason   // timewait_end
	Substate  Substate // timewait, timewait_end, timewait_overflow, timewait_reuse (precise tier)
	// Proc is who the process in PID was when it acted: for timewait,
	// timewait_end and timewait_overflow the closer, for connect_error,
	// bind_error and timewait_reuse the caller.
	Proc Proc
	// Stack names the user stack of the connect() that opened the
	// connection (timewait, timewait_overflow, connect_error; and the
	// new stack of a KindStack), as the kernel's stack table keys it; 0
	// when it was not taken (sampled out, or no stacks asked for).
	Stack uint64
}

// Proc is what the kernel recorded about the process responsible when it
// acted: it may be gone by the time the record is read, and its pid
// reused.
type Proc struct {
	PPID   uint32   // tgid of its parent (as of its fork); 0 unknown
	ExeDev uint32   // device of its executable, kernel encoding (major<<20 | minor); 0 unknown
	ExeIno uint64   // inode of its executable; 0 unknown (kernel threads)
	Comm   [16]byte // its thread-group leader's comm, NUL-padded, chosen by the process: escape it
}

// ExeDevString is ExeDev as "major:minor", or "" when it is not known.
func (p *Proc) ExeDevString() string {
	if p.ExeDev == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(p.ExeDev>>20), 10) + ":" + strconv.FormatUint(uint64(p.ExeDev&(1<<20-1)), 10)
}

// appendExeDev is ExeDevString appended to dst, without allocating.
func (p *Proc) appendExeDev(dst []byte) []byte {
	if p.ExeDev == 0 {
		return dst
	}
	dst = strconv.AppendUint(dst, uint64(p.ExeDev>>20), 10)
	dst = append(dst, ':')
	return strconv.AppendUint(dst, uint64(p.ExeDev&(1<<20-1)), 10)
}

// DecodeProc fills p from struct proc_id's 32 bytes (bpf/record.h), as a
// record and a connect count carry it. raw must hold ProcSize bytes.
func DecodeProc(raw []byte, p *Proc) {
	le := binary.LittleEndian
	p.PPID = le.Uint32(raw[0:])
	p.ExeDev = le.Uint32(raw[4:])
	p.ExeIno = le.Uint64(raw[8:])
	copy(p.Comm[:], raw[16:32])
}

// RecordSize is the size of struct event in bpf/record.h, and ProcSize
// that of its struct proc_id, at offset procOffset.
const (
	RecordSize  = 184
	ProcSize    = 32
	procOffset  = 144
	stackOffset = 176
)

// EVENT_F_RECOVERED and EVENT_F_CONFIRMED in struct event's flags.
const (
	flagRecovered = 1
	flagConfirmed = 2
)

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
	if kind < KindTimewait || kind > maxKind {
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
		Confirmed: le.Uint32(raw[132:])&flagConfirmed != 0,
		Reason:    Reason(raw[136]),
		Substate:  Substate(raw[137]),
		Stack:     le.Uint64(raw[stackOffset:]),
	}
	if openNs != 0 && ts > openNs {
		e.Lifetime = time.Duration(ts - openNs)
	}
	copy(e.Comm[:], raw[100:116])
	copy(e.OpenerComm[:], raw[116:132])
	DecodeProc(raw[procOffset:procOffset+ProcSize], &e.Proc)

	family := le.Uint16(raw[60:])
	saddr := (*[16]byte)(raw[68:84])
	daddr := (*[16]byte)(raw[84:100])
	switch {
	case kind == KindStack:
		// About a process, not a connection: no addresses.
	case family == afInet:
		e.Saddr = netip.AddrFrom4([4]byte(saddr[:4]))
		e.Daddr = netip.AddrFrom4([4]byte(daddr[:4]))
	case family == afInet6:
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
