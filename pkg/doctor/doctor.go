// Package doctor answers, without waiting for traffic, two questions: can
// twtrace run on this host, and how close is a network namespace to
// running out of ephemeral ports.
//
// Gather takes the readings: capabilities, kernel BTF, the BPF ring
// buffer, tracefs, and which hooks really attach (it loads and attaches
// twtrace's tracer, its socket iterator, and one-instruction fentry and
// kprobe programs, then unloads them); the namespace's sysctls, TcpExt
// counters and sockets through pkg/inventory. Diagnose turns readings into
// a Report — checks, one-sentence explanations, the connection-rate
// ceiling, warnings — with no kernel access, so every explanation and
// threshold is unit-tested. WriteText prints a Report for a person; its
// JSON form is documented in docs/doctor.md.
package doctor

import (
	"errors"
	"fmt"
	"github.com/twtrace/twtrace/pkg/workload"
	"math"
	"os"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/pkg/tracer"

	"github.com/twtrace/twtrace/pkg/headroom"
	"github.com/twtrace/twtrace/pkg/inventory"
	"github.com/twtrace/twtrace/pkg/report"
)

// Readings are what Gather measured; Diagnose explains them.
type Readings struct {
	Time   time.Time
	Kernel string // uname release
	Caps   Caps
	// BTF is nil when /sys/kernel/btf/vmlinux exists.
	BTF error
	// RingBuf is the result of probing BPF_MAP_TYPE_RINGBUF.
	RingBuf Probe
	Tracefs Tracefs
	// Tracepoints is loading and attaching twtrace's tracer (in the
	// automatic tier); Tier is what it then ran.
	Tracepoints Probe
	Tier        tracer.TierInfo
	// Iterator is loading and attaching the inventory's iter/tcp program.
	Iterator Probe
	FEntry   HookProbe
	Kprobe   HookProbe
	// HTTPCallers is whether the tracer, loaded as top loads it (stacks
	// taken), can name the callers of Go net/http's dials
	// (tracer.Tracer.GoHTTPSupported).
	HTTPCallers Probe
	// Namespace is the namespace explained.
	Namespace NamespaceReading
}

// Probe is one attempt at something the kernel may refuse.
type Probe struct {
	// Skipped, when not empty, says why it was not tried.
	Skipped string
	Err     error
}

// HookProbe is an attempt to load and attach a minimal program.
type HookProbe struct {
	Probe
	// AtAttach: Err came from attaching (the program loaded).
	AtAttach bool
	// For kprobes: whether the kernel offers them at all, through the
	// kprobe PMU (/sys/bus/event_source/devices/kprobe) or tracefs's
	// kprobe_events.
	KprobePMU, KprobeEvents bool
}

// Tracefs is where the tracepoints' ids can be read.
type Tracefs struct {
	// MountedAt is where tracefs was found, "" when it was not.
	MountedAt string
	// Mounted: it was not mounted and Gather mounted it, as every twtrace
	// command does; MountErr is why that failed.
	Mounted  bool
	MountErr error
	// NotTried says why no mount was attempted.
	NotTried string
	// Unreadable is a tracefs directory this process may not look into
	// (tracefs is mode 0700): whether the tracepoint is there is unknown.
	Unreadable string
}

// NamespaceReading is one namespace's settings and, from a scan, sockets.
type NamespaceReading struct {
	Ref inventory.NamespaceRef
	// NS holds the sysctls and counters; nil when they could not be read
	// (Err says why). NS.Sockets is meaningful only when Scanned.
	NS      *inventory.Namespace
	Scanned bool
	// NoScan says why the sockets were not read.
	NoScan string
	Err    error
	// TwRecyclePresent: /proc/sys/net/ipv4/tcp_tw_recycle exists (Linux
	// before 4.12, or a kernel that brought it back).
	TwRecyclePresent bool
}

// Status of a check.
const (
	StatusOK      = "ok"
	StatusFail    = "fail"
	StatusSkipped = "skipped"
)

// Check names, in the order they are reported.
const (
	CheckPrivileges  = "privileges"
	CheckBTF         = "kernel_btf"
	CheckRingBuf     = "ring_buffer"
	CheckTracefs     = "tracefs"
	CheckTracepoints = "tracepoints"
	CheckIterator    = "socket_iterator"
	CheckFEntry      = "fentry"
	CheckKprobe      = "kprobe"
	CheckHTTPCallers = "http_callers"
)

