// Package watch streams twtrace events to a writer: the `twtrace watch`
// command without its flag parsing.
package watch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/twtrace/twtrace/pkg/callsite"
	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/filter"
	"github.com/twtrace/twtrace/pkg/report"
	"github.com/twtrace/twtrace/pkg/symbol"
	"github.com/twtrace/twtrace/pkg/tracer"
	"github.com/twtrace/twtrace/pkg/workload"
)

// Format of the event stream.
type Format int

const (
	Table Format = iota // aligned columns for a person
	JSON                // JSON Lines, one object per event
)

// Config of one watch session.
type Config struct {
	Format   Format
	Filter   *filter.Filter
	Netns    uint32        // in-kernel namespace filter; 0 = all
	Duration time.Duration // 0 = until ctx is done
	RingSize int           // bytes; 0 = the tracer's default
	// MaxSockets sizes the kernel's socket-owner table; 0 = the default.
	MaxSockets int
	// Tier picks the kernel hooks (tracer.Options.Tier).
	Tier tracer.Tier
	// Ready is called once every probe is attached.
	Ready func()
	// Owners tells what owns each event's process (cgroup, container,
	// pod, unit), for the JSON fields and Select; nil: nothing known.
	Owners workload.Resolver
	// Select keeps the events of some pods and containers only.
	Select workload.Selector
	// Stacks takes the user stack of every connect() and names its call
	// site on the events of its socket (timewait, connect_error,
	// timewait_overflow). Off by default: each new stack is read and
	// symbolized while its process lives.
	Stacks bool
	// HTTPCallers, with Stacks: live.Config.HTTPCallers.
	HTTPCallers bool
}

// Losses are what the kernel could not deliver: the tracer's counters
// (Records as read once the ring buffer was drained), and the sockets
// whose end was not seen.
type Losses struct {
	tracer.Losses
	// Unfinished sockets were closed first but their end was not seen by
	// the time tracing stopped: still closing, or missed by the kernel.
	Unfinished uint64
	// Tier is what ran (zero when tracing did not start).
	Tier tracer.TierInfo
	// UnresolvedStacks are connect() stacks kept but not symbolized: their
	// process was gone before they could be read (Config.Stacks). Stacks
	// past the bound of those remembered count in LostStacks.
	UnresolvedStacks uint64
	// UnprobedHTTPCallers are Go executables dialling through net/http
	// whose dials' callers could not be probed (report.Losses).
	UnprobedHTTPCallers uint64
}

// Run traces until ctx is done or the duration passes, writing each
// matching event to out. It returns what the kernel lost.
func Run(ctx context.Context, cfg Config, out io.Writer) (Losses, error) {
	var loss Losses
	lost, err := run(ctx, cfg, out, &loss)
	loss.Records = lost
	return loss, err
}

// startTracer loads the tracer cfg asks for and, with cfg.Stacks, what
// names the call sites of its stacks (nil without).
func startTracer(cfg *Config) (*tracer.Tracer, *callsite.Sites, error) {
	opts := tracer.Options{
		RingBufferSize: cfg.RingSize,
		KindMask:       cfg.Filter.KindMask(),
		Netns:          cfg.Netns,
		MaxSockets:     cfg.MaxSockets,
		Tier:           cfg.Tier,
	}
	if cfg.Stacks {
		opts.StackSample = 1
	}
	tr, err := tracer.New(opts)
	if err != nil || !cfg.Stacks {
		return tr, nil, err
	}
	sites := callsite.New(tr, symbol.NewResolver(symbol.DefaultCacheSize))
	if cfg.HTTPCallers {
		sites.ProbeGoHTTP() // where it cannot, net/http's own dial is the site
	}
	return tr, sites, nil
}

// read sets the losses from the tracer and the call sites, best effort:
// what could be read is reported (Records is set by Run from the read
// after the drain).
func (loss *Losses) read(tr *tracer.Tracer, sites *callsite.Sites) {
	loss.Losses, _ = tr.Losses()
	loss.Unfinished, _ = tr.Unfinished()
	if sites != nil {
		st := sites.Stats()
		loss.LostStacks += st.Dropped
		loss.UnresolvedStacks = st.Unresolved
		loss.UnprobedHTTPCallers = st.GoHTTPRefused
	}
}

