package doctor

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/twtrace/twtrace/pkg/headroom"
	"github.com/twtrace/twtrace/pkg/inventory"
	"github.com/twtrace/twtrace/pkg/report"
)

// Warning thresholds.
const (
	// TinyRangePorts: fewer usable ports than this is a tiny range. At
	// 10,000 ports one destination sustains 166 new connections/s without
	// reuse, a rate one client that does not reuse its connections
	// reaches easily; the default range has 28,232.
	TinyRangePorts = 10000
	// ReservedRangePct: reserved ports taking this share of the range or
	// more (in percent) is flagged. The default reserves none; a few
	// service ports are well under it.
	ReservedRangePct = 10
)

// Warning ids.
const (
	WarnTwRecycle     = "tw_recycle_present"
	WarnReuseDisabled = "tw_reuse_disabled"
	WarnTimestampsOff = "timestamps_off"
	WarnTinyRange     = "tiny_range"
	WarnReservedLarge = "reserved_large"
	WarnBucketsSmall  = "tw_buckets_below_usable"
	WarnOverflowSeen  = "tw_overflow_seen"
)

const (
	sysctlPrefix = "net.ipv4."
	// unknownValue stands for a sysctl this kernel does not have, as
	// report.Spans writes an empty list.
	unknownValue       = "-"
	bindListenDeducted = "held by bind()/listen()"
)

// explainSysctls gives each exhaustion sysctl its value and one sentence
// on what it means here.
func explainSysctls(sc *inventory.Sysctls, st *Settings, hr *headroom.Report) []Setting {
	var out []Setting
	add := func(name, value, meaning string) {
		out = append(out, Setting{Name: sysctlPrefix + name, Value: value, Meaning: meaning})
	}
	add("ip_local_port_range", fmt.Sprintf("%d-%d", st.PortRange[0], st.PortRange[1]), rangeMeaning(st))
	add("ip_local_reserved_ports", report.Spans(st.ReservedPorts), reservedMeaning(st))
	add("tcp_tw_reuse", strconv.Itoa(st.TwReuse), reuseMeaning(st))
	delay := fmt.Sprintf("%d ms", st.TwReuseDelayMs)
	delayMeaning := fmt.Sprintf("tcp_tw_reuse takes over a TIME_WAIT port once it is %s old", duration(reuseHold(st)))
	if !sc.TwReuseDelayKnown {
		delay = unknownValue
		delayMeaning = "not a sysctl before Linux 6.14: tcp_tw_reuse takes over a TIME_WAIT port once it is about 1 s old"
	}
	if reuseScope(st) == ReuseNone {
		delayMeaning += " (unused here: no reuse)"
	}
	add("tcp_tw_reuse_delay", delay, delayMeaning)
	add("tcp_max_tw_buckets", strconv.Itoa(st.MaxTwBuckets), bucketsMeaning(st, hr))
	add("tcp_fin_timeout", duration(time.Duration(st.FinTimeoutS*float64(time.Second))), fmt.Sprintf(
		"an orphaned FIN_WAIT2 (closed here, the peer's FIN not yet seen) holds its port at most %s; TIME_WAIT lasts 60 s whatever this says",
		duration(time.Duration(st.FinTimeoutS*float64(time.Second)))))
	add("tcp_timestamps", strconv.Itoa(st.Timestamps), timestampsMeaning(st.Timestamps))
	if st.TwRecyclePresent {
		add("tcp_tw_recycle", "present", "removed in Linux 4.12 because it drops connections from clients behind NAT: keep it 0")
	} else {
		add("tcp_tw_recycle", "absent", "removed in Linux 4.12 (it broke clients behind NAT): nothing to check")
	}
	return out
}