// Check is one thing twtrace needs (Required) or could use.
type Check struct {
	Name     string `json:"name"`
	Status   string `json:"status"`
	Required bool   `json:"required"`
	Detail   string `json:"detail"`
}

// Report is the JSON document of `twtrace doctor -o json`.
type Report struct {
	Time   time.Time `json:"time"`
	Kernel string    `json:"kernel"`
	// CanRun: every required check is ok.
	CanRun bool `json:"can_run"`
	// Reason is why not, one line; empty when CanRun.
	Reason string `json:"reason,omitempty"`
	// Tier is the tracing tier twtrace uses here: "precise",
	// "tracepoint", or "none".
	Tier string `json:"tier"`
	// PreciseTier says whether the precise (fentry/fexit) tier runs here,
	// and why not.
	PreciseTier string `json:"precise_tier"`
	// PreciseHooks are the kernel functions the precise tier attaches
	// to, when it runs.
	PreciseHooks []string     `json:"precise_hooks"`
	Capabilities Capabilities `json:"capabilities"`
	Checks       []Check      `json:"checks"`
	Namespace    Namespace    `json:"namespace"`
	Warnings     []Warning    `json:"warnings"`
}

// Capabilities are those of twtrace's that the process has and lacks.
type Capabilities struct {
	Euid      int      `json:"euid"`
	Effective []string `json:"effective"`
	Missing   []string `json:"missing"`
}

// Namespace is the explained namespace.
type Namespace struct {
	Netns uint32 `json:"netns"`
	PID   int    `json:"pid,omitempty"`
	Comm  string `json:"comm,omitempty"`
	Name  string `json:"name,omitempty"`
	// Owner is the container or pod its process belongs to, when one does.
	Owner *workload.Identity `json:"owner,omitempty"`
	// Source is how it was read: "scan" (the socket iterator: sysctls,
	// counters and sockets), "proc" (our own namespace's /proc files: no
	// sockets) or "none".
	Source string `json:"source"`
	// Error says why the sysctls could not be read; NoScan why the
	// sockets were not.
	Error  string `json:"error,omitempty"`
	NoScan string `json:"no_scan,omitempty"`

	Settings *Settings `json:"settings"`
	Sysctls  []Setting `json:"sysctls"`
	Ceiling  *Ceiling  `json:"ceiling"`
	Timewait *Timewait `json:"timewait"`
	Counters []Counter `json:"counters"`
	// LeastHeadroom are the destinations with the least headroom, at most
	// LeastHeadroomMax, as in `twtrace snapshot`; null without a scan.
	LeastHeadroom []report.Destination `json:"least_headroom"`
	// Destinations is how many destinations the scan found.
	Destinations int `json:"destinations"`
}

// Settings are the sysctls as numbers, and the port budget they leave.
type Settings struct {
	PortRange     [2]uint16   `json:"port_range"`
	ReservedPorts [][2]uint16 `json:"reserved_ports"`
	// RangePorts is the number of ports in the range.
	RangePorts      int `json:"range_ports"`
	ReservedInRange int `json:"reserved_in_range"`
	// BoundInRange is ports of the range held by bind()/listen(),
	// skipped by connect() for every destination; null without a scan.
	BoundInRange *int `json:"bound_in_range"`
	// Usable is RangePorts − ReservedInRange − BoundInRange (an upper
	// bound when BoundInRange is null): the ports connect() can pick
	// toward one destination with nothing in use.
	Usable           int     `json:"ports_usable"`
	TwReuse          int     `json:"tcp_tw_reuse"`
	TwReuseDelayMs   int64   `json:"tcp_tw_reuse_delay_ms"`
	MaxTwBuckets     int     `json:"tcp_max_tw_buckets"`
	FinTimeoutS      float64 `json:"tcp_fin_timeout_s"`
	Timestamps       int     `json:"tcp_timestamps"`
	TwRecyclePresent bool    `json:"tcp_tw_recycle_present"`
}

