package main

// The scale section: what ss, twtrace snapshot, twtrace top and the agent
// cost over a pile of N timewait sockets, side by side on the same pile,
// for each N of -scale (issue 17).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twtrace/twtrace/internal/testnet"
)

// scaleConfig is the scale section's part of the flags.
type scaleConfig struct {
	sizes        []int
	destinations int
	build        time.Duration // the longest a pile may take to build
	run          time.Duration // how long top and the agent run
}

// toolCost is one tool's run over a pile.
type toolCost struct {
	tool    string
	pileNow int // ss's TIME_WAIT count right before this run
	wall    time.Duration
	cpu     time.Duration // user + system of the whole process (rusage)
	// steady is the CPU time and wall time from the tool's ready point
	// (top: its "tracing" line; the agent: /readyz 200) to its end: start-up
	// (loading BPF, the first inventory) left out. Zero for one-shot tools.
	steadyCPU, steadyWall time.Duration
	peakRSS               int64 // bytes: VmHWM sampled while it ran, or rusage at exit
	mapBytes              int64 // memlock of the BPF maps its fds held, at most
	timewait              map[string]int64
	note                  string
}

// cpuPct is the steady CPU use, in % of one CPU.
func (c toolCost) cpuPct() float64 {
	if c.steadyWall <= 0 {
		return 0
	}
	return 100 * c.steadyCPU.Seconds() / c.steadyWall.Seconds()
}

// perSocketNs is the CPU time per refresh (1 s) per socket of the pile, or
// of the single read for one-shot tools.
func (c toolCost) perSocketNs() float64 {
	if c.pileNow == 0 {
		return 0
	}
	if c.steadyWall > 0 {
		return c.steadyCPU.Seconds() / c.steadyWall.Seconds() * 1e9 / float64(c.pileNow)
	}
	return float64(c.cpu.Nanoseconds()) / float64(c.pileNow)
}

// scalePoint is every tool's cost over one pile.
type scalePoint struct {
	asked, made int
	took        time.Duration
	made1       map[string]int64 // per destination address
	failed      int64
	tools       []toolCost
}

func runScale(cfg config, sc scaleConfig) ([]scalePoint, error) {
	if _, err := exec.LookPath("ss"); err != nil {
		return nil, errors.New("the scale section needs ss (iproute2)")
	}
	var points []scalePoint
	for _, n := range sc.sizes {
		p, err := scaleOne(cfg, sc, n)
		if err != nil {
			return points, fmt.Errorf("pile of %d: %w", n, err)
		}
		points = append(points, p)
		// The namespace's sockets are freed in the background after it
		// goes: let that finish before the next pile is built.
		time.Sleep(cfg.settle + time.Duration(p.made/50000)*time.Second)
	}
	return points, nil
}

