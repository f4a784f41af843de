// Command bench measures what tracing costs a host that churns connections,
// side by side with the anchors: connections per second under twload with
// no tracer, `twtrace watch -o json`, `twtrace top -o json`, `twtrace
// agent` scraped once a second, a bare BPF
// counter on the same tracepoint (the floor) and, when installed, a
// bpftrace script printing every TCP state change. Runs are interleaved
// (every tracer once per round, the order rotated each round, the first
// round discarded as warm-up), each load in a fresh network namespace.
// Then the scale section (scale.go): ss, `twtrace snapshot`, `twtrace
// top` and the agent over piles of N timewait sockets (-scale).
// `make bench` builds the binaries and runs it as root.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

// bpftraceScript prints every TCP state change, as tcpstates-style
// scripts do: the anchor for a general-purpose tracer.
const bpftraceScript = `tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
	printf("%d %s %d %d -> %d\n", pid, comm, args->sport, args->oldstate, args->newstate);
}`

type config struct {
	twtrace, twload string
	rounds          int
	duration        time.Duration
	clients         int
	settle          time.Duration
	modes           []string
	tracers         []string
	workdir         string
	scale           scaleConfig
	scaleOnly       bool
	churn           churnConfig
}

func main() {
	connectOnceIfAsked()
	var cfg config
	var modes, tracers string
	flag.StringVar(&cfg.twtrace, "twtrace", "bin/twtrace", "twtrace binary")
	flag.StringVar(&cfg.twload, "twload", "bin/twload", "twload binary")
	flag.IntVar(&cfg.rounds, "rounds", 5, "measured rounds (one warm-up round more is run and discarded)")
	flag.DurationVar(&cfg.duration, "duration", 5*time.Second, "load duration of each run")
	flag.IntVar(&cfg.clients, "clients", 4, "concurrent twload clients")
	flag.DurationVar(&cfg.settle, "settle", 3*time.Second, "pause before each run: the previous run's network namespace, with its tens of thousands of timewait sockets, is torn down in the background meanwhile")
	flag.StringVar(&modes, "modes", "client-close,server-close", "close modes to measure")
	flag.StringVar(&tracers, "tracers", "none,watch,top,top-nostacks,top-allstacks,agent,counter,bpftrace", "tracers to measure (top: --stacks 64, its default; top-nostacks: 0; top-allstacks: 1)")
	var sizes string
	flag.StringVar(&sizes, "scale", "10000,100000,250000,1000000", "scale section: timewait pile sizes to measure ss, snapshot, top and the agent over (\"\": none)")
	flag.IntVar(&cfg.scale.destinations, "scale-destinations", 40, "scale section: destinations the pile is spread over")
	flag.DurationVar(&cfg.scale.build, "scale-build", 55*time.Second, "scale section: the longest a pile may take to build (TIME_WAIT lasts 60 s; a larger pile holds what was made by then)")
	flag.DurationVar(&cfg.scale.run, "scale-run", 10*time.Second, "scale section: how long top and the agent run over each pile")
	flag.BoolVar(&cfg.scaleOnly, "scale-only", false, "run only the scale section")
	flag.DurationVar(&cfg.churn.duration, "churn", 90*time.Second, "scale section: the churn soak's length, top over waves of connections and short-lived processes (0: none)")
	flag.IntVar(&cfg.churn.processes, "churn-processes", 2500, "churn soak: short-lived processes, one connection each")
	flag.IntVar(&cfg.churn.wave, "churn-wave", 150000, "churn soak: connections per wave (3 waves, 200 destinations)")
	cfg.churn.waves, cfg.churn.destinations = 3, 200
	flag.Parse()
	cfg.modes = strings.Split(modes, ",")
	cfg.tracers = strings.Split(tracers, ",")
	var err error
	if cfg.scale.sizes, err = parseSizes(sizes); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(2)
	}
	if cfg.scale.destinations < 1 || cfg.scale.destinations > 254 || cfg.scale.run < time.Second ||
		cfg.churn.duration != 0 && cfg.churn.duration < 10*time.Second || cfg.churn.processes < 0 || cfg.churn.wave < 0 {
		fmt.Fprintln(os.Stderr, "bench: -scale-destinations must be 1 to 254, -scale-run at least 1s, -churn 0 or at least 10s, -churn-processes and -churn-wave ≥ 0")
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// sample is one run of the load under one tracer.
type sample struct {
	connsPerSec float64
	connections int64
	loadErrors  int64
	startup     time.Duration // to the tracer's ready line; 0 when n/a
	peakRSS     int64         // bytes, VmHWM; 0 when n/a
	lost        int64         // records the tracer says it lost; -1 unknown
	received    int64         // timewait lines of the load's process; -1 when not counted
	// cpuPerConn is the CPU time the load and the tracer process used
	// during the run, per connection: BPF programs run in the load's
	// threads (or its softirqs) and are charged to it. Unlike
	// throughput, it does not move with how the two CPUs happen to be
	// scheduled, nor with other processes.
	cpuPerConn time.Duration
}

func run(cfg config) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (loads BPF programs and creates network namespaces)")
	}
	for _, b := range []string{cfg.twtrace, cfg.twload} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%s not built: run 'make bench'", b)
		}
	}
	_ = rlimit.RemoveMemlock()
	var err error
	cfg.workdir, err = os.MkdirTemp("", "twtrace-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cfg.workdir)
	if !cfg.scaleOnly {
		if err := runThroughput(cfg); err != nil {
			return err
		}
	}
	if len(cfg.scale.sizes) > 0 {
		points, err := runScale(cfg, cfg.scale)
		fmt.Println()
		reportScale(os.Stdout, cfg.scale, points)
		if err != nil {
			return err
		}
	}
	if cfg.churn.duration == 0 {
		return nil
	}
	time.Sleep(cfg.settle)
	r, err := runChurn(cfg, cfg.churn)
	fmt.Println()
	reportChurn(os.Stdout, r)
	return err
}

