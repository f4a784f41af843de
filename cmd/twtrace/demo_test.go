package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/demo"
	"github.com/twtrace/twtrace/pkg/inventory"
	"github.com/twtrace/twtrace/pkg/report"
	"github.com/twtrace/twtrace/pkg/top"
)

// demoNames are the BPF programs the demo loads: the tracer's and the
// inventory's iterator.
var demoNames = func() map[string]bool {
	m := map[string]bool{inventory.ProgramName: true}
	for n := range ourNames {
		m[n] = true
	}
	return m
}()

// demoRun is a `twtrace demo` child process, its stdout read frame by
// frame.
type demoRun struct {
	cmd    *exec.Cmd
	out    *bufio.Reader
	stderr bytes.Buffer
	frames []top.Frame
}

func startDemo(t *testing.T, args ...string) *demoRun {
	t.Helper()
	d := &demoRun{}
	d.cmd = exec.Command(os.Args[0], append([]string{"-test.run=^TestCLIHelper$", "--", "demo"}, args...)...)
	d.cmd.Env = append(os.Environ(), "TWTRACE_TEST_CLI=1")
	d.cmd.Stderr = &d.stderr
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.out = bufio.NewReader(out)
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Kill()
			d.cmd.Wait()
		}
	})
	return d
}

// next reads the next frame; false at the end of the output.
func (d *demoRun) next(t *testing.T) bool {
	t.Helper()
	line, err := d.out.ReadBytes('\n')
	if err == io.EOF && len(line) == 0 {
		return false
	}
	if err != nil {
		t.Fatalf("reading the demo's output: %v", err)
	}
	var f top.Frame
	if err := json.Unmarshal(line, &f); err != nil {
		t.Fatalf("frame %q: %v", line, err)
	}
	d.frames = append(d.frames, f)
	return true
}

// untilBothRows reads frames until one has the churner's and the pooled
// client's rows.
func (d *demoRun) untilBothRows(t *testing.T) (churner, pooled *report.Row) {
	t.Helper()
	for d.next(t) {
		f := &d.frames[len(d.frames)-1]
		if c, p := row(f, "churner"), row(f, "pooled"); c != nil && p != nil {
			return c, p
		}
	}
	t.Fatalf("the demo ended without showing both clients; stderr %q", d.stderr.String())
	return nil, nil
}

func row(f *top.Frame, comm string) *report.Row {
	for i := range f.Rows {
		if f.Rows[i].Comm == comm {
			return &f.Rows[i]
		}
	}
	return nil
}

// leftovers is what the demo made, to find again once it is gone.
type leftovers struct {
	netns uint32
	pids  map[int]string          // the clients, by comm
	progs map[ebpf.ProgramID]bool // the BPF programs it held
}

// take notes what the running demo made, from its first frame with both
// clients and from its open descriptors, and checks it: the namespace is
// not ours, and the demo holds every program it should, all loaded after
// the test started.
func (d *demoRun) take(t *testing.T, before map[ebpf.ProgramID]string) *leftovers {
	t.Helper()
	churner, pooled := d.untilBothRows(t)
	own := netnsOf(t, "/proc/self/ns/net")
	if churner.Netns == own || churner.Netns == 0 || pooled.Netns != churner.Netns {
		t.Fatalf("clients in netns %d and %d, ours is %d: want both in the demo's own", churner.Netns, pooled.Netns, own)
	}
	l := &leftovers{netns: churner.Netns, pids: map[int]string{int(churner.PID): "churner", int(pooled.PID): "pooled"}}
	if len(l.pids) != 2 || l.pids[d.cmd.Process.Pid] != "" {
		t.Fatalf("pids: churner %d, pooled %d, demo %d: want three processes", churner.PID, pooled.PID, d.cmd.Process.Pid)
	}
	l.progs = heldPrograms(t, d.cmd.Process.Pid)
	names := map[string]bool{}
	for id := range l.progs {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			t.Fatalf("program %d held by the demo: %v", id, err)
		}
		info, err := p.Info()
		p.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !demoNames[info.Name] {
			t.Errorf("the demo holds program %d named %q: not one of twtrace's", id, info.Name)
		}
		if _, ok := before[id]; ok {
			t.Errorf("program %d (%s) held by the demo was loaded before it started", id, info.Name)
		}
		names[info.Name] = true
	}
	for _, n := range []string{"tw_state", "tw_state_nest", "tw_reset", "tw_reset_nest", inventory.ProgramName} {
		if !names[n] {
			t.Errorf("the demo holds no program %s; it holds %v", n, names)
		}
	}
	return l
}

