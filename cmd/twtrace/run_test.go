package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/twtrace/twtrace/internal/containertest"
	"github.com/twtrace/twtrace/internal/sitecheck"
	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/aggregate"
	twrun "github.com/twtrace/twtrace/pkg/run"
	"github.com/twtrace/twtrace/pkg/workload"
)

// clientCmd is the argv of a testnet client process doing spec: this
// test binary, told by its environment (set by env(1), so that twtrace
// itself does not see it).
func clientCmd(t *testing.T, spec testnet.ClientSpec) []string {
	t.Helper()
	raw, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return []string{"env", "TWTRACE_TEST_CLIENT=" + string(raw), os.Args[0]}
}

type runResult struct {
	code    int
	stdout  string
	stderr  string
	report  *twrun.Report
	clients []testnet.ClientResult // the JSON lines clients printed
}

// twtraceRun runs `twtrace run ARGS` inside ns (the command inherits the
// namespace), with --report, and returns what happened.
func twtraceRun(t *testing.T, ns *testnet.Netns, args ...string) runResult {
	t.Helper()
	file := filepath.Join(t.TempDir(), "report.json")
	argv := append([]string{"-test.run=^TestCLIHelper$", "--", "run", "--report", file}, args...)
	var res runResult
	var stdout, stderr bytes.Buffer
	ns.Do(t, func() error {
		cmd := exec.Command(os.Args[0], argv...)
		cmd.Env = append(os.Environ(), "TWTRACE_TEST_CLI=1")
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			res.code = ee.ExitCode()
			return nil
		}
		return err
	})
	res.stdout, res.stderr = stdout.String(), stderr.String()
	if raw, err := os.ReadFile(file); err == nil {
		res.report = &twrun.Report{}
		if err := json.Unmarshal(raw, res.report); err != nil {
			t.Fatalf("report %s: %v", raw, err)
		}
	}
	sc := bufio.NewScanner(strings.NewReader(res.stdout))
	for sc.Scan() {
		var c testnet.ClientResult
		if json.Unmarshal(sc.Bytes(), &c) == nil && c.PID != 0 {
			res.clients = append(res.clients, c)
		}
	}
	return res
}

// procOf finds pid's process in the report.
func procOf(t *testing.T, r *twrun.Report, pid int) twrun.Process {
	t.Helper()
	for _, p := range r.Processes {
		if int(p.PID) == pid {
			return p
		}
	}
	t.Fatalf("pid %d not in the report's processes %+v", pid, r.Processes)
	return twrun.Process{}
}

// A client that opens a connection per request, 20 times: the report has
// exactly 20 connects and 20 timewait entries (as client), all its own,
// toward the one destination, and the per-request verdict.
func TestRunChurnExact(t *testing.T) {
	requireBPF(t)
	ns, s := churnNetns(t)
	res := twtraceRun(t, ns, append([]string{"--"}, clientCmd(t, testnet.ClientSpec{Dest: s.Dest(false), N: 20})...)...)
	if res.code != 0 || res.report == nil || len(res.clients) != 1 {
		t.Fatalf("exit %d, report %v, clients %+v; stderr %s", res.code, res.report != nil, res.clients, res.stderr)
	}
	r, c := res.report, res.clients[0]
	if len(c.Ports) != 20 {
		t.Fatalf("client made %d connections, want 20", len(c.Ports))
	}
	want := twrun.Totals{Counts: aggregate.Counts{Connects: 20, Timewait: 20}, TimewaitClient: 20}
	if r.Totals != want {
		t.Errorf("totals %+v, want %+v", r.Totals, want)
	}
	if r.ExitCode != 0 || !r.Passed || len(r.Thresholds) != 0 {
		t.Errorf("exit_code %d passed %v thresholds %+v", r.ExitCode, r.Passed, r.Thresholds)
	}
	if len(r.Processes) != 1 {
		t.Fatalf("processes %+v, want the client alone", r.Processes)
	}
	p := procOf(t, r, c.PID)
	if p.Comm != testnet.ClientComm || p.Connects != 20 || p.Timewait != 20 || p.ConnectErrors != 0 || p.Verdict != "per-request" {
		t.Errorf("process %+v", p)
	}
	if len(r.Destinations) != 1 {
		t.Fatalf("destinations %+v, want one", r.Destinations)
	}
	d := r.Destinations[0]
	if d.Daddr != s.Addr.Addr() || d.Dport != s.Addr.Port() || d.Netns != ns.Inode || d.Connects != 20 || d.Timewait != 20 {
		t.Errorf("destination %+v, want %v in netns %d with 20 connects and 20 timewait", d, s.Addr, ns.Inode)
	}
	if d.PortsUsable != testnet.SmallRangeUsable {
		t.Errorf("destination's usable ports %d, want %d", d.PortsUsable, testnet.SmallRangeUsable)
	}
	if len(d.Series) == 0 || d.Series[len(d.Series)-1].Held != 20 || d.TimewaitPeak != 20 {
		t.Errorf("series %+v peak %d: want the last sample (after the drain) to hold all 20", d.Series, d.TimewaitPeak)
	}
	if !strings.Contains(res.stderr, "20 connects, 20 timewait (20 as client, 0 as server)") {
		t.Errorf("text report on stderr: %s", res.stderr)
	}
}

