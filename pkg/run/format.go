package run

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Numbers, durations and strings as the reports show them.

func fmtUint(n uint64) string {
	s := strconv.FormatUint(n, 10)
	return group(s)
}

func fmtInt(n int) string { return fmtInt64(int64(n)) }

func fmtInt64(n int64) string {
	if n < 0 {
		return "-" + group(strconv.FormatUint(uint64(-(n+1))+1, 10))
	}
	return group(strconv.FormatInt(n, 10))
}

// group puts thousands separators into a string of digits.
func group(s string) string {
	if len(s) <= 3 {
		return s
	}
	var b strings.Builder
	head := len(s) % 3
	if head > 0 {
		b.WriteString(s[:head])
	}
	for i := head; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

// fmtNum formats a value: whole numbers with separators, others with up
// to four significant digits.
func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case math.IsInf(v, 1):
		return "∞"
	case math.IsInf(v, -1):
		return "-∞"
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return fmtInt64(int64(v))
	case math.Abs(v) >= 1000 && math.Abs(v) < 1e14:
		// Tenths, with separators.
		t := int64(math.Round(math.Abs(v) * 10))
		s := fmtInt64(t/10) + "." + strconv.FormatInt(t%10, 10)
		if v < 0 {
			s = "-" + s
		}
		return s
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// fmtRate formats a rate per second: whole above 100, one decimal above
// 10, two below.
func fmtRate(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return fmtNum(v)
	case math.Abs(v) >= 100:
		return fmtNum(math.Round(v))
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func fmtPct(f float64) string {
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return "—"
	case f >= 0.1:
		return strconv.FormatFloat(f*100, 'f', 0, 64) + "%"
	}
	return strconv.FormatFloat(f*100, 'f', 1, 64) + "%"
}

func fmtMs(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmtNum(v)
	}
	if v >= 1000 {
		return strconv.FormatFloat(v/1000, 'f', 2, 64) + " s"
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " ms"
}

func fmtDuration(s float64) string {
	switch {
	case math.IsNaN(s) || math.IsInf(s, 0) || s < 0:
		return "—"
	case s < 60:
		return strconv.FormatFloat(s, 'f', 1, 64) + " s"
	case s < 3600:
		m := math.Floor(s / 60)
		return fmt.Sprintf("%.0f min %.0f s", m, math.Floor(s-60*m))
	case s < 1e12:
		h := math.Floor(s / 3600)
		m := math.Floor((s - 3600*h) / 60)
		return fmt.Sprintf("%.0f h %.0f min", h, m)
	}
	return strconv.FormatFloat(s, 'g', 3, 64) + " s"
}

func portsString(n int) string {
	if n <= 0 {
		return "unknown"
	}
	return fmtInt(n)
}

func ceilingRate(d *Destination) string {
	if d.PortsUsable <= 0 {
		return "—"
	}
	return fmtRate(d.CeilingPerS)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmtInt(n) + " " + many
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func finiteOr(v, def float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return def
	}
	return v
}

func destString(a netip.Addr, port uint16) string {
	if !a.IsValid() {
		return "?:" + strconv.Itoa(int(port))
	}
	return netip.AddrPortFrom(a, port).String()
}

// truncate cuts s to n runes, marking the cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// clean makes s safe to show as text: bytes that are not UTF-8 become
// \xNN, control characters \xNN or \uNNNN, and so do the invisible
// characters that reorder text (bidirectional overrides and isolates), so
// that a process name cannot hide or disguise itself. HTML escaping is
// html/template's, afterwards.
func clean(s string) string {
	ok := true
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) || bidi(r) {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x80 && unicode.IsControl(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unicode.IsControl(r) || bidi(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func bidi(r rune) bool {
	return r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 ||
		r == 0x200e || r == 0x200f || r == 0x061c
}

// commandLine is the command as the page shows it: each argument
// cleaned, then quoted as the text report quotes it.
func commandLine(argv []string) string {
	shown := make([]string, len(argv))
	for i, a := range argv {
		shown[i] = clean(a)
	}
	return quoteArgv(shown)
}
