package doctor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/pkg/inventory"
	"github.com/twtrace/twtrace/pkg/tracer"
)

// defaults are a fresh namespace's sysctls on Linux 6.18.
func defaults() inventory.Sysctls {
	return inventory.Sysctls{
		PortRange: inventory.PortSpan{Lo: 32768, Hi: 60999},
		TwReuse:   2, TwReuseDelay: time.Second, TwReuseDelayKnown: true,
		MaxTwBuckets: 131072, FinTimeout: 60 * time.Second, Timestamps: 1,
	}
}

// fromProc is a namespace read from /proc: no scan.
func fromProc(sc inventory.Sysctls) *NamespaceReading {
	return &NamespaceReading{Ref: inventory.NamespaceRef{Inode: 4026531833},
		NS: &inventory.Namespace{Sysctls: sc}, NoScan: "test"}
}

// scanned is a namespace read by the iterator, with these sockets.
func scanned(sc inventory.Sysctls, socks ...inventory.Socket) *NamespaceReading {
	nr := fromProc(sc)
	nr.NS.Sockets, nr.Scanned, nr.NoScan = socks, true, ""
	return nr
}

func explain(nr *NamespaceReading) (Namespace, []Warning) { return explainNamespace(nr) }

func warningIDs(ws []Warning) []string {
	ids := []string{}
	for _, w := range ws {
		ids = append(ids, w.ID)
	}
	return ids
}

func sysctl(t *testing.T, n Namespace, name string) Setting {
	t.Helper()
	for _, s := range n.Sysctls {
		if s.Name == "net.ipv4."+name {
			return s
		}
	}
	t.Fatalf("no %s in %+v", name, n.Sysctls)
	return Setting{}
}

// The default range: 28,232 ports, every one usable, 470 connections/s.
func TestDefaultRangeExplained(t *testing.T) {
	n, ws := explain(fromProc(defaults()))
	if len(ws) != 0 {
		t.Errorf("warnings %v on the defaults, want none", warningIDs(ws))
	}
	r := sysctl(t, n, "ip_local_port_range")
	if r.Value != "32768-60999" {
		t.Errorf("value %q", r.Value)
	}
	want := "28,232 ports, all usable: at 60 s per TIME_WAIT, at most 470 new connections/s to one destination (ports held by bind()/listen() not counted: no socket scan)"
	if r.Meaning != want {
		t.Errorf("meaning\n %q, want\n %q", r.Meaning, want)
	}
	if s := n.Settings; s.RangePorts != 28232 || s.ReservedInRange != 0 || s.BoundInRange != nil || s.Usable != 28232 {
		t.Errorf("settings %+v", s)
	}
	if n.Source != "proc" || n.Timewait != nil || n.LeastHeadroom != nil {
		t.Errorf("a namespace read from /proc: source %q, timewait %v, least headroom %v", n.Source, n.Timewait, n.LeastHeadroom)
	}
}

// The brief's example: 5 reserved ports in the default range.
func TestReservedPortsExplained(t *testing.T) {
	sc := defaults()
	sc.Reserved = []inventory.PortSpan{{Lo: 8080, Hi: 8080}, {Lo: 40000, Hi: 40004}}
	n, _ := explain(fromProc(sc))
	if got, want := sysctl(t, n, "ip_local_port_range").Meaning,
		"28,232 ports, minus 5 reserved = 28,227 usable: at 60 s per TIME_WAIT, at most 470 new connections/s to one destination (ports held by bind()/listen() not counted: no socket scan)"; got != want {
		t.Errorf("range meaning\n %q, want\n %q", got, want)
	}
	res := sysctl(t, n, "ip_local_reserved_ports")
	if res.Value != "8080,40000-40004" || res.Meaning != "connect() never picks these 5 ports of the range (<0.1 % of it)" {
		t.Errorf("reserved = %+v", res)
	}

	sc.Reserved = []inventory.PortSpan{{Lo: 8080, Hi: 8080}}
	n, _ = explain(fromProc(sc))
	if got := sysctl(t, n, "ip_local_reserved_ports").Meaning; got != "none of them in the range: no effect on connect()" {
		t.Errorf("reserved outside the range: %q", got)
	}
}