// COMMAND forks two clients (12 and 8 connections): each is attributed
// exactly, and the totals are their sum. sh itself makes none.
func TestRunFollowsChildren(t *testing.T) {
	requireBPF(t)
	ns, s := churnNetns(t)
	a := strings.Join(shellQuote(clientCmd(t, testnet.ClientSpec{Dest: s.Dest(false), N: 12})), " ")
	b := strings.Join(shellQuote(clientCmd(t, testnet.ClientSpec{Dest: s.Dest(false), N: 8})), " ")
	res := twtraceRun(t, ns, "--", "sh", "-c", a+" & "+b+" & wait")
	if res.code != 0 || res.report == nil || len(res.clients) != 2 {
		t.Fatalf("exit %d, report %v, clients %+v; stderr %s", res.code, res.report != nil, res.clients, res.stderr)
	}
	r := res.report
	if r.Totals.Connects != 20 || r.Totals.Timewait != 20 {
		t.Errorf("totals %+v, want 20 connects and 20 timewait", r.Totals)
	}
	if len(r.Processes) != 2 {
		t.Errorf("processes %+v, want the two clients", r.Processes)
	}
	for _, c := range res.clients {
		p := procOf(t, r, c.PID)
		n := uint64(len(c.Ports))
		if p.Connects != n || p.Timewait != n {
			t.Errorf("pid %d: %d connects, %d timewait; it made %d connections", c.PID, p.Connects, p.Timewait, n)
		}
	}
	if got := []int{len(res.clients[0].Ports), len(res.clients[1].Ports)}; !slices.Contains(got, 12) || !slices.Contains(got, 8) {
		t.Errorf("clients made %v connections, want 12 and 8", got)
	}
}

// A pooled client (one connection, ten requests, closed by the server as
// a keep-alive server does) leaves no timewait: thresholds of zero pass.
func TestRunPooledPasses(t *testing.T) {
	requireBPF(t)
	ns := testnet.New(t)
	ns.Park(t)
	s := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerAfterTen)
	spec := testnet.ClientSpec{Dest: s.Dest(false), N: 1, Requests: 10, PauseMs: 5, ReadFirst: true}
	res := twtraceRun(t, ns, append([]string{"--max-timewait", "0", "--max-connects", "1", "--fail-on-connect-error", "--"}, clientCmd(t, spec)...)...)
	if res.code != 0 || res.report == nil || len(res.clients) != 1 {
		t.Fatalf("exit %d, report %v, clients %+v; stderr %s", res.code, res.report != nil, res.clients, res.stderr)
	}
	r := res.report
	if r.Totals != (twrun.Totals{Counts: aggregate.Counts{Connects: 1}}) {
		t.Errorf("totals %+v, want 1 connect and nothing else", r.Totals)
	}
	if !r.Passed || len(r.Thresholds) != 3 {
		t.Fatalf("passed %v, thresholds %+v", r.Passed, r.Thresholds)
	}
	for _, th := range r.Thresholds {
		if th.Result != "pass" {
			t.Errorf("threshold %+v", th)
		}
	}
	if p := procOf(t, r, res.clients[0].PID); p.Verdict == "per-request" {
		t.Errorf("pooled client judged %q", p.Verdict)
	}
}