// heldPrograms are the BPF programs pid has a descriptor of (a program's,
// or a link's): "prog_id:" in /proc/PID/fdinfo.
func heldPrograms(t *testing.T, pid int) map[ebpf.ProgramID]bool {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[ebpf.ProgramID]bool{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		for l := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(l, "prog_id:"); ok {
				if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32); err == nil {
					ids[ebpf.ProgramID(n)] = true
				}
			}
		}
	}
	return ids
}

// loadedPrograms are the kernel's programs named as the demo's, by id.
func loadedPrograms(t *testing.T) map[ebpf.ProgramID]string {
	t.Helper()
	m := map[ebpf.ProgramID]string{}
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return m
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // unloaded meanwhile
		}
		if info, err := p.Info(); err == nil && demoNames[info.Name] {
			m[id] = info.Name
		}
		p.Close()
	}
}

func netnsOf(t *testing.T, path string) uint32 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return uint32(st.Ino)
}

// alive reports whether pid runs: not gone, not a zombie waiting to be
// reaped by whoever inherited it. A reused pid is not the client if it is
// named otherwise.
func alive(pid int, comm string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open || len(s) < close+3 {
		return false
	}
	state := s[close+2]
	return state != 'Z' && state != 'X' && s[open+1:close] == comm
}

// checkNothingLeft waits for the demo's processes, namespace and programs
// to be gone (a SIGKILLed demo's children get their signal from the
// kernel, program ids are freed after an RCU grace period), and fails
// naming what remains. The budget only bounds a failing test.
func checkNothingLeft(t *testing.T, l *leftovers) {
	t.Helper()
	var left []string
	testnet.WaitFor(10*time.Second, func() bool {
		left = left[:0]
		for pid, comm := range l.pids {
			if alive(pid, comm) {
				left = append(left, fmt.Sprintf("process %d (%s)", pid, comm))
			}
		}
		for _, p := range testnet.NetnsHolders(l.netns) {
			left = append(left, fmt.Sprintf("netns %d: %s", l.netns, p))
		}
		for id, name := range loadedPrograms(t) {
			if l.progs[id] {
				left = append(left, fmt.Sprintf("BPF program %d (%s)", id, name))
			}
		}
		return len(left) == 0
	})
	if len(left) > 0 {
		t.Errorf("left behind: %s", strings.Join(left, "; "))
	}
}