// runThroughput is the throughput section: every tracer under the load,
// interleaved, then the in-kernel cost and the latency.
func runThroughput(cfg config) error {
	var active []string
	for _, name := range cfg.tracers {
		if ok, why := available(cfg, name); !ok {
			fmt.Printf("skipping %s: %s\n", name, why)
			continue
		}
		active = append(active, name)
	}
	fmt.Printf("machine: %s; %d CPUs; load: twload, %d clients, %s per run, fresh netns each run\n",
		kernelRelease(), cpuCount(), cfg.clients, cfg.duration)
	fmt.Printf("tracers: %s; %d rounds + 1 warm-up, interleaved\n\n", strings.Join(active, ", "), cfg.rounds)

	if err := setStats(false); err != nil {
		return err
	}
	samples := map[string][]sample{} // mode/tracer
	for round := 0; round <= cfg.rounds; round++ {
		for _, mode := range cfg.modes {
			order := rotate(active, round)
			for _, name := range order {
				time.Sleep(cfg.settle)
				s, err := measure(cfg, name, mode, cfg.duration)
				if err != nil {
					return fmt.Errorf("round %d, %s, %s: %w", round, mode, name, err)
				}
				tag := "warm-up"
				if round > 0 {
					tag = fmt.Sprintf("round %d", round)
					samples[mode+"/"+name] = append(samples[mode+"/"+name], s)
				}
				fmt.Fprintf(os.Stderr, "%-8s %-12s %-8s %8.0f conn/s  %5.1f µs CPU/conn  lost %d  received %d/%d\n",
					tag, mode, name, s.connsPerSec, float64(s.cpuPerConn.Nanoseconds())/1000, s.lost, s.received, s.connections)
			}
		}
	}

	// One more pass with run-time statistics on, for in-kernel cost per
	// run (statistics cost a little themselves, so throughput is taken
	// from the rounds above).
	if err := setStats(true); err != nil {
		return err
	}
	costs := map[string][]progCost{}
	for _, mode := range cfg.modes {
		for _, name := range active {
			if name == "none" {
				continue
			}
			c, err := measureCost(cfg, name, mode)
			if err != nil {
				setStats(false)
				return fmt.Errorf("cost pass, %s, %s: %w", mode, name, err)
			}
			costs[mode+"/"+name] = c
		}
	}
	setStats(false)

	lat, err := measureLatency(cfg)
	if err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	report(os.Stdout, cfg, active, samples, costs, lat)
	return nil
}