func scaleOne(cfg config, sc scaleConfig, n int) (scalePoint, error) {
	name := fmt.Sprintf("twtrace-scale-%d-%d", os.Getpid(), n)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return scalePoint{}, fmt.Errorf("ip netns add: %v: %s", err, bytes.TrimSpace(out))
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	path := filepath.Join("/run/netns", name)
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return scalePoint{}, err
	}
	inode := strconv.FormatUint(st.Ino, 10)

	pile, err := testnet.BuildPile(path, testnet.PileSpec{N: n, Destinations: sc.destinations, Deadline: sc.build})
	if err != nil {
		return scalePoint{}, err
	}
	defer pile.Close()
	p := scalePoint{asked: n, made: int(pile.Made()), took: pile.Took, made1: map[string]int64{}}
	for _, d := range pile.Destinations {
		p.made1[d.Addr.Addr().String()] = d.Made - d.FinWait2 // in TIME_WAIT
		p.failed += d.Failed
	}
	fmt.Fprintf(os.Stderr, "scale: pile of %d (asked %d) over %d destinations in %s, %d connects failed, %d left in FIN_WAIT2\n",
		p.made, n, sc.destinations, pile.Took.Round(time.Millisecond), p.failed, pile.FinWait2())

	steps := []struct {
		tool string
		run  func() (toolCost, error)
	}{
		{"ss", func() (toolCost, error) { return runSS(path) }},
		{"snapshot", func() (toolCost, error) {
			return runOneShot(cfg.twtrace, "snapshot", "--netns", inode, "-o", "json")
		}},
		{"top", func() (toolCost, error) {
			return runTop(cfg.twtrace, sc.run, "top", "-o", "json", "--interval", "1s",
				"--count", strconv.Itoa(int(sc.run/time.Second)), "--netns", inode)
		}},
		{"agent", func() (toolCost, error) {
			return runAgent(cfg.twtrace, sc.run, "agent", "--listen", "127.0.0.1:0", "--inventory-interval", "1s", "--netns", inode)
		}},
	}
	for _, s := range steps {
		// The pile right before: TIME_WAIT lasts 60 s, a large pile
		// shrinks while it is measured.
		now, err := runSS(path)
		if err != nil {
			return p, err
		}
		c, err := s.run()
		if err != nil {
			return p, fmt.Errorf("%s: %w", s.tool, err)
		}
		c.tool, c.pileNow = s.tool, now.pileNow
		if c.note != "" { // what the tool said it lost
			c.note = exactness(c, p) + "; " + c.note
		} else {
			c.note = exactness(c, p)
		}
		fmt.Fprintf(os.Stderr, "scale: %d %-8s pile %d  wall %s  cpu %s  steady %.1f%%  rss %.1f MiB  maps %.1f MiB  %s\n",
			p.made, s.tool, c.pileNow, c.wall.Round(time.Millisecond), c.cpu.Round(time.Millisecond), c.cpuPct(),
			mib(c.peakRSS), mib(c.mapBytes), c.note)
		p.tools = append(p.tools, c)
	}
	return p, nil
}

// exactness compares a tool's per-destination TIME_WAIT counts with the
// connections the pile made toward each.
func exactness(c toolCost, p scalePoint) string {
	if c.timewait == nil {
		return "–"
	}
	var total int64
	mismatched := 0
	for addr, made := range p.made1 {
		if c.timewait[addr] != made {
			mismatched++
		}
		total += c.timewait[addr]
	}
	if mismatched == 0 && len(c.timewait) == len(p.made1) {
		return fmt.Sprintf("exact (%d per destination)", total/int64(len(p.made1)))
	}
	return fmt.Sprintf("%d of %d destinations differ from made (total %d)", mismatched, len(p.made1), total)
}

// runSS is the anchor: `ss -Htan state time-wait` run in the namespace,
// its lines counted as they stream.
func runSS(nsPath string) (toolCost, error) {
	var c toolCost
	var lines lineCounter
	err := testnet.InNetns(nsPath, func() error {
		var err error
		c, err = runMeasured(&lines, "ss", "-Htan", "state", "time-wait")
		return err
	})
	c.pileNow = lines.n
	return c, err
}

// maxRSSTag marks GNU time's line on stderr.
const maxRSSTag = "twtrace-bench-maxrss:"