// A scan counts the ports bind()/listen() hold: the small range of the
// privileged tests, 100 ports, 5 reserved, 1 listener = 94 usable.
func TestScanDeductsBoundPorts(t *testing.T) {
	sc := defaults()
	sc.PortRange = inventory.PortSpan{Lo: 40000, Hi: 40099}
	sc.Reserved = []inventory.PortSpan{{Lo: 40010, Hi: 40014}}
	sc.TwReuse = 0
	lo := netip.MustParseAddr("127.0.0.1")
	n, ws := explain(scanned(sc, inventory.Socket{State: inventory.Listen, Substate: inventory.Listen, Saddr: lo, Sport: 40050, Bound: true}))
	s := n.Settings
	if s.RangePorts != 100 || s.ReservedInRange != 5 || s.BoundInRange == nil || *s.BoundInRange != 1 || s.Usable != 94 {
		t.Fatalf("settings %+v, want 100 ports, 5 reserved, 1 bound, 94 usable", s)
	}
	if got, want := sysctl(t, n, "ip_local_port_range").Meaning,
		"100 ports, minus 5 reserved and 1 held by bind()/listen() = 94 usable: at 60 s per TIME_WAIT, at most 1.56 new connections/s to one destination"; got != want {
		t.Errorf("range meaning\n %q, want\n %q", got, want)
	}
	if n.Ceiling.PerS != 1.57 || n.Ceiling.Reuse != ReuseNone || n.Ceiling.WithReusePerS != nil {
		t.Errorf("ceiling %+v, want 1.57/s, no reuse", n.Ceiling)
	}
	if !slices.Equal(warningIDs(ws), []string{WarnReuseDisabled, WarnTinyRange}) {
		t.Errorf("warnings %v, want reuse disabled and tiny range", warningIDs(ws))
	}
}

func TestReuseExplained(t *testing.T) {
	cases := []struct {
		reuse, timestamps int
		meaning           string
		scope             string
	}{
		{0, 1, "off: a port stays unusable toward its destination for the full 60 s of its TIME_WAIT", ReuseNone},
		{1, 1, "on: connect() may take over a TIME_WAIT port toward the same destination once it is older than tcp_tw_reuse_delay", ReuseAll},
		{2, 1, "loopback only (the default): connect() takes over TIME_WAIT ports toward 127.0.0.0/8 and ::1 only; other destinations wait the full 60 s", ReuseLoopback},
		{2, 2, "loopback only (the default): connect() takes over TIME_WAIT ports toward 127.0.0.0/8 and ::1 only; other destinations wait the full 60 s", ReuseLoopback},
		{1, 0, "on: connect() may take over a TIME_WAIT port toward the same destination once it is older than tcp_tw_reuse_delay, but tcp_timestamps=0, so it never applies", ReuseNone},
	}
	for _, c := range cases {
		sc := defaults()
		sc.TwReuse, sc.Timestamps = c.reuse, c.timestamps
		n, _ := explain(fromProc(sc))
		if got := sysctl(t, n, "tcp_tw_reuse"); got.Value != fmt.Sprint(c.reuse) || got.Meaning != c.meaning {
			t.Errorf("tcp_tw_reuse=%d timestamps=%d: %+v, want %q", c.reuse, c.timestamps, got, c.meaning)
		}
		if n.Ceiling.Reuse != c.scope {
			t.Errorf("tcp_tw_reuse=%d timestamps=%d: reuse scope %q, want %q", c.reuse, c.timestamps, n.Ceiling.Reuse, c.scope)
		}
	}
}

// The ceiling: usable / 60 s; with reuse, usable / the reuse delay (at
// most 60 s), toward the destinations reuse covers.
func TestCeiling(t *testing.T) {
	sc := defaults()
	n, _ := explain(fromProc(sc))
	c := n.Ceiling
	if c.PerS != 470.53 || c.WithReusePerS == nil || *c.WithReusePerS != 28232 || c.Reuse != ReuseLoopback {
		t.Errorf("default ceiling %+v", c)
	}
	want := "28,232 usable ports / 60 s per TIME_WAIT = at most 470 new connections/s to one destination; with tcp_tw_reuse a timewait port is taken over after 1 s: at most 28,232/s toward loopback destinations only (tcp_tw_reuse=2); others stay at the first figure"
	if c.Explanation != want {
		t.Errorf("explanation\n %q, want\n %q", c.Explanation, want)
	}

	sc.TwReuse, sc.TwReuseDelay = 1, 500*time.Millisecond
	n, _ = explain(fromProc(sc))
	if c := n.Ceiling; c.WithReusePerS == nil || *c.WithReusePerS != 56464 || !strings.HasSuffix(c.Explanation, "after 500 ms: at most 56,464/s toward every destination") {
		t.Errorf("reuse 1, delay 500 ms: %+v", c)
	}

	sc.TwReuseDelay = 90 * time.Second // longer than TIME_WAIT itself
	n, _ = explain(fromProc(sc))
	if c := n.Ceiling; c.WithReusePerS == nil || *c.WithReusePerS != 470.53 {
		t.Errorf("a reuse delay over 60 s holds a port 60 s: %+v", c)
	}

	sc.TwReuse = 0
	n, _ = explain(fromProc(sc))
	if c := n.Ceiling; c.WithReusePerS != nil || !strings.HasSuffix(c.Explanation, "; tcp_tw_reuse=0: no reuse toward any destination") {
		t.Errorf("reuse 0: %+v", c)
	}
}