func available(cfg config, name string) (bool, string) {
	switch name {
	case "none", "watch", "counter":
		return true, ""
	case "top":
		out, err := exec.Command(cfg.twtrace, "top", "--help").CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("twtrace top")) {
			return false, "this twtrace has no 'top' command yet"
		}
		return true, ""
	case "top-nostacks", "top-allstacks":
		out, err := exec.Command(cfg.twtrace, "top", "--help").CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("--stacks")) {
			return false, "this twtrace's top has no --stacks"
		}
		return true, ""
	case "agent":
		out, err := exec.Command(cfg.twtrace, "agent", "--help").CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("twtrace agent")) {
			return false, "this twtrace has no 'agent' command yet"
		}
		return true, ""
	case "bpftrace":
		if _, err := exec.LookPath("bpftrace"); err != nil {
			return false, "bpftrace is not installed (apt-get install bpftrace)"
		}
		return true, ""
	}
	return false, "unknown tracer"
}

func rotate(s []string, n int) []string {
	if len(s) == 0 {
		return s
	}
	n %= len(s)
	return append(slices.Clone(s[n:]), s[:n]...)
}

// ---------------------------------------------------------------------
// Tracers

type tracer interface {
	start() (time.Duration, error)
	// finish stops the tracer; it fills what it knows into s.
	finish(s *sample) error
}

func newTracer(cfg config, name, out string) tracer {
	switch name {
	case "none":
		return noTracer{}
	case "counter":
		return &counter{}
	case "watch":
		return &process{argv: []string{cfg.twtrace, "watch", "-o", "json"}, out: out, ready: "twtrace: tracing", count: true}
	case "top":
		return &process{argv: []string{cfg.twtrace, "top", "-o", "json", "--interval", "1s"}, out: out, ready: "twtrace: tracing"}
	case "top-nostacks", "top-allstacks":
		// top without call sites, and with every connect's stack taken:
		// the cost of the sampled default, and of a captured stack.
		n := map[string]string{"top-nostacks": "0", "top-allstacks": "1"}[name]
		return &process{argv: []string{cfg.twtrace, "top", "-o", "json", "--interval", "1s", "--stacks", n}, out: out, ready: "twtrace: tracing"}
	case "agent":
		return newAgent(cfg.twtrace)
	case "bpftrace":
		return &process{argv: []string{"bpftrace", "-e", bpftraceScript}, ready: "Attaching", readyOnStdout: true}
	}
	panic("unknown tracer " + name)
}

type noTracer struct{}

func (noTracer) start() (time.Duration, error) { return 0, nil }
func (noTracer) finish(*sample) error          { return nil }

// counter is the floor: one per-CPU increment per state change.
type counter struct {
	objs counterObjects
	l    link.Link
}

func (c *counter) start() (time.Duration, error) {
	if err := loadCounterObjects(&c.objs, nil); err != nil {
		return 0, fmt.Errorf("loading the counter: %w", err)
	}
	l, err := link.Tracepoint("sock", "inet_sock_set_state", c.objs.CountTransition, nil)
	if err != nil {
		c.objs.Close()
		return 0, fmt.Errorf("attaching the counter: %w", err)
	}
	c.l = l
	return 0, nil
}

func (c *counter) finish(s *sample) error {
	s.lost = -1
	return errors.Join(c.l.Close(), c.objs.Close())
}

// process is a tracer run as a command until SIGINT.
type process struct {
	argv          []string
	out           string // stdout goes here; "" = discarded
	ready         string // prefix of the line that says tracing is live
	readyOnStdout bool
	count         bool // count the load's timewait lines in out

	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan struct{}
}

