package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twtrace/twtrace/pkg/load"
)

// The churn runs in a network namespace of its own (this program run
// again with -churn, see load.NetnsCommand): its hundreds of thousands of
// timewait sockets die with the namespace, and the wide port range and
// timewait bucket limit it needs do not touch the host's.

// churnSysctls widen the namespace's limits so that neither the port
// range nor the timewait table is what the soak measures.
func churnSysctls(twBuckets int) []load.Sysctl {
	return []load.Sysctl{
		{Key: "net.ipv4.ip_local_port_range", Value: "1024 65535"},
		{Key: "net.ipv4.tcp_max_tw_buckets", Value: strconv.Itoa(twBuckets)},
	}
}

// progress is what the churn reports on its stdout, one line a second:
// "progress PROCESSES CONNECTIONS ERRORS", and "done ..." at the end.
type progress struct {
	processes, connections, errors int64
	done                           bool
}

func (p progress) String() string {
	word := "progress"
	if p.done {
		word = "done"
	}
	return fmt.Sprintf("%s %d %d %d", word, p.processes, p.connections, p.errors)
}

// parseProgress reads a line written by progress.String.
func parseProgress(line string) (progress, bool) {
	f := strings.Fields(line)
	if len(f) != 4 || (f[0] != "progress" && f[0] != "done") {
		return progress{}, false
	}
	var p progress
	p.done = f[0] == "done"
	for i, dst := range []*int64{&p.processes, &p.connections, &p.errors} {
		n, err := strconv.ParseInt(f[i+1], 10, 64)
		if err != nil || n < 0 {
			return progress{}, false
		}
		*dst = n
	}
	return p, true
}

// destination is the i-th of the churn's destinations: every 127/8
// address is local, so one listener on 0.0.0.0 answers them all, and
// each address is a destination of its own to the headroom model.
func destination(i, port int) string {
	return fmt.Sprintf("127.%d.%d.%d:%d", 1+i/(250*250), i/250%250, 1+i%250, port)
}

// processName is the comm of the p-th process of n, with names names in
// all: consecutive processes share a name, so each name is busy for a
// while and then quiet for the rest of the run, as short-lived jobs are.
func processName(p, n, names int) string {
	return fmt.Sprintf("w%05d", int64(p)*int64(names)/int64(n))
}

// runChurn is the child: it sets its namespace up, listens, and runs the
// processes, cfg.parallel at a time, until all ran, cfg.churnLimit passed
// or SIGTERM came.
func runChurn(cfg config) error {
	if err := load.SetupNetns(churnSysctls(cfg.twBuckets)); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if cfg.churnLimit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.churnLimit)
		defer cancel()
	}
	ln, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", cfg.port))
	if err != nil {
		return err
	}
	defer ln.Close()
	go serve(ln)

	var st churnState
	reportDone := make(chan struct{})
	go st.report(os.Stdout, reportDone)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range cfg.parallel {
		wg.Go(func() {
			for p := range jobs {
				st.add(runProcess(cfg, p))
			}
		})
	}
feed:
	for p := range cfg.processes {
		select {
		case jobs <- p:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	close(reportDone)
	fmt.Fprintln(os.Stdout, st.snapshot(true))
	return nil
}

// serve accepts and, as a client-close server does, reads until the
// client's FIN and closes: the client keeps the TIME_WAIT.
func serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // EMFILE and the like: the client sees a reset
		}
		go func() {
			io.Copy(io.Discard, c)
			c.Close()
		}()
	}
}

type churnState struct {
	processes, connections, errors atomic.Int64
}

func (s *churnState) add(r processResult) {
	s.processes.Add(1)
	s.connections.Add(r.connections)
	s.errors.Add(r.errors)
}

func (s *churnState) snapshot(done bool) progress {
	return progress{processes: s.processes.Load(), connections: s.connections.Load(), errors: s.errors.Load(), done: done}
}

func (s *churnState) report(w io.Writer, done <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			fmt.Fprintln(w, s.snapshot(false))
		}
	}
}

type processResult struct {
	connections, errors int64
}

// runProcess runs twload once under the p-th process name: its
// connections toward its destination, one client, then it exits. A
// process that fails counts its connections as errors.
func runProcess(cfg config, p int) processResult {
	n := cfg.connections / int64(cfg.processes)
	name := filepath.Join(cfg.namesDir, processName(p, cfg.processes, cfg.names))
	cmd := exec.Command(name, "--addr", destination(p%cfg.destinations, cfg.port),
		"--connections", strconv.FormatInt(n, 10), "--clients", "1", "--duration", "0", "-o", "json")
	cmd.Env = withoutEnv(os.Environ(), load.NetnsEnv)
	out, err := cmd.Output()
	if err != nil {
		return processResult{errors: n}
	}
	var r struct {
		Connections int64            `json:"connections"`
		Errors      map[string]int64 `json:"errors"`
	}
	if json.Unmarshal(out, &r) != nil {
		return processResult{errors: n}
	}
	res := processResult{connections: r.Connections}
	for _, e := range r.Errors {
		res.errors += e
	}
	return res
}

func withoutEnv(env []string, key string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// readProgress keeps the churn's latest progress in last until r ends.
func readProgress(r io.Reader, last *atomic.Pointer[progress]) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if p, ok := parseProgress(sc.Text()); ok {
			last.Store(&p)
		}
	}
}