// runMeasured runs a command that reads once and exits, stdout to out. Its
// peak RSS comes from GNU time when installed: the rusage of a child Go
// started counts the starting process's RSS too (Go forks with CLONE_VM,
// and exec keeps the old memory's peak), but time forks a child of its
// own; else from VmHWM sampled every 2 ms.
func runMeasured(out io.Writer, argv ...string) (toolCost, error) {
	var c toolCost
	timeBin, haveTime := "/usr/bin/time", true
	if _, err := os.Stat(timeBin); err != nil {
		haveTime = false
	}
	if haveTime {
		argv = append([]string{timeBin, "-f", maxRSSTag + "%M"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = out, &stderr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return c, err
	}
	s := follow(cmd.Process.Pid, 2*time.Millisecond)
	err := cmd.Wait()
	c.wall = time.Since(t0)
	s.stop()
	if err != nil {
		return c, fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	// wait4's rusage holds the command's CPU time, time's included.
	c.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	c.peakRSS, c.mapBytes = s.peakRSS, s.mapBytes
	if haveTime {
		kib, ok := maxRSS(stderr.String())
		if !ok {
			return c, fmt.Errorf("%s: no peak RSS from time in %q", argv[3], stderr.String())
		}
		c.peakRSS = kib << 10
	}
	return c, nil
}

// maxRSS is the KiB on GNU time's maxRSSTag line.
func maxRSS(stderr string) (int64, bool) {
	for _, l := range strings.Split(stderr, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), maxRSSTag); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			return n, err == nil && n >= 0
		}
	}
	return 0, false
}

type lineCounter struct{ n int }

func (l *lineCounter) Write(b []byte) (int, error) {
	l.n += bytes.Count(b, []byte("\n"))
	return len(b), nil
}

// sampler follows a running process: its peak RSS (VmHWM) and the memory
// of the BPF maps its descriptors hold, every interval until stop. When
// the process has a child (GNU time's), the child is the one followed.
type sampler struct {
	pid      int
	stopc    chan struct{}
	done     sync.WaitGroup
	peakRSS  int64
	mapBytes int64
}

func follow(pid int, every time.Duration) *sampler {
	s := &sampler{pid: pid, stopc: make(chan struct{})}
	s.done.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			target := pid
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)); err == nil {
				if f := strings.Fields(string(b)); len(f) > 0 {
					target, _ = strconv.Atoi(f[0])
				}
			}
			s.peakRSS = max(s.peakRSS, peakRSS(target))
			s.mapBytes = max(s.mapBytes, mapMemory(target))
			select {
			case <-s.stopc:
				return
			case <-tick.C:
			}
		}
	})
	return s
}

func (s *sampler) stop() {
	close(s.stopc)
	s.done.Wait()
}

// mapMemory sums the memlock of the BPF maps pid's descriptors hold, each
// map once: what bpftool map reports as its memory.
func mapMemory(pid int) int64 {
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	seen := map[int64]bool{}
	var total int64
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if id, memlock, ok := parseFdinfo(b); ok && !seen[id] {
			seen[id] = true
			total += memlock
		}
	}
	return total
}

// parseFdinfo reads a BPF map's id and memlock from an fdinfo file; ok is
// false for a descriptor of anything else.
func parseFdinfo(b []byte) (id, memlock int64, ok bool) {
	var haveID, haveMem bool
	for line := range bytes.Lines(b) {
		k, v, found := strings.Cut(strings.TrimSpace(string(line)), ":")
		if !found {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "map_id":
			id, haveID = n, true
		case "memlock":
			memlock, haveMem = n, true
		}
	}
	return id, memlock, haveID && haveMem
}

// runOneShot runs a twtrace command that reads once and exits (snapshot)
// and keeps its per-destination timewait counts.
func runOneShot(twtrace string, args ...string) (toolCost, error) {
	var stdout bytes.Buffer
	c, err := runMeasured(&stdout, append([]string{twtrace}, args...)...)
	if err != nil {
		return c, err
	}
	c.timewait, err = destinationTimewait(stdout.Bytes())
	return c, err
}

