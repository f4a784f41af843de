// Command soak runs `twtrace agent` through an accelerated day of
// connection churn and samples it every second: its resident memory, how
// long a scrape of /metrics takes, how many series it exposes and the CPU
// it uses. The churn runs in a network namespace of its own: many
// short-lived processes (twload under thousands of names, through
// symlinks: a process's comm is the name of the file it executed), each
// opening and closing connections toward one of thousands of
// destinations. Then the churn stops and the soak waits out the series
// TTL, to see the series count return to where it started.
// `make soak` builds the binaries and runs it as root; see
// docs/performance.md.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twtrace/twtrace/pkg/load"
)

type config struct {
	twtrace, twload string
	csv             string

	connections  int64
	processes    int
	names        int
	destinations int
	parallel     int
	port         int
	twBuckets    int
	churnLimit   time.Duration

	baseline, cooldown time.Duration
	interval, ttl      time.Duration
	maxSeries          int

	churn    bool   // this is the churn child
	namesDir string // the symlinks, one per process name
}

func main() {
	var cfg config
	flag.StringVar(&cfg.twtrace, "twtrace", "bin/twtrace", "twtrace binary")
	flag.StringVar(&cfg.twload, "twload", "bin/twload", "twload binary (run under the process names)")
	flag.StringVar(&cfg.csv, "csv", "soak.csv", "where to write one line per second")
	flag.Int64Var(&cfg.connections, "connections", 2_000_000, "connections in all, spread evenly over the processes")
	flag.IntVar(&cfg.processes, "processes", 20_000, "short-lived processes, each one twload run")
	flag.IntVar(&cfg.names, "names", 5_000, "distinct process names; consecutive processes share one")
	flag.IntVar(&cfg.destinations, "destinations", 5_000, "destinations (127.x.y.z:port), process i connecting to destination i mod this")
	flag.IntVar(&cfg.parallel, "parallel", 4, "processes running at once")
	flag.IntVar(&cfg.port, "port", 8080, "the churn's server port, in its namespace")
	flag.IntVar(&cfg.twBuckets, "tw-buckets", 1<<21, "net.ipv4.tcp_max_tw_buckets in the churn's namespace")
	flag.DurationVar(&cfg.churnLimit, "churn-limit", 8*time.Minute, "stop starting processes after this long, whatever is left (0: none)")
	flag.DurationVar(&cfg.baseline, "baseline", 10*time.Second, "sampling before the churn")
	flag.DurationVar(&cfg.cooldown, "cooldown", 0, "sampling after the churn (0: the series TTL plus 5 refreshes and 10 s)")
	flag.DurationVar(&cfg.interval, "inventory-interval", time.Second, "the agent's --inventory-interval")
	flag.DurationVar(&cfg.ttl, "series-ttl", time.Minute, "the agent's --series-ttl (shortened from 10 min to accelerate the day)")
	flag.IntVar(&cfg.maxSeries, "max-series", 500, "the agent's --max-series")
	flag.BoolVar(&cfg.churn, "churn", false, "internal: run the churn (in its own network namespace)")
	flag.StringVar(&cfg.namesDir, "names-dir", "", "internal: the churn's process names")
	flag.Parse()
	if cfg.cooldown == 0 {
		cfg.cooldown = cfg.ttl + 5*cfg.interval + 10*time.Second
	}
	run := runSoak
	if cfg.churn {
		run = runChurn
	}
	if err := run(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		os.Exit(1)
	}
}

func (c config) validate() error {
	switch {
	case c.processes < 1 || c.names < 1 || c.destinations < 1 || c.parallel < 1:
		return errors.New("-processes, -names, -destinations and -parallel must be at least 1")
	case c.names > 99_999 || c.names > c.processes:
		return errors.New("-names: at most 99999 and at most -processes")
	case c.destinations > 250*250*250:
		return errors.New("-destinations: at most 15625000")
	case c.connections < int64(c.processes):
		return errors.New("-connections: at least one per process")
	}
	return nil
}