// Setting is one sysctl, its value and what it means here.
type Setting struct {
	Name    string `json:"name"`
	Value   string `json:"value"`
	Meaning string `json:"meaning"`
}

// Reuse scopes: to which destinations tcp_tw_reuse applies.
const (
	ReuseNone     = "none"
	ReuseLoopback = "loopback"
	ReuseAll      = "all"
)

// Ceiling is the most new connections per second one destination
// sustains.
type Ceiling struct {
	// PerS is Usable / 60 s (rounded to 0.01): every connection ends in
	// TIME_WAIT on this host.
	PerS float64 `json:"per_s"`
	// Reuse is where tcp_tw_reuse applies: none, loopback or all.
	Reuse string `json:"reuse"`
	// WithReusePerS is Usable / the reuse delay (at most 60 s) toward the
	// destinations Reuse covers; null when none.
	WithReusePerS *float64 `json:"with_reuse_per_s"`
	Explanation   string   `json:"explanation"`
}

// Timewait is the namespace's timewait sockets now.
type Timewait struct {
	Timewait int `json:"timewait"`
	FinWait2 int `json:"fin_wait2"`
	// Accepted is how many of both are the server side of accepted
	// connections (they hold no ephemeral port).
	Accepted int `json:"accepted"`
	// BucketsUsedPct is Timewait + FinWait2 as a percentage of
	// tcp_max_tw_buckets.
	BucketsUsedPct float64 `json:"tw_buckets_used_pct"`
	Explanation    string  `json:"explanation"`
}

// Counter is a TcpExt counter and what it counts.
type Counter struct {
	Name    string `json:"name"`
	Value   uint64 `json:"value"`
	Meaning string `json:"meaning"`
}

// Warning is a setting or a counter that puts connections at risk.
type Warning struct {
	ID      string `json:"id"`
	Message string `json:"message"`
}

// LeastHeadroomMax is how many destinations the report lists.
const LeastHeadroomMax = 5

// Diagnose explains r.
func Diagnose(r *Readings) Report {
	rep := Report{Time: r.Time, Kernel: r.Kernel, Warnings: []Warning{}}
	var priv Check
	priv, rep.Capabilities = checkPrivileges(r.Caps)
	tracepoints, fentry := checkTracepoints(r.Tracepoints), checkFEntry(r.FEntry)
	rep.Checks = []Check{
		priv,
		checkBTF(r.BTF),
		checkRingBuf(r.RingBuf),
		checkTracefs(r.Tracefs),
		tracepoints,
		checkIterator(r.Iterator),
		fentry,
		checkKprobe(r.Kprobe),
		checkHTTPCallers(r.HTTPCallers),
	}
	rep.CanRun = true
	for _, c := range rep.Checks {
		if c.Required && c.Status != StatusOK {
			rep.CanRun = false
			rep.Reason = c.Detail
			if c.Name != CheckPrivileges { // its detail names what is missing
				rep.Reason = checkLabels[c.Name] + ": " + c.Detail
			}
			break
		}
	}
	rep.Tier = "none"
	rep.PreciseHooks = []string{}
	if tracepoints.Status == StatusOK {
		rep.Tier = tracer.TierTracepoint.String()
		if r.Tier.Tier == tracer.TierPrecise {
			rep.Tier, rep.PreciseHooks = r.Tier.Tier.String(), r.Tier.Hooks
		}
	}
	rep.PreciseTier = preciseTier(r, fentry)
	rep.Namespace, rep.Warnings = explainNamespace(&r.Namespace)
	return rep
}

// checkLabels name the checks for a person.
var checkLabels = map[string]string{
	CheckPrivileges:  "privileges",
	CheckBTF:         "kernel BTF",
	CheckRingBuf:     "ring buffer",
	CheckTracefs:     "tracefs",
	CheckTracepoints: "tracepoints",
	CheckIterator:    "iter/tcp",
	CheckFEntry:      "fentry",
	CheckKprobe:      "kprobe",
	CheckHTTPCallers: "net/http",
}