// Every warning at its threshold: the first value that warns and the
// last that does not.
func TestWarningThresholds(t *testing.T) {
	type mod func(*inventory.Sysctls, *NamespaceReading)
	rangeOf := func(ports int) mod {
		return func(sc *inventory.Sysctls, _ *NamespaceReading) {
			sc.PortRange = inventory.PortSpan{Lo: 30000, Hi: uint16(30000 + ports - 1)}
		}
	}
	reserve := func(ports int) mod {
		return func(sc *inventory.Sysctls, _ *NamespaceReading) {
			sc.Reserved = []inventory.PortSpan{{Lo: 32768, Hi: uint16(32768 + ports - 1)}}
		}
	}
	cases := []struct {
		name string
		mod  mod
		want string // the warning expected, "" for none
	}{
		{"usable 9,999 is tiny", rangeOf(9999), WarnTinyRange},
		{"usable 10,000 is not", rangeOf(10000), ""},
		{"reserved 2,824 of 28,232 is 10.003 %", reserve(2824), WarnReservedLarge},
		{"reserved 2,823 of 28,232 is 9.999 %", reserve(2823), ""},
		{"tcp_max_tw_buckets one below the usable ports", func(sc *inventory.Sysctls, _ *NamespaceReading) { sc.MaxTwBuckets = 28231 }, WarnBucketsSmall},
		{"tcp_max_tw_buckets equal to the usable ports", func(sc *inventory.Sysctls, _ *NamespaceReading) { sc.MaxTwBuckets = 28232 }, ""},
		{"tcp_tw_reuse 0", func(sc *inventory.Sysctls, _ *NamespaceReading) { sc.TwReuse = 0 }, WarnReuseDisabled},
		{"tcp_tw_reuse 1", func(sc *inventory.Sysctls, _ *NamespaceReading) { sc.TwReuse = 1 }, ""},
		{"tcp_timestamps 0", func(sc *inventory.Sysctls, _ *NamespaceReading) { sc.Timestamps = 0 }, WarnTimestampsOff},
		{"tcp_timestamps 2", func(sc *inventory.Sysctls, _ *NamespaceReading) { sc.Timestamps = 2 }, ""},
		{"tcp_tw_recycle present", func(_ *inventory.Sysctls, nr *NamespaceReading) { nr.TwRecyclePresent = true }, WarnTwRecycle},
		{"one overflow", func(_ *inventory.Sysctls, nr *NamespaceReading) { nr.NS.Counters.TCPTimeWaitOverflow = 1 }, WarnOverflowSeen},
	}
	for _, c := range cases {
		sc := defaults()
		nr := fromProc(sc)
		c.mod(&nr.NS.Sysctls, nr)
		_, ws := explain(nr)
		var want []string
		if c.want != "" {
			want = []string{c.want}
		}
		if got := warningIDs(ws); !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("%s: warnings %v, want %v", c.name, got, want)
		}
	}
	// A bound port counts: 10,001 ports with 2 listeners in the range are
	// 9,999 usable.
	sc := defaults()
	sc.PortRange = inventory.PortSpan{Lo: 30000, Hi: 40000}
	lo := netip.MustParseAddr("127.0.0.1")
	_, ws := explain(scanned(sc,
		inventory.Socket{State: inventory.Listen, Saddr: lo, Sport: 30001},
		inventory.Socket{State: inventory.Listen, Saddr: lo, Sport: 30002}))
	if got := warningIDs(ws); !slices.Equal(got, []string{WarnTinyRange}) {
		t.Errorf("10,001 ports less 2 listening: warnings %v, want tiny range", got)
	}
}

func TestWarningMessages(t *testing.T) {
	sc := defaults()
	sc.PortRange = inventory.PortSpan{Lo: 40000, Hi: 40099}
	sc.Reserved = []inventory.PortSpan{{Lo: 40000, Hi: 40019}}
	sc.TwReuse, sc.Timestamps, sc.MaxTwBuckets = 0, 0, 50
	nr := fromProc(sc)
	nr.TwRecyclePresent = true
	nr.NS.Counters.TCPTimeWaitOverflow = 1234
	_, ws := explain(nr)
	want := []Warning{
		{WarnTwRecycle, "net.ipv4.tcp_tw_recycle exists on this kernel: it was removed in Linux 4.12 because it drops connections from clients behind NAT; keep it 0"},
		{WarnReuseDisabled, "tcp_tw_reuse=0: connect() never takes over a TIME_WAIT port, not even toward loopback (the default, 2, does there): every port is held 60 s"},
		{WarnTimestampsOff, "tcp_timestamps=0: tcp_tw_reuse cannot work without TCP timestamps, and PAWS no longer guards against old duplicate segments"},
		{WarnTinyRange, "only 80 usable ports (fewer than 10,000): one destination sustains at most 1.33 new connections/s without reuse; widen net.ipv4.ip_local_port_range"},
		{WarnReservedLarge, "ip_local_reserved_ports takes 20 of the range's 100 ports (20 %, 10 % or more): connect() never picks them"},
		{WarnBucketsSmall, "tcp_max_tw_buckets (50) is below the usable ports (80): past it timewait sockets are not kept (TCPTimeWaitOverflow), and a late segment of an old connection can reach a new one on the same ports"},
		{WarnOverflowSeen, "TCPTimeWaitOverflow is 1,234: connections have closed without TIME_WAIT because tcp_max_tw_buckets was full"},
	}
	if !slices.Equal(ws, want) {
		t.Errorf("warnings:\n%v\nwant\n%v", ws, want)
	}
}

