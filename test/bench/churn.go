package main

// The churn soak of the scale section: `twtrace top -o json` for 90 s
// while waves of connections go to 200 destinations and thousands of
// short-lived processes each open one, its RSS sampled every second
// (issue 17: peak, and flat once its tables are full).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/internal/testnet"
)

// churnConfig is the soak's part of the flags.
type churnConfig struct {
	duration     time.Duration
	waves        int // piles of wave connections, spread over the run
	wave         int // connections per wave
	destinations int
	processes    int // short-lived processes, one connection each
}

// oneConnectEnv makes this binary a short-lived process that connects
// once to the address in the variable, closes first and exits.
const oneConnectEnv = "TWTRACE_BENCH_CONNECT_ONCE"

// connectOnceIfAsked is the short-lived process's whole life.
func connectOnceIfAsked() {
	addr := os.Getenv(oneConnectEnv)
	if addr == "" {
		return
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		os.Exit(2)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		os.Exit(1)
	}
	err = unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	unix.Close(fd)
	if err != nil {
		os.Exit(1)
	}
	os.Exit(0)
}

// churnResult is what the soak saw.
type churnResult struct {
	cfg                  churnConfig
	waveMade             []int64
	processes, procFails int
	rss                  []int64 // VmRSS each second, bytes
	peakRSS, mapBytes    int64
	cpuPct               float64
	pileEnd              int // ss's count at the end
	losses               map[string]int64
	rows                 int
}

func runChurn(cfg config, cc churnConfig) (churnResult, error) {
	r := churnResult{cfg: cc}
	self, err := os.Executable()
	if err != nil {
		return r, err
	}
	path, inode, cleanup, err := churnNetns()
	if err != nil {
		return r, err
	}
	defer cleanup()
	// The processes' servers: an empty pile on port 79, for the run.
	procServers, err := testnet.BuildPile(path, testnet.PileSpec{N: 0, Destinations: cc.destinations, Port: 79})
	if err != nil {
		return r, err
	}
	defer procServers.Close()

	frames := int(cc.duration / time.Second)
	top, stdout, rd, err := startChurnTop(cfg.twtrace, frames, inode)
	if err != nil {
		return r, err
	}
	ready := time.Now()
	cpu0 := processCPU(top.Process.Pid)
	s := follow(top.Process.Pid, 200*time.Millisecond)
	rssDone := make(chan struct{})
	go func() {
		defer close(rssDone)
		for range frames {
			time.Sleep(time.Second)
			r.rss = append(r.rss, currentRSS(top.Process.Pid))
		}
	}()

	loadErr := r.load(self, path, procServers, cc)
	rest, _ := io.ReadAll(rd)
	werr := top.Wait()
	cpu := top.ProcessState.UserTime() + top.ProcessState.SystemTime()
	r.cpuPct = 100 * (cpu - cpu0).Seconds() / time.Since(ready).Seconds()
	s.stop()
	<-rssDone
	r.peakRSS, r.mapBytes = s.peakRSS, s.mapBytes
	if err := errors.Join(loadErr, werr); err != nil {
		return r, fmt.Errorf("churn: %w: %s", err, rest)
	}
	if c, err := runSS(path); err == nil {
		r.pileEnd = c.pileNow
	}
	r.losses, r.rows, err = lastFrame(stdout.Bytes())
	return r, err
}

// churnNetns makes the soak's namespace; cleanup deletes it.
func churnNetns() (path string, inode uint64, cleanup func(), err error) {
	name := fmt.Sprintf("twtrace-churn-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return "", 0, nil, fmt.Errorf("ip netns add: %v: %s", err, bytes.TrimSpace(out))
	}
	cleanup = func() { exec.Command("ip", "netns", "del", name).Run() }
	path = filepath.Join("/run/netns", name)
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		cleanup()
		return "", 0, nil, err
	}
	return path, st.Ino, cleanup, nil
}

// startChurnTop starts top for frames frames over the namespace inode
// and waits for its ready line; the rest of its stderr is in rd.
func startChurnTop(twtrace string, frames int, inode uint64) (*exec.Cmd, *bytes.Buffer, *bufio.Reader, error) {
	top := exec.Command(twtrace, "top", "-o", "json", "--interval", "1s", "--count", strconv.Itoa(frames),
		"--netns", strconv.FormatUint(inode, 10))
	stdout := &bytes.Buffer{}
	top.Stdout = stdout
	stderr, err := top.StderrPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := top.Start(); err != nil {
		return nil, nil, nil, err
	}
	rd := bufio.NewReader(stderr)
	if line, err := rd.ReadString('\n'); err != nil || !strings.HasPrefix(line, "twtrace: tracing") {
		top.Process.Kill()
		top.Wait()
		return nil, nil, nil, fmt.Errorf("top not ready: %q %v", line, err)
	}
	return top, stdout, rd, nil
}

