// Command twtrace shows which process burns ephemeral ports, and toward
// which destination: every TIME_WAIT entry and every EADDRNOTAVAIL connect,
// attributed to its process.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/twtrace/twtrace/pkg/filter"
	"github.com/twtrace/twtrace/pkg/owner"
	"github.com/twtrace/twtrace/pkg/tracer"
	"github.com/twtrace/twtrace/pkg/workload"
)

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1 // twtrace could not run: privileges, kernel, tracefs, ...
	exitUsage = 2 // bad flags or arguments
)

// usageError marks errors that are the user's invocation, not the host.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

type watchFlags struct {
	output     string
	pids       []string
	comms      []string
	daddrs     []string
	dports     []string
	ipv4       bool
	ipv6       bool
	netns      []string
	events     string
	duration   time.Duration
	ringSize   int
	maxSockets int
	tier       string
	stacks     bool // watch only: see addStacksFlag
	// httpCallers: --http-callers (watch, top, run, agent).
	httpCallers bool
	workloadFlags
}

// workloadFlags name what owns the processes: containers and pods.
type workloadFlags struct {
	pods, podNamespaces, containers []string
	criEndpoint                     string
}

func addWatchFlags(cmd *cobra.Command, f *watchFlags) {
	fl := cmd.Flags()
	fl.StringVarP(&f.output, "output", "o", "table", "output format: table or json (JSON Lines)")
	fl.StringSliceVar(&f.pids, "pid", nil, "only these process ids (closer, opener or caller)")
	fl.StringSliceVar(&f.comms, "comm", nil, "only these process names")
	fl.StringSliceVar(&f.daddrs, "daddr", nil, "only these destinations: IP or CIDR")
	fl.StringSliceVar(&f.dports, "dport", nil, "only these destination ports: N or N-M")
	fl.BoolVarP(&f.ipv4, "ipv4", "4", false, "only IPv4")
	fl.BoolVarP(&f.ipv6, "ipv6", "6", false, "only IPv6")
	fl.StringSliceVar(&f.netns, "netns", nil, "only these network namespaces (inode numbers, as in /proc/PID/ns/net)")
	fl.StringVar(&f.events, "events", "", "event kinds, comma-separated: timewait, connect_error, bind_error, timewait_end, timewait_overflow, timewait_reuse, or all (default timewait,connect_error,timewait_overflow,timewait_reuse: bind_error needs syscall tracepoints, which slow every syscall on the host while attached, and timewait_end doubles the output; the last three come from the precise tier only)")
	fl.DurationVar(&f.duration, "duration", 0, "stop after this long (e.g. 30s); default: until Ctrl-C")
	fl.IntVar(&f.ringSize, "ring-buffer-size", 0, "ring buffer size in bytes, a power of two (default 4 MiB)")
	fl.IntVar(&f.maxSockets, "max-sockets", 0, fmt.Sprintf("sockets tracked at once, from connect() to their end (default %d)", tracer.DefaultMaxSockets))
	fl.StringVar(&f.tier, "tier", "auto", "kernel hooks: auto (precise where fentry/fexit attach, else tracepoint), tracepoint, or precise (fail where it cannot attach)")
	fl.StringSliceVar(&f.pods, "pod", nil, "only these Kubernetes pods (names, from the CRI)")
	fl.StringSliceVar(&f.podNamespaces, "pod-namespace", nil, "only pods in these Kubernetes namespaces")
	fl.StringSliceVar(&f.containers, "container", nil, "only these containers: Kubernetes container names, or container ids (a prefix of 4 or more)")
	fl.StringVar(&f.criEndpoint, "cri-endpoint", "", criEndpointUsage)
}

const criEndpointUsage = "the node's CRI socket, for pod and container names (default: the first of containerd's, CRI-O's and cri-dockerd's usual sockets that exists; \"none\": ask none)"

// selector is the --pod, --pod-namespace and --container flags.
func (f *workloadFlags) selector() workload.Selector {
	return workload.Selector{Pods: f.pods, PodNamespaces: f.podNamespaces, Containers: f.containers}
}

// owners resolves what owns the traced processes (cgroup, container,
// pod, unit; names from the CRI), with --cri-endpoint. Close it when done.
func (f *workloadFlags) owners(stderr io.Writer) (*owner.Host, error) {
	h, err := owner.New(owner.Options{Endpoint: f.criEndpoint, Log: stderr})
	if err != nil {
		return nil, fmt.Errorf("resolving cgroups: %w", err)
	}
	return h, nil
}

