package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/twtrace/twtrace/pkg/filter"
	"github.com/twtrace/twtrace/pkg/inventory"
	"github.com/twtrace/twtrace/pkg/live"
	"github.com/twtrace/twtrace/pkg/report"
	"github.com/twtrace/twtrace/pkg/top"
	"github.com/twtrace/twtrace/pkg/tracer"
)

type topFlags struct {
	watchFlags
	interval     time.Duration
	count        int
	sort         string
	rows         int
	by           string
	inventoryCPU float64
	stacks       int
}

// addHTTPCallersFlag adds --http-callers, on by default but for the
// agent, which runs on every node all the time.
func addHTTPCallersFlag(cmd *cobra.Command, f *watchFlags, def bool) {
	cmd.Flags().BoolVar(&f.httpCallers, "http-callers", def, "with stacks, name the line that called Go net/http for its dials: uprobes on each Go program seen dialling through net/http, two hits per new connection it makes (Linux 5.15+, Go 1.18+)")
}

// stacksUsage is --stacks' help; def is the command's default.
func stacksUsage(def int) string {
	return fmt.Sprintf("name each row's call site from the user stack of connect(): 1 takes every one, N > 1 the first %d of each process and destination then one in N, 0 none (default %d)", tracer.StackFirst, def)
}

// checkStacks validates --stacks.
func checkStacks(n int) error {
	if n < 0 {
		return usageError{fmt.Errorf("invalid --stacks %d: want 0 (none), 1 (every connect) or more (one in N)", n)}
	}
	return nil
}

// DefaultTopStacks is top's --stacks: the first few connections of each
// process and destination, then one in 64.
const DefaultTopStacks = 64

// inventoryCPUUsage is --inventory-cpu's help, top's and the agent's.
const inventoryCPUUsage = "the most of one CPU, in percent, that reading the sockets of every namespace may take: a refresh reads them again only within it and otherwise shows the last read's timewait sockets and headroom, with its time (100: every refresh)"

// checkInventoryCPU validates --inventory-cpu and returns it as a share
// of one CPU.
func checkInventoryCPU(pct float64) (float64, error) {
	if !(pct > 0 && pct <= 100) {
		return 0, usageError{fmt.Errorf("invalid --inventory-cpu %v: want more than 0 and at most 100 (percent of one CPU)", pct)}
	}
	return pct / 100, nil
}

// byUsage is --by's help, top's and run's.
const byUsage = "fold processes into rows by: program (the same comm and executable under one parent, or in one container), pid, container, pod or unit (systemd); processes in no container, pod or unit fold by program"