func checkBTF(err error) Check {
	c := Check{Name: CheckBTF, Required: true, Status: StatusOK,
		Detail: "/sys/kernel/btf/vmlinux is present: twtrace's programs are relocated to this kernel's types (CO-RE)"}
	if err != nil {
		c.Status = StatusFail
		c.Detail = "/sys/kernel/btf/vmlinux not found: a kernel built with CONFIG_DEBUG_INFO_BTF=y is needed"
		if !errors.Is(err, os.ErrNotExist) {
			c.Detail = fmt.Sprintf("/sys/kernel/btf/vmlinux: %v", err)
		}
	}
	return c
}

// checkProbe is a required check made of one probe: skipped, ok with
// okDetail, or failed with failPrefix and the error.
func checkProbe(name string, p Probe, okDetail, failPrefix string) Check {
	c := Check{Name: name, Required: true}
	switch {
	case p.Skipped != "":
		c.Status, c.Detail = StatusSkipped, "not probed: "+p.Skipped
	case p.Err == nil:
		c.Status, c.Detail = StatusOK, okDetail
	default:
		c.Status, c.Detail = StatusFail, failPrefix+oneLine(p.Err)
	}
	return c
}

func checkRingBuf(p Probe) Check {
	c := checkProbe(CheckRingBuf, p, "the kernel has BPF ring buffers (Linux 5.8+)", "probing failed: ")
	if p.Skipped == "" && errors.Is(p.Err, ebpf.ErrNotSupported) {
		c.Detail = "the kernel has no BPF ring buffer: it is older than 5.8, and twtrace needs 5.9"
	}
	return c
}

func checkTracefs(t Tracefs) Check {
	c := Check{Name: CheckTracefs, Required: true}
	switch {
	case t.MountedAt != "" && t.Mounted:
		c.Status = StatusOK
		c.Detail = "was not mounted: mounted it at " + t.MountedAt + ", as every twtrace command does"
	case t.MountedAt != "":
		c.Status, c.Detail = StatusOK, "mounted at "+t.MountedAt
	case t.Unreadable != "":
		c.Status = StatusSkipped
		c.Detail = "not probed: " + t.Unreadable + " is not readable without privileges, so whether tracefs is mounted is unknown"
	case t.NotTried != "":
		c.Status = StatusFail
		c.Detail = "not mounted, and " + t.NotTried + ": run 'mount -t tracefs nodev /sys/kernel/tracing'"
	default: // MountErr says it all (tracer.ErrTracefsAbsent and the cause)
		c.Status, c.Detail = StatusFail, oneLine(t.MountErr)
	}
	return c
}

func checkTracepoints(p Probe) Check {
	return checkProbe(CheckTracepoints, p,
		"twtrace's tracer loads and attaches: tp_btf sock:inet_sock_set_state and tcp:tcp_receive_reset (watch, top), syscalls sys_enter_bind and sys_exit_bind (--events bind_error)",
		"refused: ")
}

// checkHTTPCallers is optional: without it a Go net/http call site is
// net/http's own dial goroutine.
func checkHTTPCallers(p Probe) Check {
	c := checkProbe(CheckHTTPCallers, p,
		"Go net/http dials can name their caller's line (uprobes, and the dialling goroutine read at connect()): top, run and watch --stacks",
		"not available: ")
	c.Required = false
	if c.Status == StatusFail {
		c.Detail += " (optional: a Go net/http call site is then net/http's own dial goroutine)"
	}
	return c
}

func checkIterator(p Probe) Check {
	return checkProbe(CheckIterator, p,
		"the iter/tcp socket iterator loads and attaches: snapshot and top can read every namespace's sockets",
		"refused: ")
}

// refusal is "EPERM at load" or the error itself when it carries no errno.
func refusal(p HookProbe) string {
	where := "load"
	if p.AtAttach {
		where = "attach"
	}
	var errno unix.Errno
	if errors.As(p.Err, &errno) {
		if name := unix.ErrnoName(errno); name != "" {
			return name + " at " + where
		}
	}
	return oneLine(p.Err) + " (at " + where + ")"
}

func checkFEntry(p HookProbe) Check {
	c := Check{Name: CheckFEntry}
	switch {
	case p.Skipped != "":
		c.Status, c.Detail = StatusSkipped, "not probed: "+p.Skipped
	case p.Err == nil:
		c.Status, c.Detail = StatusOK, "fentry/tcp_time_wait loads and attaches (the precise tier's kind of hook)"
	default:
		c.Status = StatusFail
		c.Detail = "refused: " + refusal(p) + " (fentry/tcp_time_wait; optional: twtrace uses the tracepoint tier)"
	}
	return c
}