// load runs the soak's waves of connections and its short-lived
// processes, and returns when they are done.
func (r *churnResult) load(self, path string, procServers *testnet.Pile, cc churnConfig) error {
	var wg sync.WaitGroup
	waveErrs := make([]error, cc.waves)
	r.waveMade = make([]int64, cc.waves)
	for w := range cc.waves {
		wg.Go(func() {
			time.Sleep(time.Duration(w) * cc.duration / time.Duration(cc.waves+1))
			p, err := testnet.BuildPile(path, testnet.PileSpec{N: cc.wave, Destinations: cc.destinations,
				Port: uint16(80 + w), Deadline: cc.duration / time.Duration(cc.waves+1)})
			if err != nil {
				waveErrs[w] = err
				return
			}
			r.waveMade[w] = p.Made()
			p.Close()
		})
	}
	var procErr error
	wg.Go(func() {
		r.processes, r.procFails, procErr = churnProcesses(self, path, procServers, cc)
	})
	wg.Wait()
	return errors.Join(append(waveErrs, procErr)...)
}

// lastFrame reads the losses and the row count of top's last frame.
func lastFrame(out []byte) (map[string]int64, int, error) {
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	var last struct {
		Rows   []json.RawMessage `json:"rows"`
		Losses map[string]int64  `json:"losses"`
	}
	if err := json.Unmarshal(lines[len(lines)-1], &last); err != nil {
		return nil, 0, fmt.Errorf("top's last frame: %w", err)
	}
	return last.Losses, len(last.Rows), nil
}

// churnProcesses starts cc.processes processes evenly over the run, each
// connecting once to the next destination of servers, from inside the
// namespace (a child inherits the starting thread's namespace).
func churnProcesses(self, nsPath string, servers *testnet.Pile, cc churnConfig) (started, failed int, err error) {
	every := cc.duration * 9 / 10 / time.Duration(max(cc.processes, 1))
	err = testnet.InNetns(nsPath, func() error {
		for i := range cc.processes {
			t0 := time.Now()
			cmd := exec.Command(self)
			cmd.Env = append(os.Environ(), oneConnectEnv+"="+servers.Destinations[i%len(servers.Destinations)].Addr.String())
			if err := cmd.Run(); err != nil {
				failed++
			}
			started++
			time.Sleep(every - time.Since(t0))
		}
		return nil
	})
	return started, failed, err
}

func currentRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func reportChurn(w io.Writer, r churnResult) {
	var made int64
	for _, m := range r.waveMade {
		made += m
	}
	fmt.Fprintf(w, "Churn soak: `twtrace top -o json --interval 1s` for %s while %d waves of up to %s connections (made: %v, %s in all) "+
		"went to %d destinations and %d short-lived processes (%d failed) each opened one; ss counted %s timewait sockets at the end.\n\n",
		r.cfg.duration, r.cfg.waves, thousands(r.cfg.wave), r.waveMade, thousands(int(made)), r.cfg.destinations,
		r.processes, r.procFails, thousands(r.pileEnd))
	fmt.Fprintf(w, "| peak RSS | BPF maps | RSS + maps | CPU, %% of one CPU | rows | losses (last frame) |\n|---|---|---|---|---|---|\n")
	fmt.Fprintf(w, "| %.1f MiB | %.1f MiB | %.1f MiB | %.1f %% | %d | %s |\n\n", mib(r.peakRSS), mib(r.mapBytes),
		mib(r.peakRSS+r.mapBytes), r.cpuPct, r.rows, lossCell(r.losses))
	fmt.Fprint(w, "RSS every 10 s (MiB):")
	for i := 9; i < len(r.rss); i += 10 {
		fmt.Fprintf(w, " %ds %.1f;", i+1, mib(r.rss[i]))
	}
	fmt.Fprintln(w)
	if n := len(r.rss); n >= 60 {
		fmt.Fprintf(w, "Flat once full? highest RSS in the last third %.1f MiB, in the middle third %.1f MiB.\n",
			mib(maxOf(r.rss[2*n/3:])), mib(maxOf(r.rss[n/3:2*n/3])))
	}
}

func lossCell(l map[string]int64) string {
	var parts []string
	for _, k := range []string{"lost_records", "untracked_sockets", "missed_runs", "uncounted_connects", "folded_events", "uncounted_processes", "join_refused"} {
		if l[k] != 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, l[k]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func maxOf(v []int64) int64 {
	var m int64
	for _, x := range v {
		m = max(m, x)
	}
	return m
}