func run(ctx context.Context, cfg Config, out io.Writer, loss *Losses) (lost uint64, err error) {
	tr, sites, err := startTracer(&cfg)
	if err != nil {
		return 0, err
	}
	defer tr.Close()
	loss.Tier = tr.Tier()
	defer loss.read(tr, sites)
	if cfg.Ready != nil {
		cfg.Ready()
	}

	// Output is written in batches, one per drain of the ring buffer (at
	// most every poll interval): one write(2) per event cost more than
	// everything else twtrace does per event together.
	bw := bufio.NewWriterSize(out, 64<<10)
	var named *callSites
	if sites != nil {
		named = newCallSites(sites)
	}
	write, err := writer(cfg.Format, bw, named)
	if err != nil {
		return 0, err
	}

	var writeErr error
	done := make(chan error, 1)
	go func() {
		fail := func(err error) {
			if writeErr == nil {
				writeErr = err
				tr.Stop()
			}
		}
		var id workload.Identity
		done <- tr.ReadBatches(func(e *event.Event) {
			if e.Kind == event.KindStack {
				// Not a report: read the new stack while its process
				// lives, for the events that will name it.
				if sites != nil {
					sites.Learn(e)
				}
				return
			}
			if writeErr != nil || !cfg.Filter.Match(e) {
				return
			}
			owner(&cfg, e, &id)
			if !cfg.Select.Match(&id) {
				return
			}
			if err := write(e, &id); err != nil {
				fail(err)
			}
		}, func() {
			if writeErr == nil {
				if err := bw.Flush(); err != nil {
					fail(err)
				}
			}
		})
	}()

	var timeout <-chan time.Time
	if cfg.Duration > 0 {
		timer := time.NewTimer(cfg.Duration)
		defer timer.Stop()
		timeout = timer.C
	}
	select {
	case <-ctx.Done():
	case <-timeout:
	case err := <-done:
		// Read stops early only on an error or a failed write.
		lost, _ = tr.Lost()
		if writeErr != nil {
			return lost, fmt.Errorf("writing events: %w", writeErr)
		}
		return lost, err
	}
	// Stop producing, then drain what the kernel already handed over.
	serr := tr.Stop()
	rerr := <-done
	lost, lerr := tr.Lost()
	if writeErr != nil {
		return lost, fmt.Errorf("writing events: %w", writeErr)
	}
	return lost, errors.Join(rerr, serr, lerr)
}

// owner sets id to what owns e's process.
func owner(cfg *Config, e *event.Event, id *workload.Identity) {
	*id = workload.Identity{}
	if cfg.Owners == nil {
		return
	}
	p := processOf(e)
	*id = cfg.Owners.Owner(e.CgroupID, &p)
	cfg.Owners.Name(id)
}

// processOf is what the kernel recorded about e's process.
func processOf(e *event.Event) workload.Process {
	return workload.Process{PID: e.PID, PPID: e.Proc.PPID, ExeDev: e.Proc.ExeDev, ExeIno: e.Proc.ExeIno, Comm: e.Proc.Comm}
}

// writer writes an event and what owns its process to bw in format, with
// its call site when sites is not nil; the table's header goes out at
// once.
func writer(format Format, bw *bufio.Writer, sites *callSites) (func(*event.Event, *workload.Identity) error, error) {
	if format == JSON {
		var buf []byte
		return func(e *event.Event, id *workload.Identity) error {
			buf = appendJSON(buf[:0], e, id)
			if sites != nil && carriesSite(e.Kind) {
				buf = sites.appendJSON(buf[:len(buf)-2], e) // before "}\n"
				buf = append(buf, "}\n"...)
			}
			_, err := bw.Write(buf)
			return err
		}, nil
	}
	if sites == nil {
		tw := event.NewTableWriter(bw)
		if err := tw.WriteHeader(); err != nil {
			return nil, err
		}
		return func(e *event.Event, id *workload.Identity) error { return tw.WriteOwned(e, report.Owner(id)) }, bw.Flush()
	}
	// The call site ends the line: the table writer's line is taken
	// whole, its newline moved after the site.
	var line lineBuffer
	tw := event.NewTableWriter(&line)
	if err := tw.WriteHeader(); err != nil {
		return nil, err
	}
	if _, err := bw.Write(line); err != nil {
		return nil, err
	}
	return func(e *event.Event, id *workload.Identity) error {
		line = line[:0]
		if err := tw.WriteOwned(e, report.Owner(id)); err != nil {
			return err
		}
		if carriesSite(e.Kind) {
			line = append(line[:len(line)-1], sites.suffix(e)...)
			line = append(line, '\n')
		}
		_, err := bw.Write(line)
		return err
	}, bw.Flush()
}

// lineBuffer keeps what is written to it: one table line at a time.
type lineBuffer []byte

func (l *lineBuffer) Write(p []byte) (int, error) {
	*l = append(*l, p...)
	return len(p), nil
}

// appendJSON is e's JSON line with what owns its process: every field
// always present, "" where not known (docs/json.md).
func appendJSON(dst []byte, e *event.Event, id *workload.Identity) []byte {
	dst = event.AppendJSON(dst, e)
	dst = dst[:len(dst)-2] // "}\n"
	for _, f := range [...]struct{ name, value string }{
		{"container_id", id.ContainerID}, {"container_runtime", id.ContainerRuntime},
		{"pod_uid", id.PodUID}, {"pod", id.Pod}, {"pod_namespace", id.PodNamespace},
		{"container", id.Container}, {"unit", id.Unit}, {"cgroup", id.Cgroup},
	} {
		dst = append(dst, `,"`...)
		dst = append(dst, f.name...)
		dst = append(dst, `":`...)
		dst = event.AppendJSONString(dst, f.value)
	}
	return append(dst, "}\n"...)
}
