package event

import (
	"io"
	"net/netip"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"
)

// Column widths. They fit IPv4 endpoints and every common value exactly;
// a longer value (an IPv6 endpoint, an escaped comm) pushes the rest of its
// line right instead of being cut, because a truncated address is wrong.
const (
	widthTime  = len("15:04:05.000")
	widthEvent = len("timewait_overflow")
	widthPID   = 7 // pid_max is at most 2^22
	widthComm  = 15
	widthNetns = 10 // inode numbers are uint32
	widthAddr  = len("255.255.255.255:65535")
)

// TableWriter writes events as fixed-width columns for a terminal.
//
// Each line is assembled in an internal buffer and handed to the underlying
// writer with a single Write, so a reader at the other end of a pipe never
// sees half a line and nothing waits for a flush: wrap w in a bufio.Writer
// only if you flush it yourself. Once the buffer has grown to fit a line,
// writing does not allocate. A TableWriter is not safe for concurrent use.
type TableWriter struct {
	w   io.Writer
	buf []byte
	loc *time.Location // time.Local; tests pin it
}

// NewTableWriter returns a TableWriter that writes to w.
func NewTableWriter(w io.Writer) *TableWriter {
	return &TableWriter{w: w, buf: make([]byte, 0, 256), loc: time.Local}
}

// WriteHeader writes the column titles.
func (t *TableWriter) WriteHeader() error {
	b := t.buf[:0]
	b = appendCell(b, "TIME", widthTime)
	b = appendCell(b, "EVENT", widthEvent)
	b = appendCell(b, "PID", widthPID)
	b = appendCell(b, "COMM", widthComm)
	b = appendCell(b, "NETNS", widthNetns)
	b = appendCell(b, "SOURCE", widthAddr)
	b = appendCell(b, "DESTINATION", widthAddr)
	b = append(b, "DETAIL\n"...)
	return t.flush(b)
}

// Write writes one event as one line. TIME is local time of day; DETAIL
// holds the kind-specific fields: for a timewait
//
//	role=client opener=1234/curl life=12.3ms tx=100 rx=2000
//
// ("?" where a value is not known) and for the errors the errno's name.
func (t *TableWriter) Write(e *Event) error { return t.WriteOwned(e, "") }

// WriteOwned is Write, with DETAIL ending in "in OWNER" when owner (what
// owns the process: a pod, a container, a unit; printable, escaped by
// the caller) is not "".
func (t *TableWriter) WriteOwned(e *Event, owner string) error {
	b := t.buf[:0]

	start := len(b)
	b = e.Time.In(t.loc).AppendFormat(b, "15:04:05.000")
	b = pad(b, start, widthTime)

	b = appendCell(b, e.Kind.String(), widthEvent)

	start = len(b)
	b = strconv.AppendUint(b, uint64(e.PID), 10)
	b = pad(b, start, widthPID)

	start = len(b)
	b = appendEscapedComm(b, &e.Comm)
	b = pad(b, start, widthComm)

	start = len(b)
	b = strconv.AppendUint(b, uint64(e.Netns), 10)
	b = pad(b, start, widthNetns)

	start = len(b)
	b = appendSource(b, e)
	b = pad(b, start, widthAddr)

	start = len(b)
	b = appendEndpoint(b, e.Daddr, e.Dport)
	b = pad(b, start, widthAddr)

	b = appendDetail(b, e)
	if owner != "" {
		b = append(b, " in "...)
		b = append(b, owner...)
	}
	// An unknown kind has no DETAIL: leave no trailing blanks behind.
	for len(b) > 0 && b[len(b)-1] == ' ' {
		b = b[:len(b)-1]
	}
	return t.flush(append(b, '\n'))
}

// appendSource is the SADDR cell: a connect() that failed before any
// bind has no source address, and maybe no port either.
func appendSource(b []byte, e *Event) []byte {
	if e.Kind != KindConnectError || !e.Saddr.IsUnspecified() {
		return appendEndpoint(b, e.Saddr, e.Sport)
	}
	if e.Sport == 0 {
		return append(b, '-')
	}
	b = append(b, "*:"...)
	return strconv.AppendUint(b, uint64(e.Sport), 10)
}

// appendDetail is the DETAIL cell, by kind.
func appendDetail(b []byte, e *Event) []byte {
	switch e.Kind {
	case KindTimewait, KindOverflow, KindTimewaitEnd:
		b = append(b, "role="...)
		b = append(b, e.Role.String()...)
		b = appendOpener(b, " opener=", e)
		if e.Kind == KindTimewaitEnd {
			b = append(b, " reason="...)
			b = append(b, e.Reason.String()...)
		}
		b = appendAge(b, " life=", e.Lifetime)
		if e.Kind == KindTimewaitEnd {
			return appendSubstate(b, e.Substate)
		}
		b = append(b, " tx="...)
		b = strconv.AppendUint(b, e.BytesSent, 10)
		b = append(b, " rx="...)
		b = strconv.AppendUint(b, e.BytesRecv, 10)
		if e.Recovered {
			b = append(b, " recovered"...)
		}
		return appendSubstate(b, e.Substate)
	case KindReuse:
		b = appendOpener(b, "previous=", e)
		return appendAge(b, " age=", e.Lifetime)
	case KindConnectError, KindBindError:
		return appendErrno(b, e.Errno)
	}
	return b
}