func newTopCommand() *cobra.Command {
	var f topFlags
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Live table: who churns connections toward where, port headroom, forecast and advice",
		Long: `twtrace top refreshes every --interval a table of (process, destination)
rows: new connections/s, timewait entries/s, timewait sockets held now,
connect errors, median lifetime and bytes, and a verdict on processes that
open a connection per request. Destinations come with their port headroom
(ports connect() could still pick) and, when the timewait rate exceeds what
the port range sustains, the seconds until connect() starts failing.
Keys: t, c, n, e change the sort; q quits.

Without a terminal (or with -o json) it prints one JSON object per
interval (schema in docs/json.md); --count N stops after N.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runTop(cmd, &f) },
	}
	addFilterFlags(cmd, &f.watchFlags)
	fl := cmd.Flags()
	fl.Lookup("ring-buffer-size").Usage = fmt.Sprintf("ring buffer size in bytes, a power of two (default 1 MiB per CPU, 2 to 16 MiB: %d MiB here)", live.DefaultRingSize()>>20)
	fl.StringVarP(&f.output, "output", "o", "", "output: table (full screen) or json (one object per interval); default table on a terminal, json otherwise")
	fl.DurationVar(&f.interval, "interval", time.Second, "refresh interval")
	fl.IntVar(&f.count, "count", 0, "stop after this many refreshes (default: until q or Ctrl-C)")
	fl.StringVar(&f.sort, "sort", "timewait", "row order: timewait (entries/s), connects (/s), now (timewait sockets held) or errors")
	fl.IntVar(&f.rows, "rows", top.DefaultRows, "rows shown; the rest are summed into one")
	fl.StringVar(&f.by, "by", "program", byUsage)
	fl.Float64Var(&f.inventoryCPU, "inventory-cpu", 100*live.DefaultInventoryCPU, inventoryCPUUsage)
	fl.IntVar(&f.stacks, "stacks", DefaultTopStacks, stacksUsage(DefaultTopStacks))
	fl.Lookup("stacks").DefValue = "" // said in the usage
	addHTTPCallersFlag(cmd, &f.watchFlags, true)
	return cmd
}

// addFilterFlags adds watch's flags but --output and --duration.
func addFilterFlags(cmd *cobra.Command, f *watchFlags) {
	tmp := &cobra.Command{}
	addWatchFlags(tmp, f)
	tmp.Flags().VisitAll(func(fl *pflag.Flag) {
		if fl.Name != "output" && fl.Name != "duration" {
			cmd.Flags().AddFlag(fl)
		}
	})
}

// screenOutput resolves --output for a command that draws a full screen:
// table on a terminal (stdin and stdout), json otherwise. It returns the
// mode, and stdout as the terminal to draw on in table mode.
func screenOutput(output string, stdout io.Writer) (string, *os.File, error) {
	fd, isFile := stdout.(*os.File)
	tty := isFile && term.IsTerminal(int(fd.Fd())) && term.IsTerminal(int(os.Stdin.Fd()))
	switch output {
	case "":
		if tty {
			return "table", fd, nil
		}
		return "json", fd, nil
	case "table":
		if !tty {
			return "", nil, usageError{errors.New("--output table needs a terminal on stdin and stdout: use -o json")}
		}
	case "json":
	default:
		return "", nil, usageError{fmt.Errorf("invalid --output %q: want table or json", output)}
	}
	return output, fd, nil
}

func runTop(cmd *cobra.Command, f *topFlags) error {
	stdout := cmd.OutOrStdout()
	output, fd, err := screenOutput(f.output, stdout)
	if err != nil {
		return err
	}
	f.output = output
	if f.interval < 100*time.Millisecond {
		return usageError{fmt.Errorf("invalid --interval %s: want at least 100ms", f.interval)}
	}
	if f.count < 0 {
		return usageError{fmt.Errorf("invalid --count %d: must not be negative", f.count)}
	}
	if f.rows < 1 || f.rows > 1000 {
		return usageError{fmt.Errorf("invalid --rows %d: want 1 to 1000", f.rows)}
	}
	sortKey, err := top.ParseSort(f.sort)
	if err != nil {
		return usageError{err}
	}
	if err := checkStacks(f.stacks); err != nil {
		return err
	}
	invCPU, err := checkInventoryCPU(f.inventoryCPU)
	if err != nil {
		return err
	}
	by, err := parseBy(f.by)
	if err != nil {
		return err
	}
	tier, err := f.parseTier()
	if err != nil {
		return err
	}
	flt, err := f.filter()
	if err != nil {
		return err
	}

	// top's heap is a few long-lived tables plus each refresh's short-lived
	// figures: collect at half the default growth, so the peak stays near
	// the live size (measured: about 1 MiB less RSS, no CPU to see).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	owners, err := f.owners(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	defer owners.Close()
	var sortNow atomic.Int32
	sortNow.Store(int32(sortKey))
	cfg := top.Config{
		Config: live.Config{
			Interval: f.interval, Count: f.count, Filter: flt,
			Netns: flt.SingleNetns(), RingSize: f.ringSize, MaxSockets: f.maxSockets, Tier: tier,
			By: by, Select: f.selector(), Owners: owners, InventoryCPU: invCPU, Stacks: f.stacks,
			HTTPCallers: f.httpCallers,
		},
		Rows: f.rows,
		Sort: func() top.Sort { return top.Sort(sortNow.Load()) },
	}
	stderr := cmd.ErrOrStderr()
	if f.output == "json" {
		bw := bufio.NewWriter(stdout)
		enc := json.NewEncoder(bw)
		cfg.Ready = func() { fmt.Fprintln(stderr, "twtrace: tracing; top prints one JSON object per interval") }
		err := top.Run(ctx, cfg, func(fr *top.Frame) error {
			if err := enc.Encode(fr); err != nil {
				return err
			}
			return bw.Flush()
		})
		if errors.Is(err, syscall.EPIPE) {
			return nil
		}
		return err
	}
	return runTopScreen(ctx, stop, cfg, fd, &sortNow)
}

// fullScreen puts the terminal in raw mode (keys arrive one at a time) and
// out on the alternate screen, with the cursor hidden; restore undoes it.
func fullScreen(out *os.File) (restore func(), err error) {
	in := int(os.Stdin.Fd())
	old, err := term.MakeRaw(in)
	if err != nil {
		return nil, fmt.Errorf("setting the terminal to raw mode: %w", err)
	}
	io.WriteString(out, "\x1b[?1049h\x1b[?25l")
	return func() {
		io.WriteString(out, "\x1b[?25h\x1b[?1049l")
		term.Restore(in, old)
	}, nil
}

// runTopScreen runs top full screen: the alternate screen, raw keyboard.
func runTopScreen(ctx context.Context, quit func(), cfg top.Config, out *os.File, sortNow *atomic.Int32) error {
	restore, err := fullScreen(out)
	if err != nil {
		return err
	}
	defer restore()
	var last atomic.Pointer[top.Frame]
	draw := func() {
		fr := last.Load()
		if fr == nil {
			return
		}
		w, h, err := term.GetSize(int(out.Fd()))
		if err != nil {
			w, h = 80, 24
		}
		fr.Sort = top.Sort(sortNow.Load()).String()
		var b strings.Builder
		b.WriteString("\x1b[H")
		for _, l := range top.Render(fr, w, h) {
			b.WriteString(l)
			b.WriteString("\x1b[K\r\n")
		}
		b.WriteString("\x1b[J")
		io.WriteString(out, b.String())
	}
	go readKeys(quit, sortNow)
	io.WriteString(out, "\x1b[H\x1b[2Jtwtrace: starting...\r\n")
	return top.Run(ctx, cfg, func(fr *top.Frame) error {
		last.Store(fr)
		draw()
		return nil
	})
}

type snapshotFlags struct {
	output      string
	netns       []string
	criEndpoint string
}

func newSnapshotCommand() *cobra.Command {
	var f snapshotFlags
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "One-shot inventory: timewait sockets and port headroom per destination, in every namespace",
		Long: `twtrace snapshot reads every TCP socket of every network namespace (a BPF
iter/tcp walk, timewait sockets included) and the sysctls that decide port
exhaustion, and prints per namespace and destination: timewait,
FIN_WAIT2-timewait and established counts, ports in use and the ports
connect() could still pick. No tracing: it answers at once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runSnapshot(cmd, &f) },
	}
	cmd.Flags().StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	cmd.Flags().StringSliceVar(&f.netns, "netns", nil, "only these network namespaces (inode numbers)")
	cmd.Flags().StringVar(&f.criEndpoint, "cri-endpoint", "", criEndpointUsage)
	return cmd
}

