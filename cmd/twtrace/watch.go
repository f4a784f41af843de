package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/twtrace/twtrace/pkg/watch"
)

// addStacksFlag adds watch's --stacks: off by default, unlike top's and
// run's, because watch prints every event and would take every
// connect()'s stack to name them.
func addStacksFlag(cmd *cobra.Command, f *watchFlags) {
	cmd.Flags().BoolVar(&f.stacks, "stacks", false, "take the user stack of every connect() and name the line of code that opened each event's connection (call_site, client_library and stack in JSON); costs a stack walk per connect, and reading each new stack's binary")
	addHTTPCallersFlag(cmd, f, true)
}

func runWatch(cmd *cobra.Command, f *watchFlags) error {
	var format watch.Format
	switch f.output {
	case "table":
		format = watch.Table
	case "json":
		format = watch.JSON
	default:
		return usageError{fmt.Errorf("invalid --output %q: want table or json", f.output)}
	}
	if f.duration < 0 {
		return usageError{fmt.Errorf("invalid --duration %s: must not be negative", f.duration)}
	}
	flt, err := f.filter()
	if err != nil {
		return err
	}
	tier, err := f.parseTier()
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	stderr := cmd.ErrOrStderr()
	owners, err := f.owners(stderr)
	if err != nil {
		return err
	}
	defer owners.Close()
	loss, err := watch.Run(ctx, watch.Config{
		Format:      format,
		Filter:      flt,
		Netns:       flt.SingleNetns(),
		Duration:    f.duration,
		RingSize:    f.ringSize,
		MaxSockets:  f.maxSockets,
		Select:      f.selector(),
		Owners:      owners,
		Tier:        tier,
		Stacks:      f.stacks,
		HTTPCallers: f.httpCallers,
		Ready: func() {
			fmt.Fprintln(stderr, "twtrace: tracing TIME_WAIT entries and ephemeral-port failures; Ctrl-C to stop")
		},
	}, cmd.OutOrStdout())
	if loss.Tier.Tier != 0 {
		fmt.Fprintf(stderr, "twtrace: %s\n", tierLine(loss.Tier))
	}
	for _, l := range lossLines(&loss) {
		fmt.Fprintf(stderr, "twtrace: %s\n", l)
	}
	if errors.Is(err, syscall.EPIPE) {
		return nil // the reader went away (| head): not our failure
	}
	return err
}

// lossLines says what watch could not report, one line per counter that
// is not zero.
func lossLines(loss *watch.Losses) []string {
	var lines []string
	say := func(n uint64, format string) {
		if n > 0 {
			lines = append(lines, fmt.Sprintf(format, n))
		}
	}
	say(loss.UntrackedTimewait, "%d timewait sockets went untracked: the precise tier's table was full (their timewait_end is missing)")
	say(loss.Records, "lost %d records: the ring buffer was full (raise --ring-buffer-size)")
	say(loss.Untracked, "%d sockets went untracked: the owner table was full (raise --max-sockets)")
	say(loss.Recovered, "reported %d timewait entries late (\"recovered\"): the kernel ran none of twtrace's programs when they happened")
	say(loss.Unfinished, "%d sockets closed without their end being seen (still closing, or missed by the kernel): up to that many timewait entries are missing")
	say(loss.Missed, "the kernel skipped %d runs of twtrace's programs (a BPF program was already running on that CPU): up to that many events are missing or misreported")
	say(loss.LostStacks, "%d connect() stacks had no room to be kept: their events name no call site")
	say(loss.UnresolvedStacks, "%d connect() stacks were not read before their process exited: their events name no call site")
	say(loss.UnprobedHTTPCallers, "%d Go executables dialling through net/http could not be probed for their callers: their call site is net/http's dial goroutine")
	return lines
}
