// Command twload generates short TCP connections, flat out or at a fixed
// rate, to fill the TIME_WAIT table and exhaust ephemeral ports on purpose.
// It prints nothing until the end, then one report: a line of text or a
// JSON object (-o json) for benchmark harnesses.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/twtrace/twtrace/pkg/load"
)

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1 // the load could not run: privileges, sockets, ...
	exitUsage = 2 // bad flags or arguments
)

// usageError marks errors that are the user's invocation, not the host.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

// exitStatus is the status of the child run in a new namespace, which has
// already printed whatever it had to say.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

type options struct {
	clients     int
	mode        string
	rate        float64
	duration    time.Duration
	connections int64
	ipv6        bool
	addr        string
	netnsNew    bool
	sysctls     []string
	output      string
}

func addFlags(cmd *cobra.Command, o *options) {
	fl := cmd.Flags()
	fl.IntVarP(&o.clients, "clients", "c", 4, "concurrent clients")
	fl.StringVarP(&o.mode, "mode", "m", string(load.ClientClose),
		"who closes first, and so keeps the TIME_WAIT: client-close or server-close")
	fl.Float64VarP(&o.rate, "rate", "r", 0, "new connections per second across all clients (0: as fast as possible)")
	fl.DurationVarP(&o.duration, "duration", "d", 5*time.Second, "stop after this long (0: no time limit)")
	fl.Int64VarP(&o.connections, "connections", "n", 0, "stop after this many attempts in total (0: no limit)")
	fl.BoolVarP(&o.ipv6, "ipv6", "6", false, "built-in server on [::1] rather than 127.0.0.1; with --addr, resolve to IPv6 only")
	fl.StringVar(&o.addr, "addr", "", "connect to this server (host:port) rather than a built-in one")
	fl.BoolVar(&o.netnsNew, "netns-new", false,
		"run in a new network namespace with only loopback, where the TIME_WAIT sockets die with the run (needs root)")
	fl.StringArrayVar(&o.sysctls, "sysctl", nil,
		"set a net.* sysctl in the new namespace, e.g. net.ipv4.tcp_tw_reuse=0 (repeatable; needs --netns-new)")
	fl.StringVarP(&o.output, "output", "o", "text", "report format: text (one line) or json (one object)")
}

// config checks the options and turns them into a load configuration and
// the sysctls to apply.
func (o *options) config() (load.Config, []load.Sysctl, error) {
	if o.output != "text" && o.output != "json" {
		return load.Config{}, nil, fmt.Errorf("invalid --output %q: want text or json", o.output)
	}
	mode, err := load.ParseMode(o.mode)
	if err != nil {
		return load.Config{}, nil, fmt.Errorf("--mode: %w", err)
	}
	cfg := load.Config{
		Clients: o.clients, Mode: mode, Rate: o.rate, Duration: o.duration,
		Connections: o.connections, IPv6: o.ipv6, Addr: o.addr,
	}
	if err := cfg.Validate(); err != nil {
		return load.Config{}, nil, err
	}
	if o.netnsNew && o.addr != "" {
		return load.Config{}, nil, errors.New("--netns-new and --addr exclude each other: the new namespace has only loopback")
	}
	var sysctls []load.Sysctl
	for _, s := range o.sysctls {
		sc, err := load.ParseSysctl(s)
		if err != nil {
			return load.Config{}, nil, fmt.Errorf("--sysctl: %w", err)
		}
		sysctls = append(sysctls, sc)
	}
	// The child of --netns-new runs without the flag, in its namespace.
	if len(sysctls) > 0 && !o.netnsNew && !load.InNetnsChild() {
		return load.Config{}, nil, errors.New("--sysctl needs --netns-new: it would change the host")
	}
	return cfg, sysctls, nil
}

func runLoad(cmd *cobra.Command, o *options, args []string) error {
	cfg, sysctls, err := o.config()
	if err != nil {
		return usageError{err}
	}
	if o.netnsNew {
		return runInNewNetns(args)
	}

	// Catch signals first: from here on, Ctrl-C ends the run with a report.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if load.InNetnsChild() {
		if err := load.SetupNetns(sysctls); err != nil {
			return err
		}
	}
	res, err := load.Run(ctx, cfg)
	if err != nil {
		return err
	}
	err = report(cmd.OutOrStdout(), o.output, res)
	if errors.Is(err, syscall.EPIPE) {
		return nil // the reader went away: not our failure
	}
	return err
}