// A threshold crossed by a command that succeeded: exit 3, and the report
// says which, with the figures.
func TestRunThresholdExit(t *testing.T) {
	requireBPF(t)
	ns, s := churnNetns(t)
	html := filepath.Join(t.TempDir(), "report.html")
	res := twtraceRun(t, ns, append([]string{"--max-timewait", "5", "--max-connects", "100", "--html", html, "--"},
		clientCmd(t, testnet.ClientSpec{Dest: s.Dest(false), N: 10})...)...)
	if res.code != exitThreshold || res.report == nil {
		t.Fatalf("exit %d, want %d; stderr %s", res.code, exitThreshold, res.stderr)
	}
	want := []twrun.Threshold{
		{Name: "max_connects", Limit: 100, Value: 10, Result: "pass"},
		{Name: "max_timewait", Limit: 5, Value: 10, Result: "fail"},
	}
	if !slices.Equal(res.report.Thresholds, want) || res.report.Passed {
		t.Errorf("thresholds %+v passed %v, want %+v", res.report.Thresholds, res.report.Passed, want)
	}
	if !strings.Contains(res.stderr, "threshold max_timewait: 10, limit 5: FAIL") {
		t.Errorf("stderr %s", res.stderr)
	}
	page, err := os.ReadFile(html)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(page), fmt.Sprintf(`data-destination="%s"`, s.Addr)) {
		t.Errorf("the HTML report has no chart for %s", s.Addr)
	}
}

// COMMAND's failing status passes through, even with a threshold crossed;
// killed by a signal, 128+N.
func TestRunExitStatusPassesThrough(t *testing.T) {
	requireBPF(t)
	ns, s := churnNetns(t)
	client := strings.Join(shellQuote(clientCmd(t, testnet.ClientSpec{Dest: s.Dest(false), N: 3})), " ")
	res := twtraceRun(t, ns, "--max-timewait", "0", "--", "sh", "-c", client+"; exit 7")
	if res.code != 7 || res.report == nil || res.report.ExitCode != 7 || res.report.Totals.Timewait != 3 {
		t.Fatalf("exit %d (want 7), report %+v; stderr %s", res.code, res.report, res.stderr)
	}
	res = twtraceRun(t, ns, "--", "sh", "-c", "kill -KILL $$")
	if res.code != 128+int(syscall.SIGKILL) || res.report == nil || res.report.Signal != "SIGKILL" {
		t.Fatalf("exit %d (want %d), report %+v", res.code, 128+int(syscall.SIGKILL), res.report)
	}
	// Not found: 127, as a shell says, with one line.
	res = twtraceRun(t, ns, "--", "/nonexistent/command")
	if res.code != 127 || res.report != nil || strings.Count(res.stderr, "\n") != 1 || !strings.Contains(res.stderr, "/nonexistent/command") {
		t.Fatalf("exit %d (want 127), stderr %q", res.code, res.stderr)
	}
}

