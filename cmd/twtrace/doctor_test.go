package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/doctor"
	"github.com/twtrace/twtrace/pkg/inventory"
	"github.com/twtrace/twtrace/pkg/tracer"
)

// parkEnv makes the test binary a process that only waits for its stdin
// to close: a process inside a test namespace, for --pid.
const parkEnv = "TWTRACE_TEST_PARK"

func init() {
	if os.Getenv(parkEnv) != "" {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
}

// runDoctorCLI runs this test binary as twtrace with args (env, when not
// empty, replaces the CLI helper's variable) and returns its exit status,
// stdout and stderr.
func runDoctorCLI(t *testing.T, env string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestCLIHelper$", "--"}, args...)...)
	if env == "" {
		env = "TWTRACE_TEST_CLI=1"
	}
	cmd.Env = append(os.Environ(), env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

func decodeReport(t *testing.T, out string) doctor.Report {
	t.Helper()
	var rep doctor.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("doctor JSON %q: %v", out, err)
	}
	return rep
}

func warningIDs(ws []doctor.Warning) []string {
	var ids []string
	for _, w := range ws {
		ids = append(ids, w.ID)
	}
	return ids
}

// doctorNetns is testnet.NewSmallRange's namespace (range 40000-40099,
// 40010-40014 reserved, a listener on 40050, tcp_tw_reuse 0) with
// tcp_max_tw_buckets 80 and tcp_fin_timeout 30, where a client has closed
// 10 connections first: 10 timewait sockets toward its server.
func doctorNetns(t *testing.T) (*testnet.Netns, *testnet.Server) {
	ns, s := churnNetns(t)
	ns.Sysctl(t, "ipv4/tcp_max_tw_buckets", "80")
	ns.Sysctl(t, "ipv4/tcp_fin_timeout", "30")
	c := testnet.StartClient(t, ns, testnet.ClientSpec{Dest: s.Dest(false), N: 10})
	if len(c.Ports) != 10 {
		t.Fatalf("client made %d connections, want 10", len(c.Ports))
	}
	return ns, s
}

// doctorSettled runs doctor with args until the namespace's timewait
// sockets have all left FIN_WAIT2 (the server closes its side just after
// the client), and returns the last report and its exit status.
func doctorSettled(t *testing.T, args ...string) (doctor.Report, int, string, string) {
	t.Helper()
	var (
		rep            doctor.Report
		code           int
		stdout, stderr string
	)
	testnet.WaitFor(5*time.Second, func() bool {
		code, stdout, stderr = runDoctorCLI(t, "", args...)
		rep = decodeReport(t, stdout)
		tw := rep.Namespace.Timewait
		return tw != nil && tw.FinWait2 == 0
	})
	return rep, code, stdout, stderr
}

// `doctor -o json --netns INODE` on a namespace whose every figure the
// test set: exit 0, the exact settings and port budget (100 ports − 5
// reserved − 1 held by the listener = 94 usable, the headroom model's
// figure), the 10 timewait sockets, exactly the warnings those settings
// call for, and nothing left loaded in the kernel.
func TestDoctorNamespaceJSON(t *testing.T) {
	requireBPF(t)
	ns, s := doctorNetns(t)
	inode := strconv.FormatUint(uint64(ns.Inode), 10)
	rep, code, out, stderr := doctorSettled(t, "doctor", "-o", "json", "--netns", inode)
	if code != exitOK || stderr != "" {
		t.Fatalf("exit %d, stderr %q; want 0 and nothing", code, stderr)
	}
	if !rep.CanRun || rep.Tier != expectedTier(&rep) || rep.Reason != "" {
		t.Errorf("can run %v, tier %q (want %q), reason %q", rep.CanRun, rep.Tier, expectedTier(&rep), rep.Reason)
	}
	if (rep.Tier == "precise") != (len(rep.PreciseHooks) == 7) {
		t.Errorf("tier %q with precise hooks %v", rep.Tier, rep.PreciseHooks)
	}
	for _, c := range rep.Checks {
		if c.Required && c.Status != doctor.StatusOK {
			t.Errorf("required check %+v is not ok", c)
		}
		// The net/http callers need the dialling goroutine's registers at
		// connect(): bpf_task_pt_regs, 5.15.
		if c.Name == doctor.CheckHTTPCallers && (c.Status == doctor.StatusOK) != testnet.KernelAtLeast(5, 15) {
			t.Errorf("%+v on this kernel (%s)", c, rep.Kernel)
		}
	}
	n := rep.Namespace
	if n.Netns != ns.Inode || n.Source != "scan" || n.Error != "" {
		t.Fatalf("namespace %d read by %q (error %q), want %d by the scan", n.Netns, n.Source, n.Error, ns.Inode)
	}
	one := 1
	want := doctor.Settings{
		PortRange: [2]uint16{40000, 40099}, ReservedPorts: [][2]uint16{{40010, 40014}},
		RangePorts: 100, ReservedInRange: 5, BoundInRange: &one, Usable: testnet.SmallRangeUsable,
		TwReuse: 0, TwReuseDelayMs: 1000, MaxTwBuckets: 80, FinTimeoutS: 30, Timestamps: 1,
	}
	if !reflect.DeepEqual(n.Settings, &want) {
		t.Errorf("settings %+v\nwant     %+v", n.Settings, &want)
	}
	if c := n.Ceiling; c == nil || c.PerS != 1.57 || c.Reuse != doctor.ReuseNone || c.WithReusePerS != nil {
		t.Errorf("ceiling %+v, want 94/60 = 1.57/s and no reuse", c)
	}
	if tw := n.Timewait; tw == nil || tw.Timewait != 10 || tw.FinWait2 != 0 || tw.Accepted != 0 || tw.BucketsUsedPct != 12.5 {
		t.Errorf("timewait %+v, want 10 in TIME_WAIT, 12.5 %% of 80 buckets", tw)
	}
	counters := map[string]uint64{}
	for _, c := range n.Counters {
		counters[c.Name] = c.Value
	}
	// The kernel counts a timewait socket in TW either when it is made (as
	// its timer is first armed: 6.1, 6.12, the host's 6.18) or only when
	// it ends (in the timer's handler: 5.10); see the inventory package's
	// twCounting. All 10 are still in the table (they have 60 s), so TW is
	// exactly 10 or exactly 0, and the other counters 0 either way.
	made := map[string]uint64{"TW": 10, "TWRecycled": 0, "TWKilled": 0, "TCPTimeWaitOverflow": 0}
	ended := map[string]uint64{"TW": 0, "TWRecycled": 0, "TWKilled": 0, "TCPTimeWaitOverflow": 0}
	switch {
	case reflect.DeepEqual(counters, made):
		t.Log("timewait sockets counted when made")
	case reflect.DeepEqual(counters, ended):
		t.Log("timewait sockets counted when they end")
	default:
		t.Errorf("counters %v, want TW 10 (counted when made) or 0 (counted when they end), the others 0", counters)
	}
	if n.Destinations != 1 || len(n.LeastHeadroom) != 1 {
		t.Fatalf("%d destinations, %d listed; want 1", n.Destinations, len(n.LeastHeadroom))
	}
	if d := n.LeastHeadroom[0]; d.Daddr != s.Addr.Addr() || d.Dport != s.Addr.Port() || d.Timewait != 10 ||
		d.PortsAvailable != testnet.SmallRangeUsable-10 || d.PortsUsable != testnet.SmallRangeUsable {
		t.Errorf("destination %+v, want 10 timewait toward %s, 84 of 94 ports available", d, s.Addr)
	}
	// Present: reuse disabled, a tiny range, buckets below the usable
	// ports. Absent: 5 of 100 reserved is under 10 %, timestamps are on,
	// no tcp_tw_recycle, no overflow.
	if got, want := warningIDs(rep.Warnings), []string{doctor.WarnReuseDisabled, doctor.WarnTinyRange, doctor.WarnBucketsSmall}; !slices.Equal(got, want) {
		t.Errorf("warnings %v, want %v", got, want)
	}
	for _, key := range []string{`"can_run"`, `"checks"`, `"precise_tier"`, `"ports_usable"`, `"bound_in_range"`, `"least_headroom"`, `"warnings"`} {
		if !strings.Contains(out, key) {
			t.Errorf("JSON lacks %s", key)
		}
	}
	names := map[string]bool{inventory.ProgramName: true}
	for _, name := range append(slices.Clone(tracer.ProgramNames), doctor.ProbeProgramNames...) {
		names[name] = true
	}
	// Program ids are freed after an RCU grace period: wait (the budget
	// only bounds a failing test).
	testnet.WaitFor(5*time.Second, func() bool { return testnet.CountPrograms(names) == 0 })
	if n := testnet.CountPrograms(names); n != 0 {
		t.Errorf("%d of doctor's programs still loaded after it exited", n)
	}
}

// --pid of a process in the namespace explains the same namespace, named
// by that process; the text form says what the JSON says.
func TestDoctorPidAndText(t *testing.T) {
	requireBPF(t)
	ns, _ := doctorNetns(t)
	var park *exec.Cmd
	var stdin io.WriteCloser
	ns.Do(t, func() error {
		park = exec.Command(os.Args[0])
		park.Env = append(os.Environ(), parkEnv+"=1")
		var err error
		if stdin, err = park.StdinPipe(); err != nil {
			return err
		}
		return park.Start()
	})
	t.Cleanup(func() { stdin.Close(); park.Wait() })
	pid := strconv.Itoa(park.Process.Pid)

	byPID, code, _, stderr := doctorSettled(t, "doctor", "-o", "json", "--pid", pid)
	if code != exitOK {
		t.Fatalf("--pid: exit %d, stderr %q", code, stderr)
	}
	byNetns, _, _, _ := doctorSettled(t, "doctor", "-o", "json", "--netns", strconv.FormatUint(uint64(ns.Inode), 10))
	if byPID.Namespace.Netns != ns.Inode || byPID.Namespace.PID != park.Process.Pid {
		t.Errorf("--pid %s: namespace %d named by pid %d, want %d by %s", pid, byPID.Namespace.Netns, byPID.Namespace.PID, ns.Inode, pid)
	}
	if !reflect.DeepEqual(byPID.Namespace.Settings, byNetns.Namespace.Settings) || !reflect.DeepEqual(byPID.Warnings, byNetns.Warnings) {
		t.Errorf("--pid and --netns differ:\n%+v %v\n%+v %v", byPID.Namespace.Settings, byPID.Warnings, byNetns.Namespace.Settings, byNetns.Warnings)
	}

	code, text, stderr := runDoctorCLI(t, "", "doctor", "--pid", pid)
	if code != exitOK || stderr != "" {
		t.Fatalf("text: exit %d, stderr %q", code, stderr)
	}
	tier := "tracepoint"
	if strings.Contains(text, "  ok      fentry ") {
		tier = "precise"
	}
	for _, want := range []string{
		"Can twtrace run here? yes (tier: " + tier + ")\n",
		"Network namespace " + strconv.FormatUint(uint64(ns.Inode), 10) + " (pid " + pid + " ",
		"  net.ipv4.ip_local_port_range = 40000-40099\n      100 ports, minus 5 reserved and 1 held by bind()/listen() = 94 usable: at 60 s per TIME_WAIT, at most 1.56 new connections/s to one destination\n",
		"  net.ipv4.ip_local_reserved_ports = 40010-40014\n      connect() never picks these 5 ports of the range (5 % of it)\n",
		"  net.ipv4.tcp_tw_reuse = 0\n",
		"  94 usable ports / 60 s per TIME_WAIT = at most 1.56 new connections/s to one destination; tcp_tw_reuse=0: no reuse toward any destination\n",
		"  ! tcp_tw_reuse=0: ",
		"  ! only 94 usable ports (fewer than 10,000)",
		"  ! tcp_max_tw_buckets (80) is below the usable ports (94)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
}

// Without capabilities doctor exits 1 with one line naming CAP_BPF and
// CAP_PERFMON, and still explains its own namespace's sysctls, read from
// /proc (no socket scan: that needs the iterator).
func TestDoctorWithoutCapabilities(t *testing.T) {
	code, out, stderr := runDoctorCLI(t, dropCapsEnv+"=doctor -o json")
	if code != exitError {
		t.Fatalf("exit %d, want %d (stderr %q)", code, exitError, stderr)
	}
	if !strings.Contains(stderr, "CAP_BPF") || !strings.Contains(stderr, "CAP_PERFMON") || strings.Count(stderr, "\n") != 1 ||
		!strings.HasPrefix(stderr, "twtrace: cannot run here: ") {
		t.Fatalf("stderr %q: want one line naming CAP_BPF and CAP_PERFMON", stderr)
	}
	rep := decodeReport(t, out)
	if rep.CanRun || rep.Tier != "none" || !slices.Equal(rep.Capabilities.Missing, []string{"CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"}) {
		t.Errorf("can run %v, tier %q, missing %v", rep.CanRun, rep.Tier, rep.Capabilities.Missing)
	}
	for _, c := range rep.Checks {
		switch c.Name {
		case doctor.CheckPrivileges:
			if c.Status != doctor.StatusFail {
				t.Errorf("privileges %+v", c)
			}
		case doctor.CheckRingBuf, doctor.CheckTracepoints, doctor.CheckIterator, doctor.CheckFEntry, doctor.CheckKprobe, doctor.CheckHTTPCallers:
			if c.Status != doctor.StatusSkipped {
				t.Errorf("%s %+v: want skipped without privileges", c.Name, c)
			}
		}
	}
	n := rep.Namespace
	if n.Source != "proc" || n.Settings == nil || len(n.Sysctls) != 8 || len(n.Counters) != 4 || n.Timewait != nil || n.LeastHeadroom != nil {
		t.Errorf("namespace %+v: want the sysctls and counters from /proc, no scan", n)
	}
	if n.Settings != nil && n.Settings.BoundInRange != nil {
		t.Errorf("bound ports %d: unknown without a scan", *n.Settings.BoundInRange)
	}

	code, text, _ := runDoctorCLI(t, dropCapsEnv+"=doctor")
	if code != exitError || !strings.Contains(text, "Can twtrace run here? no (tier: none)\n") ||
		!strings.Contains(text, "  net.ipv4.ip_local_port_range = ") || !strings.Contains(text, "sockets not read: ") {
		t.Errorf("text without capabilities: exit %d\n%s", code, text)
	}
}

// Without capabilities another namespace cannot be entered (nor, held by
// a privileged process, even seen): doctor says so in place of its
// sysctls, and exits 1 for the capabilities, not 2 for the flag.
func TestDoctorWithoutCapabilitiesOtherNamespace(t *testing.T) {
	requireBPF(t) // a namespace to look at takes root
	ns, _ := churnNetns(t)
	code, out, _ := runDoctorCLI(t, dropCapsEnv+"=doctor -o json --netns "+strconv.FormatUint(uint64(ns.Inode), 10))
	if code != exitError {
		t.Fatalf("exit %d, want %d", code, exitError)
	}
	n := decodeReport(t, out).Namespace
	if n.Netns != ns.Inode || n.Settings != nil || n.Source != "none" || !strings.Contains(n.Error, "socket iterator") {
		t.Errorf("namespace %+v: want no settings and why", n)
	}
}

// Bad flags: exit 2, the first line names the problem, no stack trace.
func TestDoctorBadFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"doctor", "--netns", "abc"}, `invalid --netns "abc": not a network namespace inode number`},
		{[]string{"doctor", "--netns", "4294967296"}, `invalid --netns "4294967296"`},
		{[]string{"doctor", "--netns", "0"}, `invalid --netns "0"`},
		{[]string{"doctor", "--pid", "abc"}, `invalid --pid "abc": not a process id`},
		{[]string{"doctor", "--pid", "-3"}, `invalid --pid "-3"`},
		{[]string{"doctor", "--pid", "1", "--netns", "1"}, "--netns and --pid both name a namespace: give one"},
		{[]string{"doctor", "-o", "xml"}, `invalid --output "xml": want text or json`},
		{[]string{"doctor", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"doctor", "extra"}, "unknown command"},
	}
	if doctor.ReadCaps().CanEnterNamespaces() {
		// Without CAP_SYS_ADMIN a namespace not found may only be hidden:
		// doctor then reports it unreadable and exits 1 (tested above).
		cases = append(cases, struct {
			args []string
			want string
		}{[]string{"doctor", "--netns", "1"}, "network namespace 1 not found: no process, thread or /run/netns bind mount is in it"})
	}
	for _, c := range cases {
		code, stdout, stderr := runDoctorCLI(t, "", c.args...)
		if code != exitUsage {
			t.Errorf("twtrace %v: exit %d, want %d (stderr %q)", c.args, code, exitUsage, stderr)
		}
		first, _, _ := strings.Cut(stderr, "\n")
		if first != "twtrace: "+c.want && !(strings.HasPrefix(first, "twtrace: ") && strings.Contains(first, c.want)) {
			t.Errorf("twtrace %v: first stderr line %q, want it to name %q", c.args, first, c.want)
		}
		if stdout != "" || strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") {
			t.Errorf("twtrace %v: stdout %q, stderr %q: want no report and no stack trace", c.args, stdout, stderr)
		}
	}
}

// expectedTier is the tier twtrace must run where doctor's own fentry
// probe gives the answer it gave: the precise tier's programs attach
// wherever a one-instruction fentry program does (pkg/tracer tests that).
func expectedTier(rep *doctor.Report) string {
	for _, c := range rep.Checks {
		if c.Name == doctor.CheckFEntry && c.Status == doctor.StatusOK {
			return "precise"
		}
	}
	return "tracepoint"
}
