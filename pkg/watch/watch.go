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

	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/filter"
	"github.com/twtrace/twtrace/pkg/tracer"
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
}

// Run traces until ctx is done or the duration passes, writing each
// matching event to out. It returns what the kernel lost.
func Run(ctx context.Context, cfg Config, out io.Writer) (Losses, error) {
	var loss Losses
	lost, err := run(ctx, cfg, out, &loss)
	loss.Records = lost
	return loss, err
}

func run(ctx context.Context, cfg Config, out io.Writer, loss *Losses) (lost uint64, err error) {
	tr, err := tracer.New(tracer.Options{
		RingBufferSize: cfg.RingSize,
		KindMask:       cfg.Filter.KindMask(),
		Netns:          cfg.Netns,
		MaxSockets:     cfg.MaxSockets,
		Tier:           cfg.Tier,
	})
	if err != nil {
		return 0, err
	}
	defer tr.Close()
	loss.Tier = tr.Tier()
	defer func() {
		// Best effort: what could be read is reported (Records is set
		// by Run from the read after the drain).
		loss.Losses, _ = tr.Losses()
		loss.Unfinished, _ = tr.Unfinished()
	}()
	if cfg.Ready != nil {
		cfg.Ready()
	}

	// Output is written in batches, one per drain of the ring buffer (at
	// most every poll interval): one write(2) per event cost more than
	// everything else twtrace does per event together.
	bw := bufio.NewWriterSize(out, 64<<10)
	write, err := writer(cfg.Format, bw)
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
		done <- tr.ReadBatches(func(e *event.Event) {
			if writeErr != nil || !cfg.Filter.Match(e) {
				return
			}
			if err := write(e); err != nil {
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

// writer writes an event to bw in format; the table's header goes out at
// once.
func writer(format Format, bw *bufio.Writer) (func(*event.Event) error, error) {
	if format == JSON {
		var buf []byte
		return func(e *event.Event) error {
			buf = event.AppendJSON(buf[:0], e)
			_, err := bw.Write(buf)
			return err
		}, nil
	}
	tw := event.NewTableWriter(bw)
	if err := tw.WriteHeader(); err != nil {
		return nil, err
	}
	return tw.Write, bw.Flush()
}