func (p *process) start() (time.Duration, error) {
	p.cmd = exec.Command(p.argv[0], p.argv[1:]...)
	var stdout io.Writer = io.Discard
	if p.out != "" {
		f, err := os.Create(p.out)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		stdout = f
	}
	var watched io.ReadCloser
	var err error
	if p.readyOnStdout {
		watched, err = p.cmd.StdoutPipe()
	} else {
		p.cmd.Stdout = stdout
		watched, err = p.cmd.StderrPipe()
	}
	if err != nil {
		return 0, err
	}
	if p.readyOnStdout {
		p.cmd.Stderr = &p.stderr
	}
	t0 := time.Now()
	if err := p.cmd.Start(); err != nil {
		return 0, err
	}
	rd := bufio.NewReader(watched)
	readyc := make(chan error, 1)
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		for {
			line, err := rd.ReadString('\n')
			if strings.HasPrefix(line, p.ready) {
				readyc <- nil
				break
			}
			if !p.readyOnStdout {
				p.stderr.WriteString(line)
			}
			if err != nil {
				readyc <- fmt.Errorf("%s exited before it was ready: %s", p.argv[0], strings.TrimSpace(p.stderr.String()))
				return
			}
		}
		if p.readyOnStdout {
			io.Copy(stdout, rd)
		} else {
			io.Copy(&p.stderr, rd)
		}
	}()
	select {
	case err := <-readyc:
		if err != nil {
			p.cmd.Wait()
			return 0, err
		}
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		p.cmd.Wait()
		return 0, fmt.Errorf("%s not ready after 30 s", p.argv[0])
	}
	return time.Since(t0), nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) finish(s *sample) error {
	s.peakRSS = peakRSS(p.cmd.Process.Pid)
	p.cmd.Process.Signal(syscall.SIGINT)
	<-p.done
	err := p.cmd.Wait()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", p.argv[0], err, strings.TrimSpace(p.stderr.String()))
	}
	s.lost = -1
	if strings.HasPrefix(p.argv[0], "bpftrace") || filepath.Base(p.argv[0]) == "bpftrace" {
		return nil
	}
	s.lost = 0
	// twtrace reports every kind of loss on stderr at exit, one line each:
	// "twtrace: lost N records…", "twtrace: the kernel skipped N…",
	// "twtrace: N sockets …".
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		for _, prefix := range []string{"twtrace: lost ", "twtrace: the kernel skipped ", "twtrace: "} {
			if n, ok := leadingCount(line, prefix); ok {
				s.lost += n
				break
			}
		}
	}
	if p.count {
		n, err := countTimewaits(p.out, "twload")
		if err != nil {
			return err
		}
		s.received = n
	}
	return nil
}

func leadingCount(line, prefix string) (int64, bool) {
	if !strings.HasPrefix(line, prefix) {
		return 0, false
	}
	f := strings.Fields(strings.TrimPrefix(line, prefix))
	if len(f) == 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	return n, err == nil
}

// countTimewaits counts the JSON lines of timewait entries made by comm.
func countTimewaits(path, comm string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	kind := []byte(`"event":"timewait"`)
	who := []byte(`"comm":"` + comm + `"`)
	var n int64
	for sc.Scan() {
		if bytes.Contains(sc.Bytes(), kind) && bytes.Contains(sc.Bytes(), who) {
			n++
		}
	}
	return n, sc.Err()
}

// processCPU is pid's user + system time so far (0 for pid 0).
func processCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces): utime and
	// stime are the 14th and 15th of the line, in clock ticks (100/s).
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// ---------------------------------------------------------------------
// Load

type loadResult struct {
	Connections  int64            `json:"connections"`
	ConnectsPerS float64          `json:"connects_per_s"`
	Errors       map[string]int64 `json:"errors"`
	cpu          time.Duration    // user + system time of twload
}

func runLoad(cfg config, mode string, d time.Duration, extra ...string) (loadResult, error) {
	args := append([]string{"--netns-new", "--clients", strconv.Itoa(cfg.clients), "--mode", mode,
		"--duration", d.String(), "-o", "json"}, extra...)
	cmd := exec.Command(cfg.twload, args...)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return loadResult{}, fmt.Errorf("twload: %v: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return loadResult{}, err
	}
	var r loadResult
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("twload output %q: %w", out, err)
	}
	r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r, nil
}

func measure(cfg config, name, mode string, d time.Duration) (sample, error) {
	s := sample{lost: -1, received: -1}
	tr := newTracer(cfg, name, filepath.Join(cfg.workdir, "out"))
	startup, err := tr.start()
	if err != nil {
		return s, err
	}
	s.startup = startup
	pid := 0
	if p, ok := tr.(interface{ pid() int }); ok {
		pid = p.pid()
	}
	cpu0 := processCPU(pid)
	r, lerr := runLoad(cfg, mode, d)
	tracerCPU := processCPU(pid) - cpu0
	ferr := tr.finish(&s)
	if err := errors.Join(lerr, ferr); err != nil {
		return s, err
	}
	s.connsPerSec, s.connections = r.ConnectsPerS, r.Connections
	if r.Connections > 0 {
		s.cpuPerConn = (r.cpu + tracerCPU) / time.Duration(r.Connections)
	}
	for _, n := range r.Errors {
		s.loadErrors += n
	}
	return s, nil
}

// ---------------------------------------------------------------------
// In-kernel cost

type progCost struct {
	name    string
	runs    uint64
	runtime time.Duration
	misses  uint64
}

func setStats(on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	if err := os.WriteFile("/proc/sys/kernel/bpf_stats_enabled", []byte(v), 0); err != nil {
		return fmt.Errorf("kernel.bpf_stats_enabled=%s: %w", v, err)
	}
	return nil
}