// `twtrace demo -o json --duration 6s`: six frames; the churner is flagged
// per-request, fills the range and then fails; the pooled client made one
// connection and no timewait; every figure of the destination is exact.
// Afterwards nothing of the demo remains.
func TestDemoJSON(t *testing.T) {
	requireBPF(t)
	before := loadedPrograms(t)
	// 8 s: the range runs out at about 3.3 s at full speed; an emulated
	// guest (arm64 under TCG) starts and churns slower, and the frames
	// after the exhaustion must still show the churner's failures.
	d := startDemo(t, "-o", "json", "--duration", "8s")
	l := d.take(t, before)
	for d.next(t) {
	}
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("demo: %v; stderr %q", err, d.stderr.String())
	}
	if len(d.frames) != 8 {
		t.Fatalf("%d frames, want 8", len(d.frames))
	}
	for i := range d.frames {
		f := &d.frames[i]
		if len(f.Namespaces) != 1 || f.Namespaces[0].Netns != l.netns {
			t.Errorf("frame %d: namespaces %+v, want only the demo's, %d", i, f.Namespaces, l.netns)
		}
		for _, r := range f.Rows {
			if r.Netns != l.netns || (r.Comm != "churner" && r.Comm != "pooled") {
				t.Errorf("frame %d: row %+v: want only the two clients", i, r)
			}
		}
	}

	last := &d.frames[len(d.frames)-1]
	n := &last.Namespaces[0]
	if n.PortRange != [2]uint16{demo.PortFirst, demo.PortLast} || n.TwReuse != 0 || n.Usable != 500 ||
		n.ReservedInRange != 0 || n.BoundInRange != 0 {
		t.Errorf("namespace %+v: want range 40000-40499, tcp_tw_reuse 0, 500 usable", n)
	}
	if len(last.Destinations) != 1 {
		t.Fatalf("destinations %+v: want the server only", last.Destinations)
	}
	dest := &last.Destinations[0]
	if dest.Daddr.String() != "127.0.0.1" || dest.Dport != 8080 || dest.PortsUsable != 500 {
		t.Errorf("destination %s:%d with %d usable ports, want 127.0.0.1:8080 with 500", dest.Daddr, dest.Dport, dest.PortsUsable)
	}

	// The range runs out at about 3.3 s (500 ports at 150/s): the
	// churner's failures show from the frame after the one that saw no
	// port left.
	exhausted := -1
	for i := range d.frames {
		if ds := d.frames[i].Destinations; len(ds) == 1 && ds[0].PortsAvailable == 0 {
			exhausted = i
			break
		}
	}
	if exhausted < 0 || exhausted == len(d.frames)-1 {
		t.Fatalf("ports ran out at frame %d of %d: the churner did not keep its rate", exhausted, len(d.frames))
	}
	for i := exhausted + 1; i < len(d.frames); i++ {
		if c := row(&d.frames[i], "churner"); c == nil || c.ConnectErrors == 0 {
			t.Errorf("frame %d, after the range ran out: churner row %+v, want connect errors", i, c)
		}
	}
	// 500 ports: one is pooled's connection, 499 the churner's timewait
	// sockets (tcp_rfc1337=1: no RST ends one early to free its port).
	if dest.PortsAvailable != 0 || dest.PortsInUse != 500 || dest.Timewait+dest.FinWait2 != 499 ||
		dest.Established != 1 || dest.OtherStates != 0 || dest.Unattributed != 0 {
		t.Errorf("destination %+v: want 0 of 500 ports available, 499 timewait, 1 established, none unattributed", dest)
	}
	c, p := row(last, "churner"), row(last, "pooled")
	if c == nil || p == nil {
		t.Fatalf("last frame rows %+v: want churner and pooled", last.Rows)
	}
	if c.Verdict != "per-request" || c.Timewait != 499 || c.TimewaitNow != 499 || c.ConnectErrors == 0 || c.Role != "client" ||
		c.Daddr != dest.Daddr || c.Dport != 8080 || len(c.Advice) == 0 {
		t.Errorf("churner %+v: want per-request, 499 timewait all held now, connect errors, advice", c)
	}
	if p.Connects != 1 || p.Timewait != 0 || p.TimewaitNow != 0 || p.ConnectErrors != 0 || p.Verdict != "" ||
		p.Daddr != dest.Daddr || p.Dport != 8080 {
		t.Errorf("pooled %+v: want exactly 1 connect, no timewait, no error, no verdict", p)
	}

	// stderr: the narration, then the summary with the same figures.
	lines := strings.Split(strings.TrimSpace(d.stderr.String()), "\n")
	if len(lines) != 6 || !strings.HasPrefix(lines[0], "twtrace: demo: ") || !strings.Contains(lines[0], fmt.Sprint(l.netns)) {
		t.Fatalf("stderr %q: want the narration naming netns %d, then a 5-line summary", d.stderr.String(), l.netns)
	}
	for _, want := range []string{
		"0 of 500 ports free toward 127.0.0.1:8080",
		fmt.Sprintf("churner (pid %d): %d connects, 499 timewait, %d failed with EADDRNOTAVAIL; verdict per-request", c.PID, c.Connects, c.ConnectErrors),
		fmt.Sprintf("pooled  (pid %d): 1 connect, 0 timewait, 0 failed", p.PID),
		"reuse connections",
	} {
		if !strings.Contains(d.stderr.String(), want) {
			t.Errorf("summary %q lacks %q", lines[1:], want)
		}
	}
	checkNothingLeft(t, l)
}