// appendOpener appends label and pid/comm of the process that opened the
// connection, "?" when it is not known.
func appendOpener(b []byte, label string, e *Event) []byte {
	b = append(b, label...)
	if e.OpenerPID == 0 {
		return append(b, '?')
	}
	b = strconv.AppendUint(b, uint64(e.OpenerPID), 10)
	b = append(b, '/')
	return appendEscapedComm(b, &e.OpenerComm)
}

// appendAge appends label and a lifetime, "?" when it is not known.
func appendAge(b []byte, label string, d time.Duration) []byte {
	b = append(b, label...)
	if d <= 0 {
		return append(b, '?')
	}
	return appendLifetime(b, d)
}

// appendSubstate notes a timewait socket that stands for FIN_WAIT2 (an
// orphan's short wait), the exception; TIME_WAIT goes without saying.
func appendSubstate(b []byte, s Substate) []byte {
	if s == SubstateFinWait2 {
		b = append(b, " substate=FIN_WAIT2"...)
	}
	return b
}

func (t *TableWriter) flush(b []byte) error {
	t.buf = b // keep any growth for the next line
	_, err := t.w.Write(b)
	return err
}

func appendCell(b []byte, s string, width int) []byte {
	start := len(b)
	b = append(b, s...)
	return pad(b, start, width)
}

// pad fills the cell that began at b[start] with spaces up to width
// characters, plus the one space that separates it from the next cell.
func pad(b []byte, start, width int) []byte {
	for n := utf8.RuneCount(b[start:]); n < width; n++ {
		b = append(b, ' ')
	}
	return append(b, ' ')
}

// appendEndpoint appends addr:port, [addr]:port for IPv6, or "-" when the
// address is not known (a bind() has no destination).
func appendEndpoint(b []byte, a netip.Addr, port uint16) []byte {
	if !a.IsValid() {
		return append(b, '-')
	}
	if a.Is6() {
		b = append(b, '[')
	}
	b = appendAddr(b, a, appendEscaped)
	if a.Is6() {
		b = append(b, ']')
	}
	b = append(b, ':')
	return strconv.AppendUint(b, uint64(port), 10)
}

// appendLifetime writes d in the unit a person would use for it: 12.3ms
// reads better than 12345µs, 1m2s better than 62000ms.
func appendLifetime(b []byte, d time.Duration) []byte {
	switch {
	case d < time.Second:
		b = strconv.AppendFloat(b, float64(d)/float64(time.Millisecond), 'f', 1, 64)
		return append(b, "ms"...)
	case d < time.Minute:
		b = strconv.AppendFloat(b, float64(d)/float64(time.Second), 'f', 2, 64)
		return append(b, 's')
	}
	d = d.Round(time.Second)
	if h := d / time.Hour; h > 0 {
		b = strconv.AppendInt(b, int64(h), 10)
		b = append(b, 'h')
	}
	b = strconv.AppendInt(b, int64(d%time.Hour/time.Minute), 10)
	b = append(b, 'm')
	b = strconv.AppendInt(b, int64(d%time.Minute/time.Second), 10)
	return append(b, 's')
}

// EscapeComm returns a kernel comm (up to its first NUL) in a form that is
// safe to print on a terminal.
//
// Any process can set its own comm to anything (prctl(PR_SET_NAME)), so an
// unescaped comm could clear the screen, retitle the window or hide other
// lines. Printable UTF-8 is kept as is; every other byte, including all
// control characters, DEL and invalid UTF-8, becomes \xNN, and a backslash
// becomes \\ so the result can be read back unambiguously.
func EscapeComm(c *[16]byte) string {
	var buf [4 * len(c)]byte
	return string(appendEscapedComm(buf[:0], c))
}

func appendEscapedComm(b []byte, c *[16]byte) []byte {
	return appendEscaped(b, commBytes(c))
}

func appendEscaped(b, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '\\':
				b = append(b, `\\`...)
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if (r == utf8.RuneError && size == 1) || !unicode.IsPrint(r) {
			// Escape every byte of the sequence: a C1 control (U+009B is
			// CSI to some terminals) or a bidi override must not act.
			for _, c := range s[i : i+size] {
				b = append(b, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
			}
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return b
}