func rangeMeaning(st *Settings) string {
	var minus []string
	if st.ReservedInRange > 0 {
		minus = append(minus, thousands(st.ReservedInRange)+" reserved")
	}
	if st.BoundInRange != nil && *st.BoundInRange > 0 {
		minus = append(minus, thousands(*st.BoundInRange)+" "+bindListenDeducted)
	}
	s := thousands(st.RangePorts) + " ports"
	if len(minus) > 0 {
		s += ", minus " + strings.Join(minus, " and ") + " = " + thousands(st.Usable) + " usable"
	} else {
		s += ", all usable"
	}
	s += fmt.Sprintf(": at 60 s per TIME_WAIT, at most %s new connections/s to one destination",
		rate(float64(st.Usable)/headroom.TimewaitLen.Seconds()))
	if st.BoundInRange == nil {
		s += " (ports " + bindListenDeducted + " not counted: no socket scan)"
	}
	return s
}

func reservedMeaning(st *Settings) string {
	switch {
	case len(st.ReservedPorts) == 0:
		return "none: connect() may pick every port of the range"
	case st.ReservedInRange == 0:
		return "none of them in the range: no effect on connect()"
	}
	return fmt.Sprintf("connect() never picks these %s ports of the range (%s %% of it)",
		thousands(st.ReservedInRange), pct(100*float64(st.ReservedInRange)/float64(st.RangePorts)))
}

func reuseMeaning(st *Settings) string {
	var s string
	switch st.TwReuse {
	case 0:
		return "off: a port stays unusable toward its destination for the full 60 s of its TIME_WAIT"
	case 1:
		s = "on: connect() may take over a TIME_WAIT port toward the same destination once it is older than tcp_tw_reuse_delay"
	case 2:
		s = "loopback only (the default): connect() takes over TIME_WAIT ports toward 127.0.0.0/8 and ::1 only; other destinations wait the full 60 s"
	default:
		s = "on (any value but 0 and 2 acts as 1): connect() may take over a TIME_WAIT port toward the same destination"
	}
	if st.Timestamps == 0 {
		s += ", but tcp_timestamps=0, so it never applies"
	}
	return s
}

func bucketsMeaning(st *Settings, hr *headroom.Report) string {
	s := fmt.Sprintf("at most %s timewait sockets in the namespace; past that a closing connection skips TIME_WAIT (TCPTimeWaitOverflow)",
		thousands(st.MaxTwBuckets))
	if hr != nil && st.MaxTwBuckets > 0 {
		n := hr.Namespace.Timewait + hr.Namespace.FinWait2
		s += fmt.Sprintf("; %s held now (%s %%)", thousands(n), pct(100*float64(n)/float64(st.MaxTwBuckets)))
	}
	if st.MaxTwBuckets < st.Usable {
		s += fmt.Sprintf("; fewer than the %s usable ports, so one busy destination overflows it before its ports run out", thousands(st.Usable))
	}
	return s
}

func timestampsMeaning(v int) string {
	switch v {
	case 0:
		return "off: tcp_tw_reuse cannot take over any TIME_WAIT port (timestamps are what tell a new connection's segments from an old one's)"
	case 2:
		return "on, without random offsets: tcp_tw_reuse can take over TIME_WAIT ports that saw timestamps"
	}
	return "on: tcp_tw_reuse can take over TIME_WAIT ports that saw timestamps"
}

// explainCounters gives each TcpExt counter its meaning.
func explainCounters(c inventory.Counters) []Counter {
	overflow := "connections closed with no timewait socket because tcp_max_tw_buckets was full: none so far"
	if c.TCPTimeWaitOverflow > 0 {
		overflow = "connections closed with no timewait socket because tcp_max_tw_buckets was full: a late segment can reach a new connection on the same ports"
	}
	return []Counter{
		{"TW", c.TW, "timewait sockets created since the namespace was made (every TIME_WAIT, and orphaned FIN_WAIT2s when tcp_fin_timeout is over 4 s)"},
		{"TWRecycled", c.TWRecycled, "TIME_WAIT ports taken over by connect() (tcp_tw_reuse)"},
		{"TWKilled", c.TWKilled, "timewait sockets created with a timer of 4 s or less (short FIN_WAIT2 timeouts); not those an RST ends, which no counter shows"},
		{"TCPTimeWaitOverflow", c.TCPTimeWaitOverflow, overflow},
	}
}

