// Package run follows a command and every process it forks, from its
// start to its exit, and reports what its connections did: connections
// opened, timewait entries, connect()/bind() failures, per process and
// per destination, the per-request verdict, and thresholds for CI.
package run

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/pkg/filter"
	"github.com/twtrace/twtrace/pkg/live"
	"github.com/twtrace/twtrace/pkg/tracer"
	"github.com/twtrace/twtrace/pkg/workload"
)

// Config is one run.
type Config struct {
	Argv []string
	// Env is the command's environment; nil means twtrace's own.
	Env []string
	// Credential runs the command as another user (--user); nil: as
	// twtrace's.
	Credential *syscall.Credential
	// The command's standard streams: twtrace's own, normally.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Interval between samples of the timewait sockets held (the HTML
	// chart); default 500 ms.
	Interval time.Duration
	// Drain is how long to wait, after the command exits, for sockets it
	// closed to reach their end; default 2 s.
	Drain  time.Duration
	Filter *filter.Filter
	// Signals received by twtrace, forwarded to the command while it runs.
	Signals <-chan os.Signal
	// Thresholds that fail the run.
	Thresholds Thresholds
	RingSize   int
	MaxSockets int
	Tier       tracer.Tier
	// By, Owners and Select fold and name the rows (live.Config's).
	By     workload.By
	Owners workload.Resolver
	Select workload.Selector
	// Stacks names call sites (live.Config.Stacks): 1, every connect, by
	// default in the CLI.
	Stacks int
	// HTTPCallers: live.Config.HTTPCallers.
	HTTPCallers bool
}

// Thresholds are the limits a run must stay within; nil is no limit.
type Thresholds struct {
	MaxConnects        *uint64
	MaxTimewait        *uint64
	MaxConnectRate     *float64 // connect() attempts per second, per destination
	FailOnConnectError bool
}

// ErrStart wraps a failure to start the command (not found, not
// executable, no such user).
var ErrStart = errors.New("starting the command")

// Run traces, starts the command, waits for it and returns the report.
// ctx ends the run early (the command is then killed).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if len(cfg.Argv) == 0 {
		return nil, errors.New("no command to run")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 500 * time.Millisecond
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 2 * time.Second
	}
	if err := hostPIDNamespace(); err != nil {
		return nil, err
	}
	cmd := exec.Command(cfg.Argv[0], cfg.Argv[1:]...)
	cmd.Env = cfg.Env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = cfg.Stdin, cfg.Stdout, cfg.Stderr
	if cfg.Credential != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cfg.Credential}
	}

	var (
		start, exited time.Time
		waited        = make(chan struct{}) // closed once the command is reaped
	)
	tctx, stopTracing := context.WithCancel(ctx)
	defer stopTracing()
	self := uint32(os.Getpid())
	lcfg := live.Config{
		Interval: cfg.Interval, Filter: cfg.Filter,
		RingSize: cfg.RingSize, MaxSockets: cfg.MaxSockets, Drain: cfg.Drain, Tier: cfg.Tier,
		By: cfg.By, Owners: cfg.Owners, Select: cfg.Select, PerProcess: true, Stacks: cfg.Stacks,
		HTTPCallers: cfg.HTTPCallers,
		Follow: func(f live.Follower) error {
			// The command is forked by this process: following it first
			// makes the kernel follow the child from its first
			// instruction, then this process leaves the set.
			if err := f.Follow(self); err != nil {
				return err
			}
			start = time.Now()
			err := cmd.Start()
			if uerr := f.Unfollow(self); err == nil {
				err = uerr
			}
			if err != nil {
				return fmt.Errorf("%w %s: %w", ErrStart, cfg.Argv[0], err)
			}
			go func() {
				cmd.Wait() // its status is in cmd.ProcessState
				exited = time.Now()
				close(waited)
				stopTracing()
			}()
			go forward(cmd.Process, cfg.Signals, waited)
			return nil
		},
	}

	var (
		mu     sync.Mutex
		frames []*live.Frame
	)
	err := live.Run(tctx, lcfg, func(f *live.Frame) error {
		mu.Lock()
		frames = append(frames, f)
		mu.Unlock()
		return nil
	})
	started := !start.IsZero() && cmd.Process != nil
	if started {
		select {
		case <-waited:
		default:
			// Tracing stopped first (an error, or ctx): the command goes too.
			cmd.Process.Kill()
			<-waited
		}
	}
	if err != nil {
		return nil, err
	}
	if !started {
		return nil, errors.New("stopped before the command started")
	}
	if len(frames) == 0 || !frames[len(frames)-1].Final {
		return nil, errors.New("interrupted before the final count")
	}
	code, sig := exitStatus(cmd.ProcessState)
	return Build(cfg.Argv, code, sig, start, exited.Sub(start), frames, cfg.Thresholds), nil
}

// exitStatus is the command's status as a shell reports it: its exit
// code, or 128 plus the signal that killed it.
func exitStatus(ps *os.ProcessState) (int, string) {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), unix.SignalName(ws.Signal())
	}
	return ps.ExitCode(), ""
}

// forward passes the signals twtrace receives to the command until it
// exits.
func forward(p *os.Process, sigs <-chan os.Signal, waited <-chan struct{}) {
	if sigs == nil {
		return
	}
	for {
		select {
		case sig := <-sigs:
			p.Signal(sig)
		case <-waited:
			return
		}
	}
}

// hostPIDNamespace: the kernel follows processes by their pid in the
// host's pid namespace, which is the one twtrace must see them in.
func hostPIDNamespace() error {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return fmt.Errorf("reading /proc/self/status: %w", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f, ok := strings.CutPrefix(line, "NSpid:"); ok && len(strings.Fields(f)) > 1 {
			return errors.New("twtrace run must run in the host's pid namespace (it is in a container's): the kernel names processes by their host pid")
		}
	}
	return nil
}
