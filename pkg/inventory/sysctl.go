package inventory

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ParsePortRange parses net.ipv4.ip_local_port_range ("32768\t60999\n").
func ParsePortRange(s string) (PortSpan, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return PortSpan{}, fmt.Errorf("port range %q: want two ports", s)
	}
	lo, err := parsePort(f[0])
	if err != nil {
		return PortSpan{}, fmt.Errorf("port range %q: %w", s, err)
	}
	hi, err := parsePort(f[1])
	if err != nil {
		return PortSpan{}, fmt.Errorf("port range %q: %w", s, err)
	}
	if lo > hi {
		return PortSpan{}, fmt.Errorf("port range %q: low end above high end", s)
	}
	return PortSpan{Lo: lo, Hi: hi}, nil
}

// ParseReservedPorts parses net.ipv4.ip_local_reserved_ports ("" or
// "8080,9000-9010\n") into sorted spans, overlapping and adjacent ones
// merged.
func ParseReservedPorts(s string) ([]PortSpan, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var spans []PortSpan
	for item := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(item, "-")
		span := PortSpan{}
		var err error
		if span.Lo, err = parsePort(lo); err != nil {
			return nil, fmt.Errorf("reserved ports %q: %w", s, err)
		}
		span.Hi = span.Lo
		if isRange {
			if span.Hi, err = parsePort(hi); err != nil {
				return nil, fmt.Errorf("reserved ports %q: %w", s, err)
			}
			if span.Lo > span.Hi {
				return nil, fmt.Errorf("reserved ports %q: range %s runs backwards", s, item)
			}
		}
		spans = append(spans, span)
	}
	slices.SortFunc(spans, func(a, b PortSpan) int { return int(a.Lo) - int(b.Lo) })
	merged := spans[:1]
	for _, sp := range spans[1:] {
		last := &merged[len(merged)-1]
		if int(sp.Lo) <= int(last.Hi)+1 {
			last.Hi = max(last.Hi, sp.Hi)
			continue
		}
		merged = append(merged, sp)
	}
	return merged, nil
}

func parsePort(s string) (uint16, error) {
	// ParseUint alone would take "+1" and "0x1": the kernel writes digits.
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("port %q is not a decimal number", s)
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("port %q out of range", s)
	}
	return uint16(n), nil
}

// ParseNetstat reads the TcpExt counters from /proc/net/netstat: pairs of
// lines "Prefix: name name ..." and "Prefix: value value ...". Other
// prefixes (IpExt, MPTcpExt) are ignored; counters the kernel does not have
// are 0.
func ParseNetstat(r io.Reader) (Counters, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 8192), 1<<20)
	var names, values []string
	for sc.Scan() {
		prefix, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || prefix != "TcpExt" {
			continue
		}
		switch {
		case names == nil:
			names = strings.Fields(rest)
		case values == nil:
			values = strings.Fields(rest)
		default:
			return Counters{}, errors.New("netstat: more than two TcpExt lines")
		}
	}
	if err := sc.Err(); err != nil {
		return Counters{}, fmt.Errorf("netstat: %w", err)
	}
	if values == nil {
		return Counters{}, errors.New("netstat: no TcpExt names and values")
	}
	if len(names) != len(values) {
		return Counters{}, fmt.Errorf("netstat: %d TcpExt names but %d values", len(names), len(values))
	}
	var c Counters
	for i, name := range names {
		var dst *uint64
		switch name {
		case "TW":
			dst = &c.TW
		case "TWRecycled":
			dst = &c.TWRecycled
		case "TWKilled":
			dst = &c.TWKilled
		case "TCPTimeWaitOverflow":
			dst = &c.TCPTimeWaitOverflow
		default:
			continue
		}
		n, err := strconv.ParseUint(values[i], 10, 64)
		if err != nil {
			return Counters{}, fmt.Errorf("netstat: TcpExt %s = %q is not a counter", name, values[i])
		}
		*dst = n
	}
	return c, nil
}

// ReadSysctls reads the settings of the calling thread's network
// namespace (/proc/sys/net is the namespace of the thread that reads it).
func ReadSysctls() (Sysctls, error) {
	var s Sysctls
	raw, err := readProc("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return s, err
	}
	if s.PortRange, err = ParsePortRange(raw); err != nil {
		return s, err
	}
	if raw, err = readProc("/proc/sys/net/ipv4/ip_local_reserved_ports"); err != nil {
		return s, err
	}
	if s.Reserved, err = ParseReservedPorts(raw); err != nil {
		return s, err
	}
	ints := []struct {
		name string
		dst  *int
	}{
		{"tcp_tw_reuse", &s.TwReuse},
		{"tcp_max_tw_buckets", &s.MaxTwBuckets},
		{"tcp_timestamps", &s.Timestamps},
	}
	for _, i := range ints {
		if *i.dst, err = readIntSysctl(i.name); err != nil {
			return s, err
		}
	}
	fin, err := readIntSysctl("tcp_fin_timeout")
	if err != nil {
		return s, err
	}
	s.FinTimeout = time.Duration(fin) * time.Second
	// Before 6.14 the delay was not tunable: about a second.
	s.TwReuseDelay = time.Second
	switch delay, err := readIntSysctl("tcp_tw_reuse_delay"); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return s, err
	default:
		s.TwReuseDelay = time.Duration(delay) * time.Millisecond
		s.TwReuseDelayKnown = true
	}
	return s, nil
}

func readIntSysctl(name string) (int, error) {
	path := "/proc/sys/net/ipv4/" + name
	raw, err := readProc(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(raw))
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a number", path, raw)
	}
	return n, nil
}

func readProc(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err // *PathError names the file
	}
	return string(b), nil
}

// ReadCounters reads the TcpExt counters of the calling thread's network
// namespace: /proc/net is the process's (its main thread's) namespace,
// thread-self the thread's.
func ReadCounters() (Counters, error) {
	f, err := os.Open("/proc/thread-self/net/netstat")
	if err != nil {
		return Counters{}, err
	}
	defer f.Close()
	return ParseNetstat(f)
}

// readSockstat reads the TCP line of the calling thread's namespace's
// sockstat: the sockets its hash tables hold and its timewait sockets.
func readSockstat() (inuse, tw int, err error) {
	b, err := os.ReadFile("/proc/thread-self/net/sockstat")
	if err != nil {
		return 0, 0, err
	}
	return parseSockstat(string(b))
}

// parseSockstat finds "TCP: inuse N orphan N tw N ..." in a sockstat file.
func parseSockstat(s string) (inuse, tw int, err error) {
	for line := range strings.Lines(s) {
		rest, ok := strings.CutPrefix(line, "TCP: ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		inuse, tw = -1, -1
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.Atoi(f[i+1])
			if err != nil || v < 0 {
				return 0, 0, fmt.Errorf("sockstat: TCP %s %q is not a count", f[i], f[i+1])
			}
			switch f[i] {
			case "inuse":
				inuse = v
			case "tw":
				tw = v
			}
		}
		if inuse < 0 || tw < 0 {
			return 0, 0, fmt.Errorf("sockstat: no inuse and tw in %q", strings.TrimSpace(line))
		}
		return inuse, tw, nil
	}
	return 0, 0, errors.New("sockstat: no TCP line")
}