// SIGTERM sent to twtrace reaches COMMAND, whose own exit status is then
// twtrace's.
func TestRunForwardsSignals(t *testing.T) {
	requireBPF(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCLIHelper$", "--", "run", "--",
		"sh", "-c", `trap 'echo got-TERM; exit 42' TERM; echo ready; while :; do sleep 0.05; done`)
	cmd.Env = append(os.Environ(), "TWTRACE_TEST_CLI=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(out)
	if line, err := rd.ReadString('\n'); line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("first line %q, err %v; stderr %s", line, err, stderr.String())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	rest, _ := rd.ReadString(0)
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 42 {
		t.Errorf("twtrace run exited with %v, want status 42; stderr %s", err, stderr.String())
	}
	if rest != "got-TERM\n" {
		t.Errorf("COMMAND's output after the signal %q, want got-TERM", rest)
	}
}

func shellQuote(argv []string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return out
}

// A shell loop of 30 short-lived clients, one connection each: run keeps
// one entry per process, but the workload (the 30 of them, folded by
// program) is one, judged per-request, and so is each of its processes.
func TestRunFoldsShellLoop(t *testing.T) {
	requireBPF(t)
	ns, s := churnNetns(t)
	client := strings.Join(shellQuote(clientCmd(t, testnet.ClientSpec{Dest: s.Dest(false), N: 1})), " ")
	res := twtraceRun(t, ns, "--", "sh", "-c", "i=0; while [ $i -lt 30 ]; do "+client+" || exit 1; i=$((i+1)); done")
	if res.code != 0 || res.report == nil || len(res.clients) != 30 {
		t.Fatalf("exit %d, report %v, %d clients; stderr %s", res.code, res.report != nil, len(res.clients), res.stderr)
	}
	r := res.report
	if r.By != "program" || len(r.Workloads) != 1 {
		t.Fatalf("by %q, workloads %+v: want one, by program", r.By, r.Workloads)
	}
	w := r.Workloads[0]
	if w.Workload != testnet.ClientComm || w.ProcessCount != 30 || w.Connects != 30 || w.Timewait != 30 || w.Verdict != "per-request" {
		t.Errorf("workload %+v: want %s, 30 processes, 30 connects and timewait, per-request", w, testnet.ClientComm)
	}
	if len(r.Processes) != 30 {
		t.Fatalf("%d processes, want 30", len(r.Processes))
	}
	for _, c := range res.clients {
		if p := procOf(t, r, c.PID); p.Connects != 1 || p.Timewait != 1 || p.Verdict != "per-request" {
			t.Errorf("process %+v: want 1 connect, 1 timewait, per-request", p)
		}
	}
	if len(r.Rows) != 1 || r.Rows[0].ProcessCount != 30 || r.Rows[0].ParentComm != "sh" {
		t.Errorf("rows %+v: want one row of 30 processes under sh", r.Rows)
	}
	if !strings.Contains(res.stderr, testnet.ClientComm+" ×30 ← sh ") {
		t.Errorf("text report does not name the folded workload: %s", res.stderr)
	}
}

// A pre-fork pool of 4 workers, 5 connections each: under --by program
// (the default) one workload of 20 connections, judged per-request (and
// so is each worker); under --by pid 4 rows of 5, none of which reaches
// the verdict's threshold alone.
func TestRunFoldsPool(t *testing.T) {
	requireBPF(t)
	for _, by := range []string{"program", "pid"} {
		t.Run(by, func(t *testing.T) {
			ns, s := churnNetns(t)
			pool := append([]string{"env", "TWTRACE_TEST_POOL=4"}, clientCmd(t, testnet.ClientSpec{Dest: s.Dest(false), N: 5})[1:]...)
			res := twtraceRun(t, ns, append([]string{"--by", by, "--"}, pool...)...)
			if res.code != 0 || res.report == nil || len(res.clients) != 4 {
				t.Fatalf("exit %d, report %v, %d workers; stderr %s", res.code, res.report != nil, len(res.clients), res.stderr)
			}
			r := res.report
			perRequest := "per-request"
			if by == "pid" {
				perRequest = "ok"
			}
			for _, c := range res.clients {
				if p := procOf(t, r, c.PID); p.Connects != 5 || p.Timewait != 5 || p.Verdict != perRequest {
					t.Errorf("worker %+v: want 5 connects, 5 timewait, %s", p, perRequest)
				}
			}
			if by == "pid" {
				if len(r.Workloads) != 4 || len(r.Rows) != 4 {
					t.Errorf("%d workloads, %d rows; want 4 of each", len(r.Workloads), len(r.Rows))
				}
				return
			}
			if len(r.Workloads) != 1 {
				t.Fatalf("workloads %+v, want the pool's workers as one", r.Workloads)
			}
			if w := r.Workloads[0]; w.ProcessCount != 4 || w.Connects != 20 || w.Timewait != 20 || w.Verdict != "per-request" {
				t.Errorf("workload %+v: want 4 processes, 20 connects and timewait, per-request", w)
			}
			if len(r.Rows) != 1 || r.Rows[0].ParentComm != testnet.PoolComm {
				t.Errorf("rows %+v: want one, under %s", r.Rows, testnet.PoolComm)
			}
		})
	}
}

// A container that runc runs under twtrace run (followed like any child:
// runc forks it), with Docker's cgroup layout, whose shell loop makes 20
// one-shot connections: under --by container, one workload named by its
// runtime and short id, every owner field exact, per-request.
func TestRunNamesContainer(t *testing.T) {
	requireBPF(t)
	runc := testnet.RequireHost(t, "runc")[0]
	ns, s := churnNetns(t)
	b := make([]byte, 32)
	rand.Read(b)
	id := hex.EncodeToString(b)
	cgroup := "/twtrace-test.slice/docker-" + id + ".scope"
	host, port, _ := strings.Cut(s.Dest(false), ":")
	loop := fmt.Sprintf(`i=0; while [ $i -lt 20 ]; do nc %s %s </dev/null || exit 1; i=$((i+1)); done`, host, port)
	bundle := containertest.Bundle(t, []string{"sh", "-c", loop}, containertest.BundleOptions{CgroupsPath: cgroup})
	containertest.CleanCgroups(t, cgroup)
	res := twtraceRun(t, ns, "--by", "container", "--", runc, "--root", t.TempDir(), "run", "--bundle", bundle, "twt-"+id[:12])
	if res.code != 0 || res.report == nil {
		t.Fatalf("exit %d, report %v; stderr %s", res.code, res.report != nil, res.stderr)
	}
	r := res.report
	var w *twrun.Workload
	for i := range r.Workloads {
		if r.Workloads[i].ContainerID == id {
			w = &r.Workloads[i]
		}
	}
	if w == nil {
		t.Fatalf("workloads %+v: none is the container", r.Workloads)
	}
	want := workload.Identity{Cgroup: cgroup, ContainerID: id, ContainerRuntime: "docker"}
	if w.Identity != want || w.Workload != "docker "+id[:12] || w.ProcessCount != 20 || w.Connects != 20 || w.Timewait != 20 || w.Verdict != "per-request" {
		t.Errorf("workload %+v: want %q, 20 processes, 20 connects and timewait, per-request, owner %+v", *w, "docker "+id[:12], want)
	}
}

// The Go program under `twtrace run`: every connect's stack is
// taken, and the report names the line of the net.Dial call, in JSON
// (with the stack) and in the text report.
func TestRunCallSite(t *testing.T) {
	requireBPF(t)
	ns, s := churnNetns(t)
	res := twtraceRun(t, ns, append([]string{"--"}, clientCmd(t, testnet.ClientSpec{Dest: s.Dest(false), N: 20, NetDial: true})...)...)
	if res.code != 0 || res.report == nil || len(res.clients) != 1 || len(res.report.Rows) != 1 {
		t.Fatalf("exit %d, report %+v, clients %+v; stderr %s", res.code, res.report, res.clients, res.stderr)
	}
	fn, file, line := testnet.DialCallSite()
	want := fmt.Sprintf("%s (%s:%d)", fn, file, line)
	row := res.report.Rows[0]
	if row.CallSite != want || row.ClientLibrary != "" || len(row.Stack) < 4 || row.CallSites != nil {
		t.Errorf("call site %q, library %q, %d frames, sites %+v; want %q, one site", row.CallSite, row.ClientLibrary, len(row.Stack), row.CallSites, want)
	}
	if !strings.Contains(res.stderr, "called from "+want) {
		t.Errorf("text report: no %q in %s", "called from "+want, res.stderr)
	}
}

// The net/http client under `twtrace run`: Go's default client,
// 16 requests at a time against its idle pool of 2 per host, opens most
// connections per request; the report names the library, its dial
// goroutine's frame as the call site, and MaxIdleConnsPerHost first.
func TestRunCallSiteNetHTTP(t *testing.T) {
	requireBPF(t)
	ns := testnet.New(t)
	srv := testnet.StartHTTPServer(t, ns)
	// The client pauses after its first GET, while twtrace reads that
	// dial's stack and probes the executable (gohttp.h): longer under
	// emulation.
	pause := 1000
	if testnet.InVMGuest() {
		pause = 8000
	}
	spec := testnet.ClientSpec{Dest: srv.Addr, HTTPGets: 400, HTTPConcurrency: 16, HTTPPauseMs: pause}
	res := twtraceRun(t, ns, append([]string{"--"}, clientCmd(t, spec)...)...)
	if res.code != 0 || res.report == nil || len(res.clients) != 1 || len(res.report.Rows) != 1 {
		t.Fatalf("exit %d, report %+v, clients %+v; stderr %s", res.code, res.report, res.clients, res.stderr)
	}
	row := res.report.Rows[0]
	// The transport also dials connections no request ends up using
	// (an idle one came free first): more connects than connections
	// handed to requests.
	if n := len(res.clients[0].Ports); n < 40 || row.Connects < uint64(n) {
		t.Errorf("%d connections handed to requests, %d connects in the row: want many, at least as many", n, row.Connects)
	}
	// Every dial's caller is taken under run: all but the first.
	sitecheck.HTTPSite(t, row, row.Connects-1)
	if row.Verdict != "per-request" || len(row.Advice) == 0 || !strings.Contains(row.Advice[0], "MaxIdleConnsPerHost") {
		t.Errorf("verdict %q (%s), advice %q: want per-request, MaxIdleConnsPerHost first", row.Verdict, row.Reason, row.Advice)
	}
}

// goTestSource is a Go module's one test file: it dials per request from
// fetch, line 10 of dial_test.go.
const goTestSource = `package gt

import (
	"io"
	"net"
	"testing"
)

func fetch(addr string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

func TestPerRequest(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed := make(chan struct{}, 30)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close(); closed <- struct{}{} }()
		}
	}()
	for i := 0; i < 30; i++ {
		if err := fetch(ln.Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	// Exiting with connections still queued on the listener would
	// reset them: the client's side would never reach TIME_WAIT.
	for i := 0; i < 30; i++ {
		<-closed
	}
}
`

// `twtrace run -- go test ./...`: the test binary the go command builds,
// runs and deletes is symbolized while it runs: its row names fetch at
// the line of its net.Dial call.
func TestRunGoTestCallSite(t *testing.T) {
	requireBPF(t)
	gobin := testnet.RequireHost(t, "go")[0]
	dir := t.TempDir()
	for name, body := range map[string]string{"go.mod": "module gt\n\ngo 1.21\n", "dial_test.go": goTestSource} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Built first, so that the traced run only runs it.
	build := exec.Command(gobin, "test", "-count=1", "-run=^$", "./...")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go test: %v\n%s", err, out)
	}
	ns := testnet.New(t)
	report := filepath.Join(dir, "report.json")
	var stderr bytes.Buffer
	ns.Do(t, func() error {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCLIHelper$", "--", "run", "--report", report, "--",
			gobin, "test", "-count=1", "./...")
		cmd.Dir, cmd.Stderr = dir, &stderr
		cmd.Env = append(os.Environ(), "TWTRACE_TEST_CLI=1")
		return cmd.Run()
	})
	raw, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("%v; stderr %s", err, stderr.String())
	}
	var r twrun.Report
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("gt.fetch (%s:10)", filepath.Join(dir, "dial_test.go"))
	for _, row := range r.Rows {
		if row.Comm == "gt.test" {
			if row.Timewait != 30 || row.CallSite != want {
				t.Errorf("gt.test row: %d timewait, call site %q (note %q); want 30, %q", row.Timewait, row.CallSite, row.CallSiteNote, want)
			}
			return
		}
	}
	t.Errorf("no gt.test row in %+v; stderr %s", r.Rows, stderr.String())
}