func programIDs() map[ebpf.ProgramID]bool {
	ids := map[ebpf.ProgramID]bool{}
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return ids
		}
		ids[next], id = true, next
	}
}

// measureCost runs the load once under the tracer and reads the run-time
// statistics of every program the tracer loaded.
func measureCost(cfg config, name, mode string) ([]progCost, error) {
	before := programIDs()
	tr := newTracer(cfg, name, filepath.Join(cfg.workdir, "out"))
	if _, err := tr.start(); err != nil {
		return nil, err
	}
	_, lerr := runLoad(cfg, mode, cfg.duration)
	var costs []progCost
	for id := range programIDs() {
		if before[id] {
			continue
		}
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		info, err := p.Info()
		st, serr := p.Stats()
		p.Close()
		if err != nil || serr != nil {
			continue
		}
		c := progCost{name: info.Name, runs: st.RunCount, runtime: st.Runtime, misses: st.RecursionMisses}
		if c.runs > 0 {
			costs = append(costs, c)
		}
	}
	var s sample
	if err := errors.Join(lerr, tr.finish(&s)); err != nil {
		return nil, err
	}
	sort.Slice(costs, func(i, j int) bool { return costs[i].name < costs[j].name })
	return costs, nil
}

// perTransition is the in-kernel time per firing of the state tracepoint:
// every program run on it, divided by the firings (the most-run program).
func perTransition(costs []progCost) (time.Duration, uint64) {
	var firings uint64
	for _, c := range costs {
		firings = max(firings, c.runs)
	}
	var total time.Duration
	for _, c := range costs {
		// Programs on the state tracepoint run once per firing; the
		// syscall ones far less often and are reported on their own.
		if c.runs*10 >= firings*9 {
			total += c.runtime
		}
	}
	if firings == 0 {
		return 0, 0
	}
	return total / time.Duration(firings), firings
}

// ---------------------------------------------------------------------
// Latency: from a timewait entry (the kernel's timestamp) to its line
// arriving on watch's stdout.

type latency struct {
	n             int
	median, worst time.Duration
}