func TestOtherSysctlsExplained(t *testing.T) {
	sc := defaults()
	sc.MaxTwBuckets, sc.FinTimeout, sc.Timestamps, sc.TwReuseDelayKnown = 80, 30*time.Second, 0, false
	sc.PortRange = inventory.PortSpan{Lo: 40000, Hi: 40099}
	n, _ := explain(fromProc(sc))
	cases := []Setting{
		{"net.ipv4.tcp_tw_reuse_delay", "-", "not a sysctl before Linux 6.14: tcp_tw_reuse takes over a TIME_WAIT port once it is about 1 s old (unused here: no reuse)"},
		{"net.ipv4.tcp_max_tw_buckets", "80", "at most 80 timewait sockets in the namespace; past that a closing connection skips TIME_WAIT (TCPTimeWaitOverflow); fewer than the 100 usable ports, so one busy destination overflows it before its ports run out"},
		{"net.ipv4.tcp_fin_timeout", "30 s", "an orphaned FIN_WAIT2 (closed here, the peer's FIN not yet seen) holds its port at most 30 s; TIME_WAIT lasts 60 s whatever this says"},
		{"net.ipv4.tcp_timestamps", "0", "off: tcp_tw_reuse cannot take over any TIME_WAIT port (timestamps are what tell a new connection's segments from an old one's)"},
		{"net.ipv4.tcp_tw_recycle", "absent", "removed in Linux 4.12 (it broke clients behind NAT): nothing to check"},
	}
	for _, want := range cases {
		if got := sysctl(t, n, strings.TrimPrefix(want.Name, "net.ipv4.")); got != want {
			t.Errorf("got  %+v\nwant %+v", got, want)
		}
	}
	names := []string{}
	for _, s := range n.Sysctls {
		names = append(names, strings.TrimPrefix(s.Name, "net.ipv4."))
	}
	if want := []string{"ip_local_port_range", "ip_local_reserved_ports", "tcp_tw_reuse", "tcp_tw_reuse_delay",
		"tcp_max_tw_buckets", "tcp_fin_timeout", "tcp_timestamps", "tcp_tw_recycle"}; !slices.Equal(names, want) {
		t.Errorf("sysctls %v, want %v", names, want)
	}
}

func TestCountersExplained(t *testing.T) {
	nr := fromProc(defaults())
	nr.NS.Counters = inventory.Counters{TW: 10, TWRecycled: 2, TWKilled: 3, TCPTimeWaitOverflow: 0}
	n, _ := explain(nr)
	var got []string
	for _, c := range n.Counters {
		got = append(got, fmt.Sprintf("%s=%d", c.Name, c.Value))
		if c.Meaning == "" {
			t.Errorf("%s has no meaning", c.Name)
		}
	}
	if want := []string{"TW=10", "TWRecycled=2", "TWKilled=3", "TCPTimeWaitOverflow=0"}; !slices.Equal(got, want) {
		t.Errorf("counters %v, want %v", got, want)
	}
	if !strings.HasSuffix(n.Counters[3].Meaning, "none so far") {
		t.Errorf("overflow at 0: %q", n.Counters[3].Meaning)
	}
}