func runSnapshot(cmd *cobra.Command, f *snapshotFlags) error {
	if f.output != "table" && f.output != "json" {
		return usageError{fmt.Errorf("invalid --output %q: want table or json", f.output)}
	}
	flt, err := filter.Parse(filter.Options{Netns: f.netns})
	if err != nil {
		return usageError{err}
	}
	sc, err := inventory.Open()
	if err != nil {
		return err
	}
	defer sc.Close()
	snap, _, err := report.Take(sc, flt.AdmitsNetns)
	if err != nil {
		return err
	}
	if err := nameOwners(snap.Namespaces, f.criEndpoint, cmd.ErrOrStderr()); err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if f.output == "json" {
		err = json.NewEncoder(out).Encode(&snap)
	} else {
		err = report.WriteSnapshotTable(out, &snap)
	}
	if errors.Is(err, syscall.EPIPE) {
		return nil
	}
	return err
}

// readKeys reads the full-screen keys until stdin ends: q, Ctrl-C and
// Ctrl-D quit; t, c, n and e change the sort.
func readKeys(quit func(), sortNow *atomic.Int32) {
	buf := make([]byte, 16)
	for {
		n, err := os.Stdin.Read(buf)
		if err != nil {
			quit()
			return
		}
		for _, c := range buf[:n] {
			switch c {
			case 'q', 'Q', 3 /* Ctrl-C in raw mode */, 4:
				quit()
				return
			case 't':
				sortNow.Store(int32(top.ByTimewaitRate))
			case 'c':
				sortNow.Store(int32(top.ByConnectRate))
			case 'n':
				sortNow.Store(int32(top.ByTimewaitNow))
			case 'e':
				sortNow.Store(int32(top.ByConnectErrors))
			}
		}
	}
}

// nameOwners names each namespace by the container or pod its process
// belongs to, waiting a moment for the CRI's first answer.
func nameOwners(nss []report.Namespace, criEndpoint string, stderr io.Writer) error {
	owners, err := (&workloadFlags{criEndpoint: criEndpoint}).owners(stderr)
	if err != nil {
		return err
	}
	defer owners.Close()
	owners.WaitNames(2 * time.Second)
	for i := range nss {
		nss[i].Owner = report.OwnerOf(owners, nss[i].PID)
	}
	return nil
}
