package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// agentLosses are the twtrace_losses_total kinds that are events or
// records twtrace failed to count: the agent's equivalent of what watch
// and top report at exit. Folds (folded_series, folded_events) count
// what was counted under another label, so they are not losses here.
var agentLosses = []string{"lost_records", "missed_runs", "untracked_sockets", "uncounted_connects"}

// agent runs `twtrace agent` and scrapes its /metrics once a second for
// as long as the load runs, so that its cost includes serving scrapes as
// Prometheus would. Its start-up is the time to /readyz answering 200:
// every probe attached and the first inventory read.
type agent struct {
	argv []string

	cmd    *exec.Cmd
	mu     sync.Mutex // guards stderr, written by the reading goroutine
	stderr bytes.Buffer
	done   chan struct{}
	base   string // http://host:port
	client *http.Client

	cancel  context.CancelFunc
	scraper sync.WaitGroup
	scrapes int
	failed  error // the first failed scrape
}

func newAgent(twtrace string) *agent {
	return &agent{argv: []string{twtrace, "agent", "--listen", "127.0.0.1:0", "--inventory-interval", "1s"}}
}

func (a *agent) pid() int { return a.cmd.Process.Pid }

func (a *agent) start() (time.Duration, error) {
	a.cmd = exec.Command(a.argv[0], a.argv[1:]...)
	a.cmd.Stdout = io.Discard
	stderr, err := a.cmd.StderrPipe()
	if err != nil {
		return 0, err
	}
	// Loopback only, and never through a proxy from the environment.
	a.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	t0 := time.Now()
	if err := a.cmd.Start(); err != nil {
		return 0, err
	}
	addrc := make(chan string, 1)
	a.done = make(chan struct{})
	go a.readStderr(stderr, addrc)
	fail := func(err error) (time.Duration, error) {
		a.cmd.Process.Kill()
		<-a.done
		a.cmd.Wait()
		return 0, fmt.Errorf("%w: %s", err, strings.TrimSpace(a.logs()))
	}
	var addr string
	select {
	case addr = <-addrc:
	case <-a.done:
		return fail(errors.New("twtrace agent exited before it served"))
	case <-time.After(30 * time.Second):
		return fail(errors.New("twtrace agent did not say where it serves within 30 s"))
	}
	if addr == "" {
		return fail(errors.New("twtrace agent exited before it served"))
	}
	a.base = "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for !a.ready() {
		if time.Now().After(deadline) {
			return fail(errors.New("twtrace agent: /readyz not 200 within 30 s"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	startup := time.Since(t0)
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.scraper.Go(func() { a.scrapeEverySecond(ctx) })
	return startup, nil
}

// readStderr sends the address of the "msg=serving address=HOST:PORT"
// line to addrc ("" if stderr ends first) and keeps the rest.
func (a *agent) readStderr(r io.Reader, addrc chan<- string) {
	defer close(a.done)
	sent := false
	rd := bufio.NewReader(r)
	for {
		line, err := rd.ReadString('\n')
		a.mu.Lock()
		a.stderr.WriteString(line)
		a.mu.Unlock()
		if addr, ok := servingAddress(line); ok && !sent {
			addrc <- addr
			sent = true
		}
		if err != nil {
			if !sent {
				addrc <- ""
			}
			return
		}
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

func (a *agent) logs() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stderr.String()
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

func (a *agent) scrapeEverySecond(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		_, err := a.scrape()
		if err != nil && a.failed == nil {
			a.failed = err
		}
		a.scrapes++
	}
}

// scrape GETs /metrics and returns the body.
func (a *agent) scrape() ([]byte, error) {
	resp, err := a.client.Get(a.base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return body, err
}

func (a *agent) finish(s *sample) error {
	a.cancel()
	a.scraper.Wait()
	s.peakRSS = peakRSS(a.pid())
	body, serr := a.scrape()
	a.cmd.Process.Signal(syscall.SIGINT)
	<-a.done
	werr := a.cmd.Wait()
	if err := errors.Join(werr, serr, a.failed); err != nil {
		return fmt.Errorf("twtrace agent (%d scrapes): %w: %s", a.scrapes, err, strings.TrimSpace(a.logs()))
	}
	s.lost = 0
	for _, kind := range agentLosses {
		n, ok := metricValue(body, `twtrace_losses_total{kind="`+kind+`"}`)
		if !ok {
			return fmt.Errorf("twtrace agent: no losses of kind %s in /metrics", kind)
		}
		s.lost += int64(n)
	}
	return nil
}

// metricValue is the value of the sample whose name and labels are
// exactly series in a Prometheus text exposition.
func metricValue(body []byte, series string) (float64, bool) {
	for line := range bytes.Lines(body) {
		rest, ok := bytes.CutPrefix(line, []byte(series+" "))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) == 0 {
			return 0, false
		}
		v, err := strconv.ParseFloat(f[0], 64)
		return v, err == nil
	}
	return 0, false
}