// runTop runs `twtrace top -o json --count N` to its end; its steady
// window starts at its "tracing" line, when the probes are attached.
func runTop(twtrace string, budget time.Duration, args ...string) (toolCost, error) {
	var c toolCost
	cmd := exec.Command(twtrace, args...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return c, err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return c, err
	}
	s := follow(cmd.Process.Pid, 100*time.Millisecond)
	rd := bufio.NewReader(stderr)
	line, rerr := rd.ReadString('\n')
	ready := time.Now()
	cpuAtReady := processCPU(cmd.Process.Pid)
	rest, _ := io.ReadAll(rd)
	err = cmd.Wait()
	end := time.Now()
	s.stop()
	if rerr != nil || !strings.HasPrefix(line, "twtrace: tracing") || err != nil {
		return c, fmt.Errorf("top: %v: %s%s", err, line, rest)
	}
	c.wall = end.Sub(t0)
	// Peak RSS from VmHWM only: wait4's rusage would count this
	// process's own (see runMeasured).
	c.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	c.peakRSS, c.mapBytes = s.peakRSS, s.mapBytes
	c.steadyCPU, c.steadyWall = c.cpu-cpuAtReady, end.Sub(ready)
	if c.wall > budget+30*time.Second {
		return c, fmt.Errorf("top took %s for %s of frames", c.wall, budget)
	}
	frames := bytes.Split(bytes.TrimSpace(stdout.Bytes()), []byte("\n"))
	c.timewait, err = destinationTimewait(frames[len(frames)-1])
	if lost := leadingLosses(string(rest)); lost != "" {
		c.note = lost
	}
	return c, err
}

// leadingLosses is the loss lines top printed at exit, joined.
func leadingLosses(stderr string) string {
	var out []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "twtrace: ") {
			out = append(out, strings.TrimPrefix(l, "twtrace: "))
		}
	}
	return strings.Join(out, "; ")
}

// runAgent runs the agent for d after /readyz, scraped every second as
// the bench's agent row does; the steady window starts at /readyz 200
// (probes attached, the first inventory read).
func runAgent(twtrace string, d time.Duration, args ...string) (toolCost, error) {
	var c toolCost
	a := &agent{argv: append([]string{twtrace}, args...)}
	t0 := time.Now()
	if _, err := a.start(); err != nil {
		return c, err
	}
	s := follow(a.pid(), 100*time.Millisecond)
	ready := time.Now()
	cpuAtReady := processCPU(a.pid())
	time.Sleep(d)
	cpuAtEnd := processCPU(a.pid())
	end := time.Now()
	s.stop()
	var row sample
	err := a.finish(&row)
	c.wall = time.Since(t0)
	c.cpu = a.cmd.ProcessState.UserTime() + a.cmd.ProcessState.SystemTime()
	c.peakRSS = max(s.peakRSS, row.peakRSS)
	c.mapBytes = s.mapBytes
	c.steadyCPU, c.steadyWall = cpuAtEnd-cpuAtReady, end.Sub(ready)
	if row.lost > 0 {
		c.note = fmt.Sprintf("%d lost", row.lost)
	}
	return c, err
}