func checkKprobe(p HookProbe) Check {
	c := Check{Name: CheckKprobe}
	switch {
	case p.Skipped != "":
		c.Status, c.Detail = StatusSkipped, "not probed: "+p.Skipped
	case p.Err == nil:
		c.Status, c.Detail = StatusOK, "kprobe/tcp_time_wait loads and attaches (not used by this version)"
	case p.AtAttach && !p.KprobePMU && !p.KprobeEvents:
		c.Status = StatusFail
		c.Detail = "refused: this kernel has no kprobes (no kprobe PMU in /sys/bus/event_source/devices, no kprobe_events in tracefs: built without CONFIG_KPROBES); optional: not used by this version"
	default:
		c.Status, c.Detail = StatusFail, "refused: "+refusal(p)+" (kprobe/tcp_time_wait); optional: not used by this version"
	}
	return c
}

func preciseTier(r *Readings, c Check) string {
	p := r.FEntry
	switch {
	case r.Tracepoints.Err == nil && r.Tracepoints.Skipped == "" && r.Tier.Tier == tracer.TierPrecise:
		s := "active"
		if len(r.Tier.Partial) > 0 {
			s += " without " + strings.Join(r.Tier.Partial, ", ")
		}
		return s
	case c.Status == StatusOK && r.Tier.Fallback != "":
		return "not available (" + r.Tier.Fallback + ")"
	case c.Status == StatusOK:
		return "fentry attaches, but the tracer did not load"
	case c.Status == StatusSkipped:
		return "not probed (" + p.Skipped + ")"
	}
	var errno unix.Errno
	why := oneLine(p.Err)
	if errors.As(p.Err, &errno) && unix.ErrnoName(errno) != "" {
		why = unix.ErrnoName(errno)
	}
	return "not available (fentry refused: " + why + ")"
}

// oneLine is err's text on one line.
func oneLine(err error) string {
	if err == nil {
		return "unknown error"
	}
	return strings.Join(strings.Fields(err.Error()), " ")
}

// explainNamespace explains one namespace's settings, counters and
// timewait sockets, and warns about the dangerous ones.
func explainNamespace(nr *NamespaceReading) (Namespace, []Warning) {
	ref := nr.Ref
	out := Namespace{Netns: ref.Inode, PID: ref.PID, Comm: ref.Comm, Name: ref.Name, Source: "none",
		Sysctls: []Setting{}, Counters: []Counter{}}
	if nr.NS == nil {
		out.Error = "not read"
		if nr.Err != nil {
			out.Error = oneLine(nr.Err)
		}
		return out, []Warning{}
	}
	ns := nr.NS
	sc := &ns.Sysctls
	out.Source = "proc"
	var hr *headroom.Report
	if nr.Scanned {
		out.Source = "scan"
		r := headroom.Compute(ns)
		hr = &r
	} else {
		out.NoScan = nr.NoScan
	}

	st := settings(sc, hr)
	st.TwRecyclePresent = nr.TwRecyclePresent
	out.Settings = st
	out.Sysctls = explainSysctls(sc, st, hr)
	out.Ceiling = ceiling(st)
	out.Counters = explainCounters(ns.Counters)
	if hr != nil {
		nsRep, dests, _ := report.FromNamespace(ns, hr)
		report.SortDestinations(dests)
		out.Destinations = len(dests)
		out.LeastHeadroom = dests[:min(len(dests), LeastHeadroomMax)]
		out.Timewait = timewaitNow(&hr.Namespace, &nsRep, st)
	}
	return out, warnings(st, ns.Counters)
}

