// Package agent is twtrace's long-running node agent: the live engine
// refreshed every inventory interval, its tables summed into Prometheus
// series of bounded number, served with health and readiness on one
// HTTP listener. Data flows one way: frames from the engine become, once
// per frame, an immutable set of metrics that every scrape sends as is.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/twtrace/twtrace/pkg/filter"
	"github.com/twtrace/twtrace/pkg/live"
	"github.com/twtrace/twtrace/pkg/tracer"
	"github.com/twtrace/twtrace/pkg/workload"
)

// Defaults of the agent's flags.
const (
	DefaultListen          = "127.0.0.1:7470"
	DefaultInterval        = 15 * time.Second
	DefaultMaxSeries       = 500
	DefaultSeriesTTL       = 10 * time.Minute
	DefaultMaxDestinations = 50
)

// Config of an agent.
type Config struct {
	Listen    string // host:port; see DefaultListen
	WebConfig string // exporter-toolkit web config file (TLS, basic auth); "" none
	// Interval between refreshes of the inventory and the metrics.
	Interval time.Duration
	// InventoryCPU bounds the reads of the sockets (live.Config.InventoryCPU).
	InventoryCPU float64
	// MaxSeries bounds the workload x destination pairs; SeriesTTL drops
	// those quiet this long; MaxDestinations bounds the destinations
	// exposed.
	MaxSeries       int
	SeriesTTL       time.Duration
	MaxDestinations int
	Filter          *filter.Filter
	Netns           uint32 // in-kernel namespace filter; 0: all
	Tier            tracer.Tier
	By              workload.By
	Owners          workload.Resolver
	Select          workload.Selector
	// Stacks samples connect() stacks to name the per-request
	// workloads' call sites (live.Config.Stacks); 0: none.
	Stacks int
	// HTTPCallers: live.Config.HTTPCallers.
	HTTPCallers bool
	Version     string
	Log         *slog.Logger
}

// Agent is a configured agent, its listener bound.
type Agent struct {
	cfg    Config
	ln     net.Listener
	reg    *prometheus.Registry
	series *seriesTable

	current atomic.Pointer[[]prometheus.Metric]
	ready   atomic.Bool
	last    atomic.Int64 // unix nanoseconds of the last frame
	mu      sync.Mutex   // guards series and failing (one frame at a time)
	failing map[string]bool
}

// New checks cfg and binds the listener: a bad address fails before any
// BPF is loaded.
func New(cfg Config) (*Agent, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.WebConfig != "" {
		if err := validateWebConfig(cfg.WebConfig); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	a := &Agent{cfg: cfg, ln: ln, series: newSeriesTable(cfg.MaxSeries, cfg.SeriesTTL)}
	a.reg = prometheus.NewRegistry()
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collector{a})
	empty := []prometheus.Metric{}
	a.current.Store(&empty)
	return a, nil
}

// Addr is the address the agent listens on.
func (a *Agent) Addr() net.Addr { return a.ln.Addr() }

// Run serves and traces until ctx is done (nil), or until tracing or
// serving fails.
func (a *Agent) Run(ctx context.Context) error {
	srv := a.server()
	served := make(chan error, 1)
	go func() { served <- serve(a.ln, srv, a.cfg.WebConfig, a.cfg.Log) }()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	traced := make(chan error, 1)
	go func() { traced <- live.Run(ctx, a.liveConfig(), a.update) }()

	var err error
	select {
	case err = <-traced:
		if err != nil {
			err = fmt.Errorf("tracing: %w", err)
		}
	case err = <-served:
		cancel()
		<-traced
		err = fmt.Errorf("serving: %w", err)
	}
	shut, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	if serr := srv.Shutdown(shut); serr != nil && err == nil && !errors.Is(serr, http.ErrServerClosed) {
		err = serr
	}
	return err
}

// liveConfig is the engine's configuration: the agent's interval, rows
// expiring as series do, a first frame at once (readiness).
func (a *Agent) liveConfig() live.Config {
	return live.Config{
		Interval:     a.cfg.Interval,
		InventoryCPU: a.cfg.InventoryCPU,
		Filter:       a.cfg.Filter,
		Netns:        a.cfg.Netns,
		Tier:         a.cfg.Tier,
		By:           a.cfg.By,
		Owners:       a.cfg.Owners,
		Select:       a.cfg.Select,
		Stacks:       a.cfg.Stacks,
		HTTPCallers:  a.cfg.HTTPCallers,
		MaxKeys:      max(live.DefaultMaxKeys, 2*a.cfg.MaxSeries),
		Expire:       a.cfg.SeriesTTL,
		Immediate:    true,
		Ready:        func() { a.cfg.Log.Info("tracing", "interval", a.cfg.Interval.String()) },
	}
}

// update turns a frame into the metrics every scrape sends until the
// next one.
func (a *Agent) update(f *live.Frame) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.series.add(f)
	var e exposition
	e.workloads(a.series)
	e.destinations(f, a.cfg.MaxDestinations)
	e.losses(&f.Losses, a.series.folded)
	e.add(descBuild, prometheus.GaugeValue, 1, a.cfg.Version, f.Tier.String())
	e.add(descScan, prometheus.GaugeValue, f.ScanTime.Seconds())
	e.add(descReadTime, prometheus.GaugeValue, float64(f.InventoryTime.UnixNano())/1e9)
	n := len(a.series.m)
	if a.series.other != (tally{}) {
		n++
	}
	e.add(descSeries, prometheus.GaugeValue, float64(n))
	a.current.Store(&e.out)
	a.last.Store(f.Time.UnixNano())
	if !a.ready.Swap(true) {
		a.cfg.Log.Info("ready", "namespaces", len(f.Namespaces), "tier", f.Tier.String())
	}
	a.logErrors(f.Errors)
	return nil
}

// logErrors logs each inventory error once while it lasts (a namespace
// that cannot be read stays unreadable refresh after refresh), and once
// when it is over.
func (a *Agent) logErrors(errs []string) {
	now := make(map[string]bool, len(errs))
	for _, msg := range errs {
		now[msg] = true
		if !a.failing[msg] {
			a.cfg.Log.Warn("inventory", "error", msg)
		}
	}
	for msg := range a.failing {
		if !now[msg] {
			a.cfg.Log.Info("inventory recovered", "error", msg)
		}
	}
	a.failing = now
}

// collector sends the metrics of the last frame.
type collector struct{ a *Agent }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range *c.a.current.Load() {
		ch <- m
	}
}