// warnings flags the settings and counters that put connections at risk.
func warnings(st *Settings, c inventory.Counters) []Warning {
	out := []Warning{}
	add := func(id, format string, args ...any) {
		out = append(out, Warning{ID: id, Message: fmt.Sprintf(format, args...)})
	}
	if st.TwRecyclePresent {
		add(WarnTwRecycle, "net.ipv4.tcp_tw_recycle exists on this kernel: it was removed in Linux 4.12 because it drops connections from clients behind NAT; keep it 0")
	}
	if st.TwReuse == 0 {
		add(WarnReuseDisabled, "tcp_tw_reuse=0: connect() never takes over a TIME_WAIT port, not even toward loopback (the default, 2, does there): every port is held 60 s")
	}
	if st.Timestamps == 0 {
		add(WarnTimestampsOff, "tcp_timestamps=0: tcp_tw_reuse cannot work without TCP timestamps, and PAWS no longer guards against old duplicate segments")
	}
	if st.Usable < TinyRangePorts {
		add(WarnTinyRange, "only %s usable ports (fewer than %s): one destination sustains at most %s new connections/s without reuse; widen net.ipv4.ip_local_port_range",
			thousands(st.Usable), thousands(TinyRangePorts), rate(float64(st.Usable)/headroom.TimewaitLen.Seconds()))
	}
	if st.RangePorts > 0 && st.ReservedInRange*100 >= ReservedRangePct*st.RangePorts {
		add(WarnReservedLarge, "ip_local_reserved_ports takes %s of the range's %s ports (%s %%, %d %% or more): connect() never picks them",
			thousands(st.ReservedInRange), thousands(st.RangePorts), pct(100*float64(st.ReservedInRange)/float64(st.RangePorts)), ReservedRangePct)
	}
	if st.MaxTwBuckets < st.Usable {
		add(WarnBucketsSmall, "tcp_max_tw_buckets (%s) is below the usable ports (%s): past it timewait sockets are not kept (TCPTimeWaitOverflow), and a late segment of an old connection can reach a new one on the same ports",
			thousands(st.MaxTwBuckets), thousands(st.Usable))
	}
	if c.TCPTimeWaitOverflow > 0 {
		add(WarnOverflowSeen, "TCPTimeWaitOverflow is %s: connections have closed without TIME_WAIT because tcp_max_tw_buckets was full",
			thousands64(c.TCPTimeWaitOverflow))
	}
	return out
}

// thousands is n with a comma every three digits: 28,232.
func thousands(n int) string {
	if n < 0 {
		return "-" + thousands64(uint64(-n))
	}
	return thousands64(uint64(n))
}

func thousands64(n uint64) string {
	s := strconv.FormatUint(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// rate is a ceiling for a person: rounded down (it is an "at most") to
// three significant digits, whole numbers from 100 up.
func rate(x float64) string {
	switch {
	case x <= 0 || math.IsNaN(x) || math.IsInf(x, 0):
		return "0"
	case x >= 100:
		return thousands64(uint64(math.Floor(x)))
	}
	decimals := 2 - int(math.Floor(math.Log10(x)))
	scale := math.Pow10(decimals)
	// The nudge keeps 1.57 (a float a hair under it) from flooring to 1.56.
	return strconv.FormatFloat(math.Floor(x*scale+1e-9)/scale, 'f', decimals, 64)
}

// pct is a percentage with at most one decimal: "5", "0.8", "12.5", and
// "<0.1" for a share too small to show but not nothing.
func pct(x float64) string {
	if x > 0 && x < 0.05 {
		return "<0.1"
	}
	return strconv.FormatFloat(math.Round(x*10)/10, 'f', -1, 64)
}

// duration is "1 s", "60 s" or "500 ms".
func duration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%d s", d/time.Second)
	}
	return fmt.Sprintf("%d ms", d/time.Millisecond)
}