// parseBy checks --by.
func parseBy(s string) (workload.By, error) {
	b, err := workload.ParseBy(s)
	if err != nil {
		return 0, usageError{err}
	}
	return b, nil
}

// parseTier checks --tier.
func (f *watchFlags) parseTier() (tracer.Tier, error) {
	t, err := tracer.ParseTier(f.tier)
	if err != nil {
		return 0, usageError{fmt.Errorf("invalid --tier %q: want auto, tracepoint or precise", f.tier)}
	}
	return t, nil
}

// tierLine says which tier runs, for the start and the exit summary.
func tierLine(info tracer.TierInfo) string {
	switch {
	case info.Tier == tracer.TierPrecise && len(info.Partial) > 0:
		return fmt.Sprintf("tier precise (fentry/fexit on %d kernel functions; without %s)", len(info.Hooks), strings.Join(info.Partial, ", "))
	case info.Tier == tracer.TierPrecise:
		return fmt.Sprintf("tier precise (fentry/fexit on %d kernel functions)", len(info.Hooks))
	case info.Fallback != "":
		return "tier tracepoint (precise tier not available: " + info.Fallback + ")"
	}
	return "tier tracepoint"
}

// filter checks the tracer's sizing flags and parses the filter flags.
func (f *watchFlags) filter() (*filter.Filter, error) {
	if f.maxSockets < 0 || f.maxSockets > 1<<24 {
		return nil, usageError{fmt.Errorf("invalid --max-sockets %d: want 1 to %d", f.maxSockets, 1<<24)}
	}
	flt, err := filter.Parse(filter.Options{
		PIDs: f.pids, Comms: f.comms, Daddrs: f.daddrs, Dports: f.dports,
		IPv4Only: f.ipv4, IPv6Only: f.ipv6, Netns: f.netns, Events: f.events,
	})
	if err != nil {
		return nil, usageError{err}
	}
	return flt, nil
}

func newRootCommand() *cobra.Command {
	var f watchFlags
	root := &cobra.Command{
		Use:   "twtrace",
		Short: "Find the processes that burn ephemeral ports, and toward which destination",
		Long: `twtrace attributes every TCP TIME_WAIT entry and every connect() that failed
with EADDRNOTAVAIL (or bind() with EADDRINUSE) to the process responsible.
Without a subcommand it runs 'watch'.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          func(cmd *cobra.Command, _ []string) error { return runWatch(cmd, &f) },
	}
	addWatchFlags(root, &f)
	addStacksFlag(root, &f)

	var wf watchFlags
	watchCmd := &cobra.Command{
		Use:   "watch",
		Short: "Stream timewait, connect_error and bind_error events as they happen",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runWatch(cmd, &wf) },
	}
	addWatchFlags(watchCmd, &wf)
	addStacksFlag(watchCmd, &wf)
	root.AddCommand(watchCmd, newTopCommand(), newSnapshotCommand(), newRunCommand(), newDoctorCommand(), newDemoCommand(), newAgentCommand())
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	return root
}

func main() {
	// twtrace's live heap is small and allocated mostly at each read of
	// the sockets; a collection at half the live heap, not the whole,
	// keeps its peak RSS lower at no measurable CPU. GOGC still decides.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	os.Exit(run(os.Args[1:]))
}

// gcPercent is twtrace's GOGC.
const gcPercent = 50

func run(args []string) int {
	root := newRootCommand()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	var st exitStatus
	if errors.As(err, &st) {
		return st.code // run: COMMAND's status, or a threshold; already reported
	}
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	fmt.Fprintf(os.Stderr, "twtrace: %s\n", msg)
	var u usageError
	if errors.As(err, &u) || isCobraUsage(err) {
		fmt.Fprintln(os.Stderr, "Run 'twtrace --help' for usage.")
		return exitUsage
	}
	return exitError
}

// isCobraUsage recognises cobra's own argument errors (unknown command,
// too many arguments), which do not pass through SetFlagErrorFunc.
func isCobraUsage(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "unknown command") || strings.HasPrefix(s, "accepts ") ||
		strings.HasPrefix(s, "unknown flag") || strings.HasPrefix(s, "unknown shorthand") ||
		strings.HasPrefix(s, "requires at least")
}