// Seven destinations: the five with the least headroom are listed, most
// used first; timewait totals count every timewait socket, accepted ones
// apart.
func TestTimewaitAndLeastHeadroom(t *testing.T) {
	sc := defaults()
	sc.PortRange = inventory.PortSpan{Lo: 40000, Hi: 40999}
	sc.TwReuse = 0
	lo := netip.MustParseAddr("127.0.0.1")
	socks := []inventory.Socket{{State: inventory.Listen, Saddr: lo, Sport: 8080}}
	port := uint16(40000)
	for d := 1; d <= 7; d++ {
		for range d {
			socks = append(socks, inventory.Socket{State: inventory.TimeWait, Substate: inventory.TimeWait,
				Saddr: lo, Sport: port, Daddr: lo, Dport: uint16(9000 + d)})
			port++
		}
	}
	// The server side of an accepted connection, and an orphaned FIN_WAIT2.
	socks = append(socks,
		inventory.Socket{State: inventory.TimeWait, Substate: inventory.TimeWait, Saddr: lo, Sport: 8080, Daddr: lo, Dport: 50000},
		inventory.Socket{State: inventory.TimeWait, Substate: inventory.FinWait2, Saddr: lo, Sport: port, Daddr: lo, Dport: 9001})
	nr := scanned(sc, socks...)
	n, _ := explain(nr)
	if n.Destinations != 7 || len(n.LeastHeadroom) != LeastHeadroomMax {
		t.Fatalf("%d destinations, %d listed; want 7 and %d", n.Destinations, len(n.LeastHeadroom), LeastHeadroomMax)
	}
	var dports []uint16
	for _, d := range n.LeastHeadroom {
		dports = append(dports, d.Dport)
	}
	// 9001 has 1 TIME_WAIT and 1 FIN_WAIT2: 2 ports, like 9002.
	if want := []uint16{9007, 9006, 9005, 9004, 9003}; !slices.Equal(dports, want) {
		t.Errorf("least headroom %v, want %v", dports, want)
	}
	if d := n.LeastHeadroom[0]; d.Timewait != 7 || d.PortsUsable != 1000 || d.PortsAvailable != 993 {
		t.Errorf("first destination %+v, want 7 timewait, 993 of 1000 available", d)
	}
	tw := n.Timewait
	if tw == nil || tw.Timewait != 29 || tw.FinWait2 != 1 || tw.Accepted != 1 || tw.BucketsUsedPct != 0 {
		t.Fatalf("timewait %+v, want 28 + 1 accepted TIME_WAIT, 1 FIN_WAIT2", tw)
	}
	want := "30 timewait sockets now (29 in TIME_WAIT, 1 orphaned FIN_WAIT2), 1 of them the server side of accepted connections (no ephemeral port held); <0.1 % of tcp_max_tw_buckets (131,072)"
	if tw.Explanation != want {
		t.Errorf("explanation\n %q, want\n %q", tw.Explanation, want)
	}
}

// ok readings: twtrace can run, on the tracepoint tier.
func okReadings() *Readings {
	r := &Readings{Kernel: "6.18.0", Caps: Caps{Euid: 0, Effective: 1<<unix.CAP_SYS_ADMIN | 1<<unix.CAP_BPF | 1<<unix.CAP_PERFMON}}
	r.Tracefs.MountedAt = "/sys/kernel/tracing"
	r.Namespace = *fromProc(defaults())
	return r
}

func checkOf(t *testing.T, rep Report, name string) Check {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %s", name)
	return Check{}
}

func TestChecksTierAndExit(t *testing.T) {
	r := okReadings()
	r.FEntry.Err = fmt.Errorf("load program: %w", unix.EPERM)
	r.Kprobe = HookProbe{Probe: Probe{Err: fmt.Errorf("creating tracefs event: %w", os.ErrNotExist)}, AtAttach: true}
	rep := Diagnose(r)
	if !rep.CanRun || rep.Reason != "" || rep.Tier != "tracepoint" {
		t.Errorf("can run %v (%q), tier %q: want yes, tracepoint", rep.CanRun, rep.Reason, rep.Tier)
	}
	if rep.PreciseTier != "not available (fentry refused: EPERM)" {
		t.Errorf("precise tier %q", rep.PreciseTier)
	}
	var names []string
	for _, c := range rep.Checks {
		names = append(names, c.Name)
		if c.Required != (c.Name != CheckFEntry && c.Name != CheckKprobe && c.Name != CheckHTTPCallers) {
			t.Errorf("%s: required %v", c.Name, c.Required)
		}
	}
	if want := []string{CheckPrivileges, CheckBTF, CheckRingBuf, CheckTracefs, CheckTracepoints, CheckIterator, CheckFEntry, CheckKprobe, CheckHTTPCallers}; !slices.Equal(names, want) {
		t.Errorf("checks %v, want %v", names, want)
	}
	if c := checkOf(t, rep, CheckFEntry); c.Status != StatusFail || c.Detail != "refused: EPERM at load (fentry/tcp_time_wait; optional: twtrace uses the tracepoint tier)" {
		t.Errorf("fentry %+v", c)
	}
	if c := checkOf(t, rep, CheckKprobe); c.Status != StatusFail || !strings.HasPrefix(c.Detail, "refused: this kernel has no kprobes (") {
		t.Errorf("kprobe %+v", c)
	}

	// The kernel offers kprobes but refuses this one: its errno.
	r.Kprobe = HookProbe{Probe: Probe{Err: fmt.Errorf("attach: %w", unix.EINVAL)}, AtAttach: true, KprobePMU: true}
	if c := checkOf(t, Diagnose(r), CheckKprobe); c.Detail != "refused: EINVAL at attach (kprobe/tcp_time_wait); optional: not used by this version" {
		t.Errorf("kprobe %+v", c)
	}

	// fentry attaches, and so does the precise tier.
	r.FEntry = HookProbe{}
	r.Tier = tracer.TierInfo{Tier: tracer.TierPrecise, Hooks: []string{"inet_twsk_alloc", "tcp_v4_connect"}}
	if rep := Diagnose(r); rep.PreciseTier != "active" || rep.Tier != "precise" ||
		!slices.Equal(rep.PreciseHooks, r.Tier.Hooks) || checkOf(t, rep, CheckFEntry).Status != StatusOK {
		t.Errorf("fentry attaching: tier %q, precise tier %q, hooks %v", rep.Tier, rep.PreciseTier, rep.PreciseHooks)
	}
	// fentry attaches, but one of the precise programs does not load.
	r.Tier = tracer.TierInfo{Tier: tracer.TierTracepoint, Fallback: "the verifier refused tw_alloc on inet_twsk_alloc: …"}
	if rep := Diagnose(r); rep.PreciseTier != "not available (the verifier refused tw_alloc on inet_twsk_alloc: …)" || rep.Tier != "tracepoint" {
		t.Errorf("precise tier refused: tier %q, precise tier %q", rep.Tier, rep.PreciseTier)
	}
	r.Tier = tracer.TierInfo{}

	r.Tracepoints.Err = errors.New("attaching to tracepoint inet_sock_set_state: invalid argument")
	rep = Diagnose(r)
	if rep.CanRun || rep.Tier != "none" || rep.Reason != "tracepoints: refused: attaching to tracepoint inet_sock_set_state: invalid argument" {
		t.Errorf("tracepoints refused: can run %v, tier %q, reason %q", rep.CanRun, rep.Tier, rep.Reason)
	}
}