func measureLatency(cfg config) (latency, error) {
	cmd := exec.Command(cfg.twtrace, "watch", "-o", "json", "--comm", "twload", "--events", "timewait")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return latency{}, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return latency{}, err
	}
	if err := cmd.Start(); err != nil {
		return latency{}, err
	}
	defer cmd.Wait()
	defer cmd.Process.Signal(syscall.SIGINT)
	if line, err := bufio.NewReader(stderr).ReadString('\n'); err != nil || !strings.HasPrefix(line, "twtrace: tracing") {
		return latency{}, fmt.Errorf("watch not ready: %q %v", line, err)
	}
	const n = 40
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lats := make(chan time.Duration, n)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			now := time.Now()
			var ev struct {
				Time time.Time `json:"time"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				lats <- now.Sub(ev.Time)
			}
		}
	}()
	// One client, 20 connections a second: each entry is alone in the
	// ring buffer, the worst case for a reader that polls.
	if _, err := runLoad(config{twload: cfg.twload, clients: 1}, "client-close", time.Minute,
		"--rate", "20", "--connections", strconv.Itoa(n)); err != nil {
		return latency{}, err
	}
	var got []time.Duration
	for len(got) < n {
		select {
		case l := <-lats:
			got = append(got, l)
		case <-ctx.Done():
			return latency{}, fmt.Errorf("received %d of %d timewait lines", len(got), n)
		case <-time.After(5 * time.Second):
			return latency{}, fmt.Errorf("received %d of %d timewait lines", len(got), n)
		}
	}
	slices.Sort(got)
	return latency{n: n, median: got[n/2], worst: got[n-1]}, nil
}

// ---------------------------------------------------------------------
// Report

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func report(w io.Writer, cfg config, tracers []string, samples map[string][]sample, costs map[string][]progCost, lat latency) {
	fmt.Fprintf(w, "| mode | tracer | conn/s (median of %d) | vs none (median of per-round ratios) | vs floor (counter) | CPU per connection | vs none | vs floor | ns per state change | lost | timewait seen / connections | start-up | peak RSS |\n", cfg.rounds)
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, mode := range cfg.modes {
		base := samples[mode+"/none"]
		floor, haveFloor := ratio(samples[mode+"/counter"], base)
		for _, name := range tracers {
			ss := samples[mode+"/"+name]
			m := medianOf(ss, func(s sample) float64 { return s.connsPerSec })
			row := []string{mode, name, fmt.Sprintf("%.0f", m)}
			r, ok := ratio(ss, base)
			row = append(row, changeCells(name, r, ok, floor, haveFloor)...)
			cpu := medianOf(ss, func(s sample) float64 { return float64(s.cpuPerConn.Nanoseconds()) })
			row = append(row, fmt.Sprintf("%.1f µs", cpu/1000))
			cr, ok := ratioOf(ss, base, func(s sample) float64 { return float64(s.cpuPerConn) })
			cfloor, haveCFloor := ratioOf(samples[mode+"/counter"], base, func(s sample) float64 { return float64(s.cpuPerConn) })
			row = append(row, changeCells(name, cr, ok, cfloor, haveCFloor)...)
			if pt, _ := perTransition(costs[mode+"/"+name]); pt > 0 {
				row = append(row, strconv.FormatInt(pt.Nanoseconds(), 10))
			} else {
				row = append(row, "–")
			}
			row = append(row, lostCell(ss), seenCell(ss), startupCell(ss), rssCell(ss))
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "In-kernel cost per program (kernel.bpf_stats_enabled=1, one run per tracer and mode):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| mode | tracer | program | runs | ns/run | recursion misses |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, mode := range cfg.modes {
		for _, name := range tracers {
			for _, c := range costs[mode+"/"+name] {
				fmt.Fprintf(w, "| %s | %s | %s | %d | %d | %d |\n", mode, name, c.name, c.runs,
					c.runtime.Nanoseconds()/int64(c.runs), c.misses)
			}
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Latency, timewait entry to its watch line (%d entries at 20/s): median %s, worst %s\n",
		lat.n, lat.median.Round(time.Millisecond), lat.worst.Round(time.Millisecond))
}

// changeCells are a tracer's change against no tracer (ratio r) and, past
// the bare counter's change (floor), what the tracer adds on top of it.
func changeCells(name string, r float64, ok bool, floor float64, haveFloor bool) []string {
	if name == "none" || !ok {
		return []string{"–", "–"}
	}
	d := (r - 1) * 100
	cells := []string{fmt.Sprintf("%+.1f %%", d), "–"}
	if haveFloor && name != "counter" {
		cells[1] = fmt.Sprintf("%+.1f pp", d-(floor-1)*100)
	}
	return cells
}

// ratio is the median over rounds of ss's throughput over base's in the
// same round: runs of one round are seconds apart, so slow drift of the
// machine cancels out.
func ratio(ss, base []sample) (float64, bool) {
	return ratioOf(ss, base, func(s sample) float64 { return s.connsPerSec })
}

// ratioOf is ratio for any figure f of a sample.
func ratioOf(ss, base []sample, f func(sample) float64) (float64, bool) {
	if len(ss) == 0 || len(ss) != len(base) {
		return 0, false
	}
	v := make([]float64, len(ss))
	for i := range ss {
		if f(base[i]) == 0 {
			return 0, false
		}
		v[i] = f(ss[i]) / f(base[i])
	}
	return median(v), true
}

func medianOf(ss []sample, f func(sample) float64) float64 {
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	return median(v)
}

func lostCell(ss []sample) string {
	var n int64
	for _, s := range ss {
		if s.lost < 0 {
			return "–"
		}
		n += s.lost
	}
	return strconv.FormatInt(n, 10)
}

func seenCell(ss []sample) string {
	var seen, conns int64
	for _, s := range ss {
		if s.received < 0 {
			return "–"
		}
		seen += s.received
		conns += s.connections
	}
	return fmt.Sprintf("%d / %d", seen, conns)
}

func startupCell(ss []sample) string {
	var v []float64
	for _, s := range ss {
		if s.startup > 0 {
			v = append(v, float64(s.startup.Milliseconds()))
		}
	}
	if len(v) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f ms", median(v))
}

func rssCell(ss []sample) string {
	var peak int64
	for _, s := range ss {
		peak = max(peak, s.peakRSS)
	}
	if peak == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f MiB", float64(peak)/(1<<20))
}

func kernelRelease() string {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return "?"
	}
	var b []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return "Linux " + string(b)
}

func cpuCount() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return bytes.Count(b, []byte("\nprocessor")) + bytes.Count(b[:min(len(b), 9)], []byte("processor"))
}