// SIGTERM mid-run: exit 0 with the summary, and nothing left behind.
func TestDemoSIGTERMCleansUp(t *testing.T) {
	requireBPF(t)
	before := loadedPrograms(t)
	d := startDemo(t, "-o", "json", "--duration", "60s")
	l := d.take(t, before)
	d.cmd.Process.Signal(syscall.SIGTERM)
	for d.next(t) {
	}
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("demo after SIGTERM: %v, want exit 0; stderr %q", err, d.stderr.String())
	}
	if s := d.stderr.String(); !strings.Contains(s, "churner (pid") || !strings.Contains(s, "pooled  (pid") {
		t.Errorf("stderr %q: want the summary", s)
	}
	checkNothingLeft(t, l)
}

// SIGKILL mid-run: the demo can clean nothing up; the kernel kills its
// processes (PR_SET_PDEATHSIG), the namespace goes with them, and the BPF
// programs with the demo's descriptors.
func TestDemoSIGKILLLeavesNothing(t *testing.T) {
	requireBPF(t)
	before := loadedPrograms(t)
	d := startDemo(t, "-o", "json", "--duration", "60s")
	l := d.take(t, before)
	d.cmd.Process.Kill()
	d.cmd.Wait()
	checkNothingLeft(t, l)
}

// Bad flags: exit 2 with one line naming the problem.
func TestDemoBadFlagsExitTwo(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"demo", "-o", "yaml"}, `invalid --output "yaml"`},
		{[]string{"demo", "-o", "table"}, "needs a terminal"},
		{[]string{"demo", "--duration", "-1s"}, "invalid --duration"},
		{[]string{"demo", "--duration", "500ms"}, "invalid --duration"},
		{[]string{"demo", "--duration", "soon"}, "--duration"},
		{[]string{"demo", "--interval", "1s"}, "unknown flag: --interval"},
		{[]string{"demo", "extra"}, "unknown command"},
	}
	for _, c := range cases {
		code, stderr := runChild(t, "TWTRACE_TEST_CLI=1", c.args...)
		if code != exitUsage {
			t.Errorf("twtrace %v: exit %d, want %d (stderr %q)", c.args, code, exitUsage, stderr)
		}
		first, _, _ := strings.Cut(stderr, "\n")
		if !strings.HasPrefix(first, "twtrace: ") || !strings.Contains(first, c.want) {
			t.Errorf("twtrace %v: first stderr line %q, want it to contain %q", c.args, first, c.want)
		}
	}
}

// Without capabilities: exit 1 with one line naming them, before anything
// is made.
func TestDemoMissingCapabilitiesExitOne(t *testing.T) {
	code, stderr := runChild(t, dropCapsEnv+"=demo -o json --duration 1s")
	if code != exitError {
		t.Fatalf("exit %d, want %d (stderr %q)", code, exitError, stderr)
	}
	for _, c := range []string{"CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON"} {
		if !strings.Contains(stderr, c) {
			t.Errorf("stderr %q does not name %s", stderr, c)
		}
	}
	if strings.Count(stderr, "\n") != 1 {
		t.Errorf("stderr %q: want one line", stderr)
	}
}