func TestRequiredFailures(t *testing.T) {
	cases := []struct {
		name   string
		mod    func(*Readings)
		reason string
	}{
		{"no BTF", func(r *Readings) {
			r.BTF = &os.PathError{Op: "stat", Path: "/sys/kernel/btf/vmlinux", Err: unix.ENOENT}
		},
			"kernel BTF: /sys/kernel/btf/vmlinux not found: a kernel built with CONFIG_DEBUG_INFO_BTF=y is needed"},
		{"no ring buffer", func(r *Readings) { r.RingBuf.Err = fmt.Errorf("ring buffer: %w", ebpf.ErrNotSupported) },
			"ring buffer: the kernel has no BPF ring buffer: it is older than 5.8, and twtrace needs 5.9"},
		{"tracefs not mountable", func(r *Readings) {
			r.Tracefs = Tracefs{MountErr: errors.New("tracefs is not mounted and could not be mounted: run 'mount -t tracefs nodev /sys/kernel/tracing' (no such device)")}
		}, "tracefs: tracefs is not mounted and could not be mounted: run 'mount -t tracefs nodev /sys/kernel/tracing' (no such device)"},
		{"iterator refused", func(r *Readings) { r.Iterator.Err = errors.New("kernel too old: needs 5.9 for iter/tcp") },
			"iter/tcp: refused: kernel too old: needs 5.9 for iter/tcp"},
	}
	for _, c := range cases {
		r := okReadings()
		c.mod(r)
		rep := Diagnose(r)
		if rep.CanRun || rep.Reason != c.reason {
			t.Errorf("%s: can run %v, reason\n %q, want\n %q", c.name, rep.CanRun, rep.Reason, c.reason)
		}
	}
	// tracefs mounted by doctor itself is fine.
	r := okReadings()
	r.Tracefs = Tracefs{MountedAt: "/sys/kernel/tracing", Mounted: true}
	if rep := Diagnose(r); !rep.CanRun || checkOf(t, rep, CheckTracefs).Detail != "was not mounted: mounted it at /sys/kernel/tracing, as every twtrace command does" {
		t.Errorf("tracefs mounted by doctor: %+v", checkOf(t, rep, CheckTracefs))
	}
}

