package event

import (
	"net/netip"
	"strconv"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// AppendJSON appends e to dst as one JSON object followed by '\n' (JSON
// Lines) and returns the extended buffer.
//
// It is written by hand rather than with encoding/json so that a busy host,
// which can produce tens of thousands of events a second, costs no garbage:
// with a reused dst it does not allocate. Comm and OpenerComm come from the
// traced processes, so they are escaped such that the output is valid JSON
// whatever bytes they hold.
//
// Fields, in this order: time, event, pid, comm, ppid, leader_comm,
// exe_dev, exe_inode (Event.Proc: 0 and "" when not known), netns,
// cgroup_id, family, saddr, sport, daddr, dport; then
//   - timewait and timewait_overflow: role, opener_pid, opener_comm,
//     lifetime_ms, bytes_sent, bytes_received (and recovered: true);
//   - timewait_end: role, opener_pid, opener_comm, reason, lifetime_ms
//     (the timewait socket's);
//   - timewait_reuse: tid, previous_pid, previous_comm (whose timewait
//     socket was taken over), age_ms;
//   - connect_error and bind_error: errno, tid;
//   - in the precise tier, substate (TIME_WAIT or FIN_WAIT2) where known,
//     and confirmed: true.
func AppendJSON(dst []byte, e *Event) []byte {
	dst = append(dst, `{"time":"`...)
	dst = e.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","event":"`...)
	dst = append(dst, e.Kind.String()...)
	dst = append(dst, `","pid":`...)
	dst = strconv.AppendUint(dst, uint64(e.PID), 10)
	dst = append(dst, `,"comm":`...)
	dst = appendJSONComm(dst, &e.Comm)
	dst = appendJSONProc(dst, &e.Proc)
	dst = append(dst, `,"netns":`...)
	dst = strconv.AppendUint(dst, uint64(e.Netns), 10)
	dst = append(dst, `,"cgroup_id":`...)
	dst = strconv.AppendUint(dst, e.CgroupID, 10)
	if e.IPv6 {
		dst = append(dst, `,"family":"ipv6","saddr":`...)
	} else {
		dst = append(dst, `,"family":"ipv4","saddr":`...)
	}
	saddr := e.Saddr
	if e.Kind == KindConnectError && saddr.IsUnspecified() {
		// connect() on an unbound socket: the kernel never got as far as
		// picking a source, and 0.0.0.0 would read as a real address.
		saddr = netip.Addr{}
	}
	dst = appendJSONAddr(dst, saddr)
	dst = append(dst, `,"sport":`...)
	dst = strconv.AppendUint(dst, uint64(e.Sport), 10)
	dst = append(dst, `,"daddr":`...)
	dst = appendJSONAddr(dst, e.Daddr)
	dst = append(dst, `,"dport":`...)
	dst = strconv.AppendUint(dst, uint64(e.Dport), 10)
	dst = appendJSONDetail(dst, e)
	if s := e.Substate.String(); s != "" {
		dst = append(dst, `,"substate":"`...)
		dst = append(dst, s...)
		dst = append(dst, '"')
	}
	if e.Confirmed {
		dst = append(dst, `,"confirmed":true`...)
	}
	return append(dst, "}\n"...)
}

// appendJSONProc appends the identity fields of p, always present.
func appendJSONProc(dst []byte, p *Proc) []byte {
	dst = append(dst, `,"ppid":`...)
	dst = strconv.AppendUint(dst, uint64(p.PPID), 10)
	dst = append(dst, `,"leader_comm":`...)
	dst = appendJSONComm(dst, &p.Comm)
	dst = append(dst, `,"exe_dev":"`...)
	dst = p.appendExeDev(dst)
	dst = append(dst, `","exe_inode":`...)
	return strconv.AppendUint(dst, p.ExeIno, 10)
}

// appendJSONDetail appends the fields of e's kind.
func appendJSONDetail(dst []byte, e *Event) []byte {
	switch e.Kind {
	case KindTimewait, KindOverflow, KindTimewaitEnd:
		dst = append(dst, `,"role":"`...)
		dst = append(dst, e.Role.String()...)
		dst = append(dst, `","opener_pid":`...)
		dst = strconv.AppendUint(dst, uint64(e.OpenerPID), 10)
		dst = append(dst, `,"opener_comm":`...)
		dst = appendJSONComm(dst, &e.OpenerComm)
		if e.Kind == KindTimewaitEnd {
			dst = append(dst, `,"reason":"`...)
			dst = append(dst, e.Reason.String()...)
			dst = append(dst, '"')
		}
		dst = append(dst, `,"lifetime_ms":`...)
		dst = appendMillis(dst, e.Lifetime)
		if e.Kind == KindTimewaitEnd {
			break
		}
		dst = append(dst, `,"bytes_sent":`...)
		dst = strconv.AppendUint(dst, e.BytesSent, 10)
		dst = append(dst, `,"bytes_received":`...)
		dst = strconv.AppendUint(dst, e.BytesRecv, 10)
		if e.Recovered {
			dst = append(dst, `,"recovered":true`...)
		}
	case KindReuse:
		dst = append(dst, `,"tid":`...)
		dst = strconv.AppendUint(dst, uint64(e.TID), 10)
		dst = append(dst, `,"previous_pid":`...)
		dst = strconv.AppendUint(dst, uint64(e.OpenerPID), 10)
		dst = append(dst, `,"previous_comm":`...)
		dst = appendJSONComm(dst, &e.OpenerComm)
		dst = append(dst, `,"age_ms":`...)
		dst = appendMillis(dst, e.Lifetime)
	case KindConnectError, KindBindError:
		dst = append(dst, `,"errno":"`...)
		dst = appendErrno(dst, e.Errno)
		dst = append(dst, `","tid":`...)
		dst = strconv.AppendUint(dst, uint64(e.TID), 10)
	}
	return dst
}

// appendMillis appends d in milliseconds, or null when it is not known.
func appendMillis(dst []byte, d time.Duration) []byte {
	if d <= 0 {
		return append(dst, "null"...) // unknown: see Event.Lifetime
	}
	return strconv.AppendFloat(dst, float64(d)/1e6, 'f', 3, 64)
}

// ErrnoName returns the symbolic name of errno ("EADDRNOTAVAIL", what
// people search for, where syscall.Errno.Error gives a sentence), or its
// decimal number when it has none.
func ErrnoName(errno syscall.Errno) string {
	if name := unix.ErrnoName(errno); name != "" {
		return name
	}
	return strconv.FormatUint(uint64(errno), 10)
}

// appendErrno is ErrnoName without the allocation FormatUint makes for
// unexpected numbers.
func appendErrno(dst []byte, errno syscall.Errno) []byte {
	if name := unix.ErrnoName(errno); name != "" {
		return append(dst, name...)
	}
	return strconv.AppendUint(dst, uint64(errno), 10)
}

// commBytes returns a kernel comm up to its first NUL, without copying.
func commBytes(c *[16]byte) []byte {
	n := 0
	for n < len(c) && c[n] != 0 {
		n++
	}
	return c[:n]
}

func appendJSONComm(dst []byte, c *[16]byte) []byte {
	dst = append(dst, '"')
	dst = appendJSONChars(dst, commBytes(c))
	return append(dst, '"')
}

// appendJSONAddr appends a as a JSON string, "" when a is the zero Addr.
func appendJSONAddr(dst []byte, a netip.Addr) []byte {
	dst = append(dst, '"')
	dst = appendAddr(dst, a, appendJSONChars)
	return append(dst, '"')
}

// appendAddr appends a, its zone (if any) escaped by esc: Decode never
// sets a zone, but an Event built elsewhere may carry any string there.
func appendAddr(dst []byte, a netip.Addr, esc func(dst, s []byte) []byte) []byte {
	zone := a.Zone()
	if zone == "" {
		return a.AppendTo(dst)
	}
	dst = a.WithZone("").AppendTo(dst)
	dst = append(dst, '%')
	return esc(dst, []byte(zone))
}

const hexDigits = "0123456789abcdef"

// appendJSONChars appends s escaped for use inside a JSON string.
//
// Invalid UTF-8 becomes \ufffd, one per bad byte, as encoding/json does, so
// the output is valid JSON for any input. Besides what JSON requires, DEL,
// the C1 controls (U+0080-U+009F) and U+2028/U+2029 are escaped too: a
// terminal that shows `tail -f` of the file must not act on a comm chosen by
// the traced process, and JavaScript consumers choke on the last two.
func appendJSONChars(dst, s []byte) []byte {
	start := 0 // s[start:i] is safe and not yet copied
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != 0x7f {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, `\n`...)
			case '\r':
				dst = append(dst, `\r`...)
			case '\t':
				dst = append(dst, `\t`...)
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r <= 0x9f: // C1 control
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xf])
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\u202`...)
			dst = append(dst, hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(dst, s[start:]...)
}