// runInNewNetns runs this program again, without --netns-new, in a new
// network namespace. It relays SIGINT and SIGTERM and returns the child's
// exit status.
func runInNewNetns(args []string) error {
	// The resolved path, not /proc/self/exe: the kernel names a process
	// after the file it executes, and tracers find the load by "twload".
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd, err := load.NetnsCommand(self, withoutFlag(args, "netns-new")...)
	if err != nil {
		return err
	}
	cmd.Args[0] = os.Args[0]

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	// The child gets SIGTERM when the thread that started it ends (its
	// Pdeathsig): keep this goroutine on that thread until the child ends.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("creating a network namespace (needs root): %w", err)
	}
	done := make(chan struct{})
	defer close(done)
	go relaySignals(cmd.Process, sigs, done)
	return childStatus(cmd.Wait())
}

func relaySignals(p *os.Process, sigs <-chan os.Signal, done <-chan struct{}) {
	for {
		select {
		case s := <-sigs:
			p.Signal(s)
		case <-done:
			return
		}
	}
}

// childStatus turns the child's end into this process's exit status:
// its own, or 128 + the signal that killed it, as shells do.
func childStatus(err error) error {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return err
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		return exitStatus(128 + int(ws.Signal()))
	}
	return exitStatus(ee.ExitCode())
}

// withoutFlag returns args without the boolean flag --name, in either of
// its forms (--name, --name=value). Arguments after "--" are kept as they are.
func withoutFlag(args []string, name string) []string {
	var out []string
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if a == "--"+name || strings.HasPrefix(a, "--"+name+"=") {
			continue
		}
		out = append(out, a)
	}
	return out
}

// report writes res as one line of text or one JSON object.
func report(w io.Writer, format string, res load.Result) error {
	if format == "json" {
		return json.NewEncoder(w).Encode(res)
	}
	_, err := fmt.Fprintln(w, summary(res))
	return err
}

// summary is the one-line human report.
func summary(res load.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s: %d clients, %.3fs, %d attempts, %d connections (%.0f/s)",
		res.Mode, res.Family, res.Addr, res.Clients, res.DurationSec,
		res.Attempts, res.Connections, res.ConnectsPerSec)
	if len(res.Errors) == 0 {
		b.WriteString(", no errors")
	} else {
		b.WriteString(", errors")
		for i, name := range slices.Sorted(maps.Keys(res.Errors)) {
			sep := " "
			if i > 0 {
				sep = ", "
			}
			fmt.Fprintf(&b, "%s%s=%d", sep, name, res.Errors[name])
		}
	}
	if res.ServerAccepted != nil {
		fmt.Fprintf(&b, "; server accepted %d", *res.ServerAccepted)
	}
	return b.String()
}

func newRootCommand(args []string) *cobra.Command {
	var o options
	root := &cobra.Command{
		Use:   "twload",
		Short: "Generate short TCP connections to fill TIME_WAIT and exhaust ephemeral ports",
		Long: `twload runs concurrent clients that connect and close, flat out or at
--rate, against a built-in loopback server or --addr, and reports how many
connections it made and which errors (EADDRNOTAVAIL, ...) it met. In
client-close mode the clients keep the TIME_WAIT sockets, in server-close
mode the server does. Nothing is printed until the end.

The built-in server listens on an ephemeral port, so it takes one port of
net.ipv4.ip_local_port_range.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unexpected argument %q", args[0])}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return runLoad(cmd, &o, args) },
	}
	addFlags(root, &o)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.SetArgs(args)
	return root
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	err := newRootCommand(args).Execute()
	var status exitStatus
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &status):
		return int(status)
	}
	fmt.Fprintf(os.Stderr, "twload: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
	var u usageError
	if errors.As(err, &u) {
		return exitUsage
	}
	return exitError
}
