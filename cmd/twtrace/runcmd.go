package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	twrun "github.com/twtrace/twtrace/pkg/run"
)

// exitThreshold: `twtrace run`'s command succeeded but a threshold was
// crossed.
const exitThreshold = 3

// exitStatus makes run() exit with code, having printed what it had to.
type exitStatus struct{ code int }

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", e.code) }

type runFlags struct {
	watchFlags
	user          string
	report        string
	html          string
	out           string
	interval      time.Duration
	drain         time.Duration
	maxConnects   int64
	maxTimewait   int64
	maxRate       float64
	failOnConnErr bool
	by            string
	stacks        int
}

func newRunCommand() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [flags] -- COMMAND [ARGS...]",
		Short: "Run a command and report what its connections did; fail CI on thresholds",
		Long: `run attaches first, then starts COMMAND, follows it and every process it forks
(the kernel adds each child to the followed set as it is forked, so no
short-lived child is missed) and stops when COMMAND exits. COMMAND's stdin,
stdout and stderr are its own; signals twtrace receives are passed on.

At exit it prints, per process and per destination: connections opened,
timewait entries (as client or as server), connect()/bind() failures, the
median lifetime and bytes, the per-request verdict and advice. --report
writes it as JSON (schema in docs/json.md), --html as a page with a chart
of the timewait sockets held per destination against its port ceiling.

Exit status: COMMAND's own when it fails (128+N when killed by signal N);
3 when it succeeded but a threshold was crossed; 1 when twtrace could not
run; 2 for bad flags.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runRun(cmd, &f, args) },
	}
	cmd.Flags().SetInterspersed(false) // everything after COMMAND is its own
	addFilterFlags(cmd, &f.watchFlags)
	fl := cmd.Flags()
	fl.Lookup("events").Usage = "event kinds, comma-separated (see twtrace watch --help), or all (default all: bind_error attaches syscall tracepoints, which slow every syscall on the host while the command runs)"
	fl.StringVar(&f.user, "user", "", "run COMMAND as this user (name or uid), with its groups")
	fl.StringVar(&f.report, "report", "", "write the report as JSON to this file")
	fl.StringVar(&f.html, "html", "", "write the report as a self-contained HTML page to this file")
	fl.StringVarP(&f.out, "output", "o", "", "write the text report to this file rather than stderr")
	fl.DurationVar(&f.interval, "interval", 500*time.Millisecond, "how often the timewait sockets held are sampled (the chart)")
	fl.DurationVar(&f.drain, "drain", 2*time.Second, "after COMMAND exits, wait up to this long for the sockets it closed to reach their end")
	fl.Int64Var(&f.maxConnects, "max-connects", -1, "fail when COMMAND's processes make more connect() attempts than this")
	fl.Int64Var(&f.maxTimewait, "max-timewait", -1, "fail when more than this many of their connections enter TIME_WAIT")
	fl.Float64Var(&f.maxRate, "max-connect-rate", -1, "fail when connect() attempts per second toward any one destination exceed this")
	fl.BoolVar(&f.failOnConnErr, "fail-on-connect-error", false, "fail on any connect() that failed with EADDRNOTAVAIL")
	fl.StringVar(&f.by, "by", "program", byUsage)
	fl.IntVar(&f.stacks, "stacks", 1, stacksUsage(1))
	fl.Lookup("stacks").DefValue = "" // said in the usage
	addHTTPCallersFlag(cmd, &f.watchFlags, true)
	return cmd
}

func runRun(cmd *cobra.Command, f *runFlags, args []string) error {
	if f.events == "" {
		f.events = "all"
	}
	if f.interval < 100*time.Millisecond {
		return usageError{fmt.Errorf("invalid --interval %s: want at least 100ms", f.interval)}
	}
	if f.drain < 0 {
		return usageError{fmt.Errorf("invalid --drain %s: must not be negative", f.drain)}
	}
	th, err := f.thresholds()
	if err != nil {
		return err
	}
	tier, err := f.parseTier()
	if err != nil {
		return err
	}
	by, err := parseBy(f.by)
	if err != nil {
		return err
	}
	flt, err := f.filter()
	if err != nil {
		return err
	}
	var cred *syscall.Credential
	env := os.Environ()
	if f.user != "" {
		if cred, env, err = userCredential(f.user, env); err != nil {
			return usageError{err}
		}
	}
	// The text report goes to stderr (or a file): stdout is COMMAND's.
	var out io.Writer = cmd.ErrOrStderr()
	if f.out != "" {
		fh, err := os.Create(f.out)
		if err != nil {
			return err
		}
		defer fh.Close()
		out = fh
	}

	owners, err := f.owners(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	defer owners.Close()
	sigs, stopSignals := forwardedSignals()
	defer stopSignals()
	rep, err := twrun.Run(context.Background(), twrun.Config{
		Argv: args, Env: env, Credential: cred,
		Stdin: os.Stdin, Stdout: cmd.OutOrStdout(), Stderr: os.Stderr,
		Interval: f.interval, Drain: f.drain, Filter: flt, Signals: sigs,
		Thresholds: th, RingSize: f.ringSize, MaxSockets: f.maxSockets, Tier: tier,
		By: by, Select: f.selector(), Owners: owners, Stacks: f.stacks, HTTPCallers: f.httpCallers,
	})
	if errors.Is(err, twrun.ErrStart) {
		// As a shell: 127 when COMMAND is not found, 126 when it cannot run.
		fmt.Fprintf(os.Stderr, "twtrace: %s\n", err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return exitStatus{127}
		}
		return exitStatus{126}
	}
	if err != nil {
		return err
	}
	if err := f.writeReports(out, rep); err != nil {
		return err
	}
	switch {
	case rep.ExitCode != 0:
		return exitStatus{rep.ExitCode}
	case !rep.Passed:
		return exitStatus{exitThreshold}
	}
	return nil
}

// thresholds are the --max-* and --fail-on-connect-error flags; -1 (the
// default) leaves a threshold unset.
func (f *runFlags) thresholds() (twrun.Thresholds, error) {
	var th twrun.Thresholds
	if f.maxConnects >= 0 {
		v := uint64(f.maxConnects)
		th.MaxConnects = &v
	} else if f.maxConnects != -1 {
		return th, usageError{fmt.Errorf("invalid --max-connects %d: must not be negative", f.maxConnects)}
	}
	if f.maxTimewait >= 0 {
		v := uint64(f.maxTimewait)
		th.MaxTimewait = &v
	} else if f.maxTimewait != -1 {
		return th, usageError{fmt.Errorf("invalid --max-timewait %d: must not be negative", f.maxTimewait)}
	}
	if f.maxRate >= 0 {
		v := f.maxRate
		th.MaxConnectRate = &v
	} else if f.maxRate != -1 {
		return th, usageError{fmt.Errorf("invalid --max-connect-rate %g: must not be negative", f.maxRate)}
	}
	th.FailOnConnectError = f.failOnConnErr
	return th, nil
}

// forwardedSignals are the signals twtrace passes on to COMMAND. Ctrl-C
// at a terminal reaches COMMAND (same process group) straight from the
// terminal: forwarding it too would deliver it twice. Other signals, and
// every signal when not at a terminal, are forwarded. (Caught, not
// ignored: an ignored signal stays ignored in COMMAND.)
func forwardedSignals() (<-chan os.Signal, func()) {
	caught := make(chan os.Signal, 8)
	signal.Notify(caught, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	tty := atTerminalForeground()
	sigs := make(chan os.Signal, 8)
	go func() {
		for sig := range caught {
			if tty && (sig == syscall.SIGINT || sig == syscall.SIGQUIT) {
				continue
			}
			sigs <- sig
		}
	}()
	return sigs, func() { signal.Stop(caught) }
}

// writeReports writes the text report to out, and the JSON and HTML
// reports where flags ask for them.
func (f *runFlags) writeReports(out io.Writer, rep *twrun.Report) error {
	if err := twrun.WriteText(out, rep); err != nil {
		return err
	}
	if f.report != "" {
		if err := writeJSONFile(f.report, rep); err != nil {
			return err
		}
	}
	if f.html != "" {
		return writeHTMLFile(f.html, rep)
	}
	return nil
}

func writeJSONFile(path string, v any) error {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(raw, '\n'), 0o644)
}

func writeHTMLFile(path string, rep *twrun.Report) error {
	fh, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := twrun.WriteHTML(fh, rep); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

// userCredential resolves --user (a name or a uid) to its ids and groups,
// and sets HOME, USER and LOGNAME for it.
func userCredential(name string, env []string) (*syscall.Credential, []string, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.Atoi(name); nerr == nil {
			u, err = user.LookupId(name)
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("--user %s: %v", name, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				cred.Groups = append(cred.Groups, uint32(n))
			}
		}
	}
	out := make([]string, 0, len(env)+3)
	for _, kv := range env {
		if !hasKey(kv, "HOME") && !hasKey(kv, "USER") && !hasKey(kv, "LOGNAME") {
			out = append(out, kv)
		}
	}
	out = append(out, "HOME="+u.HomeDir, "USER="+u.Username, "LOGNAME="+u.Username)
	return cred, out, nil
}

func hasKey(kv, key string) bool {
	return len(kv) > len(key) && kv[:len(key)] == key && kv[len(key)] == '='
}

// atTerminalForeground: stdin is a terminal whose foreground process
// group is ours (and so COMMAND's), which its Ctrl-C reaches directly.
func atTerminalForeground() bool {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return false
	}
	pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}
