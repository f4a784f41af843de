package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// sample is one second of the soak, as the CSV has it.
type sample struct {
	at        time.Duration // since the agent was ready
	phase     string        // baseline, churn or cooldown
	churn     progress      // the churn's counts so far
	rss       int64         // agent VmRSS, bytes
	scrape    time.Duration // one GET /metrics, to the last byte
	samples   int           // twtrace_* sample lines in that scrape
	workloads int           // twtrace_workload_series
	other     bool          // the folded comm="other" series is among them
	folded    int64         // twtrace_losses_total{kind="folded_series"}
	lost      int64         // losses that are uncounted events (agentLosses)
	cpu       time.Duration // agent user + system time so far
}

var csvHeader = "t_s,phase,processes,connections,errors,rss_kib,scrape_ms,twtrace_samples,workload_series,folded_series,lost,agent_cpu_s,other"

func (s sample) csv() string {
	return fmt.Sprintf("%.0f,%s,%d,%d,%d,%d,%.2f,%d,%d,%d,%d,%.2f,%t",
		s.at.Seconds(), s.phase, s.churn.processes, s.churn.connections, s.churn.errors,
		s.rss>>10, float64(s.scrape.Microseconds())/1000, s.samples, s.workloads, s.folded, s.lost, s.cpu.Seconds(), s.other)
}

// agentLosses are the losses_total kinds that are events twtrace failed
// to count (folds are counted, under another label).
var agentLosses = []string{"lost_records", "missed_runs", "untracked_sockets", "uncounted_connects"}

// scrape GETs url and times it to the body's last byte.
func scrape(c *http.Client, url string) ([]byte, time.Duration, error) {
	t0 := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	d := time.Since(t0)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, d, err
}

// exposition is what the soak reads from one scrape.
type exposition struct {
	samples   int // sample lines of twtrace_* families
	workloads int
	other     bool // some family has its comm="other" series
	folded    int64
	lost      int64
}

// readExposition counts the twtrace_* sample lines of a Prometheus text
// exposition and picks the values the soak follows. Values it cannot
// read stay 0.
func readExposition(body []byte) exposition {
	var e exposition
	for line := range bytes.Lines(body) {
		if !bytes.HasPrefix(line, []byte("twtrace_")) {
			continue
		}
		e.samples++
		if bytes.Contains(line, []byte(`comm="other"`)) {
			e.other = true
		}
		series, value, ok := splitSample(string(line))
		if !ok {
			continue
		}
		switch series {
		case "twtrace_workload_series":
			e.workloads = int(value)
		case `twtrace_losses_total{kind="folded_series"}`:
			e.folded = int64(value)
		}
		for _, kind := range agentLosses {
			if series == `twtrace_losses_total{kind="`+kind+`"}` {
				e.lost += int64(value)
			}
		}
	}
	return e
}

// splitSample splits "name{labels} value [timestamp]" at the value. Label
// values may hold spaces, so the value is found after the closing brace.
func splitSample(line string) (string, float64, bool) {
	line = strings.TrimRight(line, "\n")
	cut := 0
	if i := strings.LastIndexByte(line, '}'); i >= 0 {
		cut = i
	}
	j := strings.IndexByte(line[cut:], ' ')
	if j < 0 {
		return "", 0, false
	}
	series, rest := line[:cut+j], strings.Fields(line[cut+j:])
	if len(rest) == 0 {
		return "", 0, false
	}
	v, err := strconv.ParseFloat(rest[0], 64)
	if err != nil || v != v || v > 1<<62 || v < -(1<<62) {
		return "", 0, false
	}
	return series, v, true
}

// statusField is a "Name:  N kB" field of /proc/PID/status, in bytes.
func statusField(pid int, name string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name+":"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// processCPU is pid's user + system time so far.
func processCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces: utime and stime are the 12th and
	// 13th fields after its closing parenthesis, in clock ticks (100/s).
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}