func TestPrivileges(t *testing.T) {
	const (
		admin   = uint64(1) << unix.CAP_SYS_ADMIN
		bpf     = uint64(1) << unix.CAP_BPF
		perfmon = uint64(1) << unix.CAP_PERFMON
	)
	cases := []struct {
		name    string
		caps    Caps
		status  string
		missing []string
		detail  string
	}{
		{"root", Caps{Euid: 0, Effective: admin | bpf | perfmon | 1<<unix.CAP_NET_ADMIN}, StatusOK, nil,
			"root: CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN effective"},
		{"CAP_SYS_ADMIN alone", Caps{Euid: 1000, Effective: admin}, StatusOK, nil,
			"not root: CAP_SYS_ADMIN effective"},
		{"CAP_BPF and CAP_PERFMON", Caps{Euid: 1000, Effective: bpf | perfmon}, StatusFail, []string{"CAP_SYS_ADMIN"},
			"missing CAP_SYS_ADMIN: watch can run (CAP_BPF and CAP_PERFMON are effective), snapshot and top cannot (they enter other network namespaces)"},
		{"CAP_BPF alone", Caps{Euid: 1000, Effective: bpf}, StatusFail, []string{"CAP_PERFMON", "CAP_SYS_ADMIN"},
			"missing CAP_PERFMON and CAP_SYS_ADMIN: run as root, or grant CAP_BPF and CAP_PERFMON (watch) and CAP_SYS_ADMIN (snapshot, top)"},
		{"root with its capabilities dropped", Caps{Euid: 0}, StatusFail, []string{"CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"},
			"root without effective capabilities: missing CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN: run as root, or grant CAP_BPF and CAP_PERFMON (watch) and CAP_SYS_ADMIN (snapshot, top)"},
		{"capget failing, root", Caps{Euid: 0, Err: errors.New("capget: EINVAL")}, StatusOK, nil,
			"root (capabilities unreadable: capget: EINVAL)"},
		{"capget failing, not root", Caps{Euid: 1000, Err: errors.New("capget: EINVAL")}, StatusFail, []string{"CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"},
			"not root, and capabilities unreadable (capget: EINVAL): run as root"},
	}
	for _, c := range cases {
		ck, caps := checkPrivileges(c.caps)
		if ck.Status != c.status || ck.Detail != c.detail || !ck.Required {
			t.Errorf("%s: %+v\nwant status %s, detail %q", c.name, ck, c.status, c.detail)
		}
		if !slices.Equal(caps.Missing, c.missing) && !(len(caps.Missing) == 0 && len(c.missing) == 0) {
			t.Errorf("%s: missing %v, want %v", c.name, caps.Missing, c.missing)
		}
	}
}

// Without privileges the BPF checks are skipped, not failed, and the
// reason names the capabilities.
func TestUnprivilegedReadings(t *testing.T) {
	why := "needs CAP_BPF and CAP_PERFMON, or root"
	r := okReadings()
	r.Caps = Caps{Euid: 1000}
	r.RingBuf.Skipped, r.Tracepoints.Skipped, r.Iterator.Skipped, r.FEntry.Skipped, r.Kprobe.Skipped = why, why, why, why, why
	r.HTTPCallers.Skipped = why
	rep := Diagnose(r)
	if rep.CanRun || !strings.HasPrefix(rep.Reason, "missing CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN") || rep.Tier != "none" {
		t.Errorf("can run %v, reason %q, tier %q", rep.CanRun, rep.Reason, rep.Tier)
	}
	for _, name := range []string{CheckRingBuf, CheckTracepoints, CheckIterator, CheckFEntry, CheckKprobe, CheckHTTPCallers} {
		if c := checkOf(t, rep, name); c.Status != StatusSkipped || c.Detail != "not probed: "+why {
			t.Errorf("%s: %+v", name, c)
		}
	}
	if rep.PreciseTier != "not probed ("+why+")" {
		t.Errorf("precise tier %q", rep.PreciseTier)
	}
	if rep.Namespace.Settings == nil || rep.Namespace.Source != "proc" {
		t.Errorf("namespace %+v: want the sysctls from /proc", rep.Namespace)
	}

	// Another namespace cannot be read without entering it.
	r.Namespace = NamespaceReading{Ref: inventory.NamespaceRef{Inode: 4026532000}, Err: errors.New("another namespace is read by entering it with the socket iterator, and the socket iterator " + why)}
	rep = Diagnose(r)
	if n := rep.Namespace; n.Settings != nil || n.Source != "none" || n.Error != "another namespace is read by entering it with the socket iterator, and the socket iterator "+why {
		t.Errorf("unreadable namespace %+v", n)
	}
	var b bytes.Buffer
	if err := WriteText(&b, &rep); err != nil || !strings.Contains(b.String(), "sysctls not read: another namespace") {
		t.Errorf("text %q, %v", b.String(), err)
	}
}

func TestFormatting(t *testing.T) {
	for _, c := range []struct {
		x    float64
		want string
	}{
		{28232.0 / 60, "470"}, {94.0 / 60, "1.56"}, {1999.0 / 60, "33.3"}, {28232, "28,232"},
		{100, "100"}, {99.99, "99.9"}, {1.0 / 60, "0.0166"}, {0, "0"}, {1.57, "1.57"},
	} {
		if got := rate(c.x); got != c.want {
			t.Errorf("rate(%v) = %q, want %q", c.x, got, c.want)
		}
	}
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 28232: "28,232", 1234567: "1,234,567", -1000: "-1,000"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
	if pct(5) != "5" || pct(0.04) != "<0.1" || pct(0) != "0" || pct(12.25) != "12.3" {
		t.Errorf("pct: %q %q %q %q", pct(5), pct(0.04), pct(0), pct(12.25))
	}
	if duration(time.Second) != "1 s" || duration(1500*time.Millisecond) != "1500 ms" {
		t.Errorf("duration: %q %q", duration(time.Second), duration(1500*time.Millisecond))
	}
}