// destinationTimewait sums a snapshot's or top frame's timewait counts
// per destination address (docs/json.md: destinations[].daddr, .timewait).
func destinationTimewait(doc []byte) (map[string]int64, error) {
	var d struct {
		Destinations []struct {
			Daddr    string `json:"daddr"`
			Timewait int64  `json:"timewait"`
		} `json:"destinations"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("reading destinations: %w", err)
	}
	m := map[string]int64{}
	for _, x := range d.Destinations {
		m[x.Daddr] += x.Timewait
	}
	return m, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// reportScale prints the scale table and the growth between its points.
func reportScale(w io.Writer, sc scaleConfig, points []scalePoint) {
	fmt.Fprintf(w, "Scale: client-side timewait piles over %d destinations (127.0.0.1-%d:80, range 1024-65535), "+
		"each tool run once per pile, one after the other; top %s of frames at --interval 1s, the agent %s at --inventory-interval 1s, "+
		"scraped every second; steady = after the ready line (top) or /readyz (agent):\n\n",
		sc.destinations, sc.destinations, sc.run, sc.run)
	fmt.Fprintln(w, "| pile made (asked; build) | tool | pile right before (ss) | wall | CPU | steady CPU, % of one CPU | CPU per socket (per 1 s refresh, or per read) | peak RSS | BPF maps | RSS + maps | per-destination timewait vs made |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|")
	for _, p := range points {
		for _, c := range p.tools {
			steady := "–"
			if c.steadyWall > 0 {
				steady = fmt.Sprintf("%.1f %%", c.cpuPct())
			}
			maps, total := "–", fmt.Sprintf("%.1f MiB", mib(c.peakRSS))
			if c.tool != "ss" {
				maps = fmt.Sprintf("%.1f MiB", mib(c.mapBytes))
				total = fmt.Sprintf("%.1f MiB", mib(c.peakRSS+c.mapBytes))
			}
			fmt.Fprintf(w, "| %s (%s; %s) | %s | %s | %.2f s | %.2f s | %s | %.0f ns | %.1f MiB | %s | %s | %s |\n",
				thousands(p.made), thousands(p.asked), p.took.Round(100*time.Millisecond), c.tool, thousands(c.pileNow),
				c.wall.Seconds(), c.cpu.Seconds(), steady, c.perSocketNs(), mib(c.peakRSS), maps, total, c.note)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Growth between points (per socket of the pile), and the last slope carried to 1,000,000:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| tool | from → to | memory (RSS + maps) per socket | CPU per 100k sockets | at 1M by projection |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, tool := range []string{"ss", "snapshot", "top", "agent"} {
		var prev *toolCost
		var last struct {
			c                  toolCost
			memSlope, cpuSlope float64
		}
		for i := range points {
			c := findTool(points[i], tool)
			if c == nil {
				continue
			}
			if prev != nil && c.pileNow != prev.pileNow {
				dn := float64(c.pileNow - prev.pileNow)
				mem := float64(c.peakRSS+c.mapBytes-prev.peakRSS-prev.mapBytes) / dn
				if mem > -0.5 && mem < 0.5 {
					mem = 0 // not "-0 B"
				}
				cpu := cpuFigure(*c) - cpuFigure(*prev)
				fmt.Fprintf(w, "| %s | %s → %s | %.0f B | %s |  |\n", tool, thousands(prev.pileNow), thousands(c.pileNow),
					mem, cpuCell(tool, cpu/dn*100000))
				last.c, last.memSlope, last.cpuSlope = *c, mem, cpu/dn
			}
			prev = c
		}
		if prev != nil && last.c.pileNow > 0 && last.c.pileNow < 1000000 {
			rest := float64(1000000 - last.c.pileNow)
			mem := float64(last.c.peakRSS+last.c.mapBytes) + last.memSlope*rest
			cpu := cpuFigure(last.c) + last.cpuSlope*rest
			fmt.Fprintf(w, "| %s | %s → 1,000,000 (projected) |  |  | %.0f MiB, %s |\n", tool, thousands(last.c.pileNow),
				mem/(1<<20), cpuCell(tool, cpu))
		}
	}
}

// cpuFigure is what a tool's CPU is judged by: % of one CPU for the ones
// that refresh, seconds of CPU for one read otherwise.
func cpuFigure(c toolCost) float64 {
	if c.steadyWall > 0 {
		return c.cpuPct()
	}
	return c.cpu.Seconds()
}

func cpuCell(tool string, v float64) string {
	if tool == "top" || tool == "agent" {
		return fmt.Sprintf("%.1f %% of one CPU", v)
	}
	return fmt.Sprintf("%.3f s CPU", v)
}

func findTool(p scalePoint, tool string) *toolCost {
	for i := range p.tools {
		if p.tools[i].tool == tool {
			return &p.tools[i]
		}
	}
	return nil
}

// thousands writes n with commas: 250,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// parseSizes reads -scale: "10000,100000,250000,1000000", or "" for none.
func parseSizes(s string) ([]int, error) {
	var sizes []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(strings.ReplaceAll(f, "_", ""))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("invalid -scale size %q", f)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}