// settings are sc as numbers, with the port budget (from the scan when
// there is one).
func settings(sc *inventory.Sysctls, hr *headroom.Report) *Settings {
	st := &Settings{
		PortRange:     [2]uint16{sc.PortRange.Lo, sc.PortRange.Hi},
		ReservedPorts: [][2]uint16{},
		TwReuse:       sc.TwReuse,
		MaxTwBuckets:  sc.MaxTwBuckets,
		FinTimeoutS:   sc.FinTimeout.Seconds(),
		Timestamps:    sc.Timestamps,
	}
	st.TwReuseDelayMs = sc.TwReuseDelay.Milliseconds()
	if sc.TwReuseDelay <= 0 {
		st.TwReuseDelayMs = headroom.DefaultTwReuseDelay.Milliseconds()
	}
	for _, s := range sc.Reserved {
		st.ReservedPorts = append(st.ReservedPorts, [2]uint16{s.Lo, s.Hi})
	}
	if hr != nil {
		n := &hr.Namespace
		bound := n.Bound
		st.RangePorts, st.ReservedInRange, st.BoundInRange, st.Usable = n.RangeSize, n.Reserved, &bound, n.Usable
		return st
	}
	lo, hi := int(sc.PortRange.Lo), int(sc.PortRange.Hi)
	if lo <= hi {
		st.RangePorts = hi - lo + 1
	}
	for _, s := range sc.Reserved {
		a, b := max(int(s.Lo), lo), min(int(s.Hi), hi)
		if a <= b {
			st.ReservedInRange += b - a + 1
		}
	}
	st.Usable = st.RangePorts - st.ReservedInRange
	return st
}

// reuseScope is where tcp_tw_reuse applies: the kernel needs the
// timewait to have seen timestamps, which it cannot without them.
func reuseScope(st *Settings) string {
	switch {
	case st.TwReuse == 0 || st.Timestamps == 0:
		return ReuseNone
	case st.TwReuse == 2:
		return ReuseLoopback
	}
	return ReuseAll
}

// reuseHold is how long a timewait holds its port when tcp_tw_reuse
// applies: the reuse delay, at most TIME_WAIT's 60 s.
func reuseHold(st *Settings) time.Duration {
	return min(time.Duration(st.TwReuseDelayMs)*time.Millisecond, headroom.TimewaitLen)
}

func ceiling(st *Settings) *Ceiling {
	perS := float64(st.Usable) / headroom.TimewaitLen.Seconds()
	c := &Ceiling{PerS: round2(perS), Reuse: reuseScope(st)}
	c.Explanation = fmt.Sprintf("%s usable ports / 60 s per TIME_WAIT = at most %s new connections/s to one destination",
		thousands(st.Usable), rate(perS))
	if c.Reuse == ReuseNone {
		why := "tcp_tw_reuse=0"
		if st.TwReuse != 0 {
			why = "tcp_timestamps=0"
		}
		c.Explanation += "; " + why + ": no reuse toward any destination"
		return c
	}
	hold := reuseHold(st)
	if hold <= 0 {
		hold = headroom.DefaultTwReuseDelay
	}
	with := float64(st.Usable) / hold.Seconds()
	w := round2(with)
	c.WithReusePerS = &w
	where := "toward every destination"
	if c.Reuse == ReuseLoopback {
		where = "toward loopback destinations only (tcp_tw_reuse=2); others stay at the first figure"
	}
	c.Explanation += fmt.Sprintf("; with tcp_tw_reuse a timewait port is taken over after %s: at most %s/s %s",
		duration(hold), rate(with), where)
	return c
}

func timewaitNow(n *headroom.Namespace, nsRep *report.Namespace, st *Settings) *Timewait {
	tw := &Timewait{Timewait: n.Timewait, FinWait2: n.FinWait2,
		Accepted: n.AcceptedTimewait + n.AcceptedFinWait2, BucketsUsedPct: nsRep.TwBucketsInUse}
	total := n.Timewait + n.FinWait2
	tw.Explanation = fmt.Sprintf("%s timewait sockets now (%s in TIME_WAIT, %s orphaned FIN_WAIT2), %s of them the server side of accepted connections (no ephemeral port held)",
		thousands(total), thousands(n.Timewait), thousands(n.FinWait2), thousands(tw.Accepted))
	if st.MaxTwBuckets > 0 {
		tw.Explanation += fmt.Sprintf("; %s %% of tcp_max_tw_buckets (%s)",
			pct(100*float64(total)/float64(st.MaxTwBuckets)), thousands(st.MaxTwBuckets))
	}
	return tw
}

func round2(x float64) float64 {
	if math.IsInf(x, 0) || math.IsNaN(x) {
		return 0
	}
	return math.Round(x*100) / 100
}