func runSoak(cfg config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root (the agent loads BPF programs; the churn makes a network namespace)")
	}
	work, err := os.MkdirTemp("", "twtrace-soak-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if cfg.namesDir, err = makeNames(cfg, work); err != nil {
		return err
	}
	out, err := os.Create(cfg.csv)
	if err != nil {
		return err
	}
	defer out.Close()
	fmt.Fprintln(out, csvHeader)

	ag, err := startAgent(cfg)
	if err != nil {
		return err
	}
	defer ag.stop()
	fmt.Printf("agent ready in %s: %s\n", ag.startup.Round(time.Millisecond), strings.Join(ag.argv[1:], " "))
	samples, err := sampleRun(cfg, ag, out)
	summarize(os.Stdout, cfg, samples)
	if err != nil {
		// The agent's log says why it stopped answering, if it did.
		ag.stop()
		return fmt.Errorf("%w; the agent's log ends:\n%s", err, lastLines(ag.stderr.String(), 30))
	}
	return ag.stop()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// makeNames makes one symlink to twload per process name.
func makeNames(cfg config, work string) (string, error) {
	twload, err := filepath.Abs(cfg.twload)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(twload); err != nil {
		return "", fmt.Errorf("%s not built: run 'make soak'", cfg.twload)
	}
	dir := filepath.Join(work, "names")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", err
	}
	for i := range cfg.names {
		if err := os.Symlink(twload, filepath.Join(dir, fmt.Sprintf("w%05d", i))); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// sampleRun samples the agent every second through the baseline, the
// churn and the cooldown, writing each sample to out as it goes.
func sampleRun(cfg config, ag *agent, out io.Writer) ([]sample, error) {
	var samples []sample
	var last atomic.Pointer[progress]
	last.Store(&progress{})
	t0 := time.Now()
	take := func(phase string) error {
		s, err := ag.sample(phase)
		if err != nil {
			return err
		}
		s.at, s.churn = time.Since(t0), *last.Load()
		samples = append(samples, s)
		_, err = fmt.Fprintln(out, s.csv())
		return err
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for end := time.Now().Add(cfg.baseline); time.Now().Before(end); <-tick.C {
		if err := take("baseline"); err != nil {
			return samples, err
		}
	}
	churn, err := startChurn(cfg, &last)
	if err != nil {
		return samples, err
	}
	for done := false; !done; <-tick.C {
		select {
		case <-churn.done:
			done = true
		default:
		}
		if err := take("churn"); err != nil {
			churn.cmd.Process.Signal(syscall.SIGTERM)
			<-churn.done
			return samples, err
		}
	}
	if churn.err != nil {
		return samples, fmt.Errorf("churn: %w: %s", churn.err, strings.TrimSpace(churn.stderr.String()))
	}
	for end := time.Now().Add(cfg.cooldown); time.Now().Before(end); <-tick.C {
		if err := take("cooldown"); err != nil {
			return samples, err
		}
	}
	return samples, nil
}

type churnRun struct {
	cmd    *exec.Cmd
	stderr strings.Builder
	done   chan struct{} // closed once the churn exited; err is then set
	err    error
}

// startChurn runs this program again with -churn in a new network
// namespace, keeping its latest progress in last.
func startChurn(cfg config, last *atomic.Pointer[progress]) (*churnRun, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-churn", "-names-dir", cfg.namesDir,
		"-connections", strconv.FormatInt(cfg.connections, 10), "-processes", strconv.Itoa(cfg.processes),
		"-names", strconv.Itoa(cfg.names), "-destinations", strconv.Itoa(cfg.destinations),
		"-parallel", strconv.Itoa(cfg.parallel), "-port", strconv.Itoa(cfg.port),
		"-tw-buckets", strconv.Itoa(cfg.twBuckets), "-churn-limit", cfg.churnLimit.String()}
	cmd, err := load.NetnsCommand(self, args...)
	if err != nil {
		return nil, err
	}
	c := &churnRun{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout = nil
	cmd.Stderr = &c.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		readProgress(stdout, last)
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// ---------------------------------------------------------------------
// The agent

type agent struct {
	argv    []string
	cmd     *exec.Cmd
	base    string
	client  *http.Client
	startup time.Duration
	stderr  syncBuffer
	exited  chan struct{}
	once    sync.Once
	err     error
}

// startAgent runs twtrace agent on an ephemeral loopback port and waits
// for /readyz to answer 200.
func startAgent(cfg config) (*agent, error) {
	a := &agent{argv: []string{cfg.twtrace, "agent", "--listen", "127.0.0.1:0",
		"--inventory-interval", cfg.interval.String(), "--series-ttl", cfg.ttl.String(),
		"--max-series", strconv.Itoa(cfg.maxSeries)}}
	a.cmd = exec.Command(a.argv[0], a.argv[1:]...)
	stderr, err := a.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	// Loopback, never through a proxy from the environment.
	a.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	t0 := time.Now()
	if err := a.cmd.Start(); err != nil {
		return nil, err
	}
	a.exited = make(chan struct{})
	addrc := make(chan string, 1)
	go a.readStderr(stderr, addrc)
	select {
	case addr := <-addrc:
		if addr != "" {
			a.base = "http://" + addr
		}
	case <-time.After(30 * time.Second):
	}
	for deadline := time.Now().Add(30 * time.Second); a.base == "" || !a.ready(); time.Sleep(5 * time.Millisecond) {
		if a.base == "" || time.Now().After(deadline) || a.hasExited() {
			a.stop()
			return nil, fmt.Errorf("twtrace agent not ready within 30 s: %s", strings.TrimSpace(a.stderr.String()))
		}
	}
	a.startup = time.Since(t0)
	return a, nil
}

func (a *agent) hasExited() bool {
	select {
	case <-a.exited:
		return true
	default:
		return false
	}
}

// readStderr keeps the agent's log and sends the address of its
// "msg=serving address=HOST:PORT" line to addrc ("" if none came).
func (a *agent) readStderr(r io.Reader, addrc chan<- string) {
	defer close(a.exited)
	sent := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		a.stderr.WriteString(line + "\n")
		if addr, ok := servingAddress(line); ok && !sent {
			addrc <- addr
			sent = true
		}
	}
	if !sent {
		addrc <- ""
	}
}

// servingAddress is the address of the agent's "msg=serving" log line.
func servingAddress(line string) (string, bool) {
	if !strings.Contains(line, "msg=serving ") {
		return "", false
	}
	for _, f := range strings.Fields(line) {
		if addr, ok := strings.CutPrefix(f, "address="); ok && addr != "" {
			return addr, true
		}
	}
	return "", false
}

func (a *agent) ready() bool {
	resp, err := a.client.Get(a.base + "/readyz")
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// sample reads the agent's memory and CPU and scrapes it once.
func (a *agent) sample(phase string) (sample, error) {
	pid := a.cmd.Process.Pid
	s := sample{phase: phase, rss: statusField(pid, "VmRSS"), cpu: processCPU(pid)}
	body, d, err := scrape(a.client, a.base+"/metrics")
	if err != nil {
		return s, fmt.Errorf("scrape: %w", err)
	}
	e := readExposition(body)
	s.scrape, s.samples, s.workloads, s.other, s.folded, s.lost = d, e.samples, e.workloads, e.other, e.folded, e.lost
	return s, nil
}

// stop sends SIGINT and waits; the agent must exit 0.
func (a *agent) stop() error {
	a.once.Do(func() {
		a.cmd.Process.Signal(syscall.SIGINT)
		<-a.exited
		if err := a.cmd.Wait(); err != nil {
			a.err = fmt.Errorf("twtrace agent: %w: %s", err, strings.TrimSpace(a.stderr.String()))
		}
	})
	return a.err
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b.WriteString(s)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