// The text form has every section, one check per line.
func TestWriteText(t *testing.T) {
	r := okReadings()
	r.FEntry.Err = fmt.Errorf("load program: %w", unix.EPERM)
	lo := netip.MustParseAddr("127.0.0.1")
	sc := defaults()
	sc.TwReuse = 0
	r.Namespace = *scanned(sc, inventory.Socket{State: inventory.TimeWait, Substate: inventory.TimeWait, Saddr: lo, Sport: 40000, Daddr: lo, Dport: 9000})
	r.Namespace.Ref.PID, r.Namespace.Ref.Comm = 1, "init"
	rep := Diagnose(r)
	var b bytes.Buffer
	if err := WriteText(&b, &rep); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"twtrace doctor: Linux 6.18.0\n",
		"Can twtrace run here? yes (tier: tracepoint)\n",
		"  ok      privileges   root: CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN effective\n",
		"  fail    fentry       refused: EPERM at load",
		"  precise tier: not available (fentry refused: EPERM)\n",
		"Network namespace 4026531833 (pid 1 init)\n",
		"  net.ipv4.ip_local_port_range = 32768-60999\n      28,232 ports, all usable: at 60 s per TIME_WAIT, at most 470 new connections/s to one destination\n",
		"Ceiling per destination\n",
		"Timewait now\n  1 timewait sockets now",
		"  127.0.0.1       127.0.0.1:9000              1     0     0   28231/28232   100%\n",
		"TcpExt counters (since the namespace was made)\n",
		"Warnings\n  ! tcp_tw_reuse=0",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
}

// Every key of the JSON document is documented: in docs/doctor.md, or
// for the destinations of least_headroom (snapshot's), in docs/json.md.
func TestJSONSchemaDocumented(t *testing.T) {
	var doc []byte
	for _, path := range []string{"../../docs/doctor.md", "../../docs/json.md"} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		doc = append(doc, b...)
	}
	r := okReadings()
	r.Namespace = *scanned(defaults(), inventory.Socket{State: inventory.TimeWait, Substate: inventory.TimeWait,
		Saddr: netip.MustParseAddr("10.0.0.1"), Sport: 40000, Daddr: netip.MustParseAddr("10.0.0.2"), Dport: 443})
	rep := Diagnose(r)
	rep.Reason = "x" // omitempty fields, present here
	rep.Namespace.Error, rep.Namespace.NoScan, rep.Namespace.Name = "x", "x", "x"
	raw, err := json.Marshal(&rep)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				keys[k] = true
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(v)
	for k := range keys {
		if !bytes.Contains(doc, []byte("`"+k+"`")) {
			t.Errorf("JSON key %q is not documented in docs/doctor.md or docs/json.md", k)
		}
	}
}

// An inode no namespace has (1 is never one) is not found; without
// CAP_SYS_ADMIN it may only be hidden, and is kept to be reported
// unreadable.
func TestTargetNotFound(t *testing.T) {
	_, err := Target(1, 0, Caps{Euid: 0, Effective: 1 << unix.CAP_SYS_ADMIN})
	if !errors.Is(err, ErrNoNamespace) || err.Error() != "network namespace 1 not found: no process, thread or /run/netns bind mount is in it" {
		t.Errorf("with CAP_SYS_ADMIN: %v, want ErrNoNamespace", err)
	}
	ref, err := Target(1, 0, Caps{Euid: 1000})
	if err != nil || ref.Inode != 1 || ref.Path != "" || ref.PID != 0 || ref.Comm != "" || ref.Name != "" {
		t.Errorf("without: %+v, %v; want the inode alone", ref, err)
	}
	if _, err := Target(0, 1<<30, Caps{}); !errors.Is(err, ErrNoNamespace) || err.Error() != fmt.Sprintf("process %d not found", 1<<30) {
		t.Errorf("a pid over pid_max: %v", err)
	}
}

// The net/http callers are optional: without them the tracer still runs,
// and the detail says what a Go net/http call site is then.
func TestHTTPCallersCheck(t *testing.T) {
	r := okReadings()
	r.HTTPCallers.Err = errors.New("the kernel cannot read a thread's user registers (bpf_task_pt_regs, Linux 5.15)")
	rep := Diagnose(r)
	c := checkOf(t, rep, CheckHTTPCallers)
	want := "not available: the kernel cannot read a thread's user registers (bpf_task_pt_regs, Linux 5.15) (optional: a Go net/http call site is then net/http's own dial goroutine)"
	if !rep.CanRun || c.Required || c.Status != StatusFail || c.Detail != want {
		t.Errorf("can run %v, check %+v; want it runs, and %q", rep.CanRun, c, want)
	}
}
