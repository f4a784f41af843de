package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/twtrace/twtrace/pkg/agent"
	"github.com/twtrace/twtrace/pkg/live"
	"github.com/twtrace/twtrace/pkg/owner"
)

// version is set at link time (-ldflags "-X main.version=v1.2.3"); else
// the module's version or the commit it was built from.
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	switch {
	case rev == "":
		return "devel"
	case dirty:
		return "devel-" + rev + "-dirty"
	}
	return "devel-" + rev
}

type agentFlags struct {
	watchFlags
	listen, webConfig, logFormat, cgroupRoot, by string
	interval, seriesTTL                          time.Duration
	maxSeries, maxDestinations                   int
	inventoryCPU                                 float64
	stacks                                       int
}

func newAgentCommand() *cobra.Command {
	var f agentFlags
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Serve Prometheus metrics: who churns ports toward where, each destination's headroom and forecast",
		Long: `twtrace agent traces like top and serves, on --listen, /metrics (Prometheus
text and OpenMetrics), /healthz and /readyz. Metrics are refreshed every
--inventory-interval from twtrace's own bounded tables; at most --max-series
workload x destination pairs are labelled, the rest fold into comm="other".
Every metric, label and alert: docs/agent.md. SIGTERM or SIGINT: exit 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runAgent(cmd, &f) },
	}
	addFilterFlags(cmd, &f.watchFlags)
	fl := cmd.Flags()
	fl.Lookup("events").DefValue = "timewait,connect_error"
	fl.Lookup("events").Usage = "event kinds, comma-separated (default timewait,connect_error: bind_error needs syscall tracepoints, which slow every syscall on the host; timewait_overflow and timewait_reuse come from the precise tier)"
	fl.StringVar(&f.listen, "listen", agent.DefaultListen, "address to serve /metrics, /healthz and /readyz on (host:port; \":7470\" for every interface)")
	fl.StringVar(&f.webConfig, "web.config.file", "", "Prometheus exporter-toolkit web configuration (TLS, basic auth) for the listener")
	fl.DurationVar(&f.interval, "inventory-interval", agent.DefaultInterval, "refresh of the socket inventory and of the metrics")
	fl.IntVar(&f.maxSeries, "max-series", agent.DefaultMaxSeries, "workload x destination pairs labelled; the rest fold into one comm=\"other\" series per family")
	fl.DurationVar(&f.seriesTTL, "series-ttl", agent.DefaultSeriesTTL, "a workload x destination series quiet this long disappears")
	fl.IntVar(&f.maxDestinations, "max-destinations", agent.DefaultMaxDestinations, "destinations exposed: those heading soonest for exhaustion, then with the least headroom")
	fl.StringVar(&f.cgroupRoot, "cgroup-root", "", "the host's cgroup v2 mount (default: found in /proc/self/mountinfo; in a container, where the host's is mounted)")
	fl.StringVar(&f.logFormat, "log-format", "text", "log lines: text or json (log/slog)")
	fl.StringVar(&f.by, "by", "program", byUsage)
	fl.Float64Var(&f.inventoryCPU, "inventory-cpu", 100*live.DefaultInventoryCPU, inventoryCPUUsage)
	fl.IntVar(&f.stacks, "stacks", DefaultTopStacks, stacksUsage(DefaultTopStacks)+"; the per-request workloads' call sites (twtrace_per_request_call_site)")
	fl.Lookup("stacks").DefValue = "" // said in the usage
	addHTTPCallersFlag(cmd, &f.watchFlags, false)
	return cmd
}

// check validates the agent's own flags.
func (f *agentFlags) check() error {
	switch {
	case f.interval < time.Second:
		return usageError{fmt.Errorf("invalid --inventory-interval %s: want at least 1s", f.interval)}
	case f.maxSeries < 1 || f.maxSeries > 100000:
		return usageError{fmt.Errorf("invalid --max-series %d: want 1 to 100000", f.maxSeries)}
	case f.seriesTTL < time.Minute:
		return usageError{fmt.Errorf("invalid --series-ttl %s: want at least 1m (a timewait socket lives 60 s)", f.seriesTTL)}
	case f.maxDestinations < 0 || f.maxDestinations > 10000:
		return usageError{fmt.Errorf("invalid --max-destinations %d: want 0 to 10000", f.maxDestinations)}
	case f.logFormat != "text" && f.logFormat != "json":
		return usageError{fmt.Errorf("invalid --log-format %q: want text or json", f.logFormat)}
	}
	if f.events == "" {
		f.events = "timewait,connect_error"
	}
	if err := checkStacks(f.stacks); err != nil {
		return err
	}
	_, err := checkInventoryCPU(f.inventoryCPU)
	return err
}

func newLogger(format string, w io.Writer) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}

func runAgent(cmd *cobra.Command, f *agentFlags) error {
	if err := f.check(); err != nil {
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
	log := newLogger(f.logFormat, cmd.ErrOrStderr())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	owners, err := owner.New(owner.Options{Endpoint: f.criEndpoint, CgroupRoot: f.cgroupRoot, Log: logWriter{log}})
	if err != nil {
		return fmt.Errorf("resolving cgroups: %w", err)
	}
	defer owners.Close()
	a, err := agent.New(agent.Config{
		Listen: f.listen, WebConfig: f.webConfig, Interval: f.interval, InventoryCPU: f.inventoryCPU / 100, Stacks: f.stacks,
		HTTPCallers: f.httpCallers,
		MaxSeries:   f.maxSeries, SeriesTTL: f.seriesTTL, MaxDestinations: f.maxDestinations,
		Filter: flt, Tier: tier, By: by, Owners: owners, Select: f.selector(),
		Version: buildVersion(), Log: log,
	})
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EADDRNOTAVAIL) {
			return err // the host's, not the flag's
		}
		return usageError{err}
	}
	log.Info("serving", "address", a.Addr().String(), "version", buildVersion())
	if err := a.Run(ctx); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// logWriter turns the CRI cache's log lines into slog warnings.
type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	msg := string(p)
	for len(msg) > 0 && msg[len(msg)-1] == '\n' {
		msg = msg[:len(msg)-1]
	}
	w.log.Warn(msg, "component", "cri")
	return len(p), nil
}
