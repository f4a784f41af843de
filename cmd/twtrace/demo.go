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
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/twtrace/twtrace/pkg/demo"
	"github.com/twtrace/twtrace/pkg/live"
	"github.com/twtrace/twtrace/pkg/top"
)

func init() {
	// The demo's processes are this binary again: run one and exit when
	// this process is one of them, before anything else.
	demo.RunChildIfAsked()
}

type demoFlags struct {
	output   string
	duration time.Duration
}

func newDemoCommand() *cobra.Command {
	var f demoFlags
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Reproduce ephemeral-port exhaustion in a throwaway network namespace, and watch twtrace find it",
		Long: fmt.Sprintf(`twtrace demo creates a network namespace with only loopback, a port range
of %d ports (%d-%d) and tcp_tw_reuse=0, and runs three processes in it:
'server', 'churner', which opens a new connection per request and closes
it first (each leaves its port in TIME_WAIT for 60 s), and 'pooled', which
sends the same %g requests/s over one connection. The churner uses up the
range in about %.1f s, then connect() fails with EADDRNOTAVAIL.

twtrace top shows it live, restricted to that namespace: full screen on a
terminal, else (or with -o json) one JSON object per second as 'top -o json'.
At the end a summary; then the processes, the namespace and the BPF
programs are gone, also after Ctrl-C or SIGTERM (and the processes die
with the demo even when it is SIGKILLed). Needs root.`,
			demo.PortsUsable, demo.PortFirst, demo.PortLast, demo.Rate, float64(demo.PortsUsable)/demo.Rate),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDemo(cmd, &f) },
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.output, "output", "o", "", "output: table (full screen) or json (one object per second, the summary on stderr); default table on a terminal, json otherwise")
	fl.DurationVar(&f.duration, "duration", demo.DefaultDuration, "stop after this long, rounded up to whole seconds (one refresh a second); 0: until q or Ctrl-C")
	return cmd
}

func runDemo(cmd *cobra.Command, f *demoFlags) error {
	stdout := cmd.OutOrStdout()
	output, fd, err := screenOutput(f.output, stdout)
	if err != nil {
		return err
	}
	f.output = output
	const interval = time.Second
	if f.duration < 0 || (f.duration > 0 && f.duration < interval) {
		return usageError{fmt.Errorf("invalid --duration %s: want at least 1s, or 0 for no limit", f.duration)}
	}
	count := int((f.duration + interval - 1) / interval)
	// Before the screen changes: a missing privilege is one line.
	if err := demo.Preflight(); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var sortNow atomic.Int32
	var info atomic.Pointer[demo.Info]
	var last *top.Frame
	cfg := demo.Config{Interval: interval, Count: count}
	// The demo's frames as top shows them, in the order the keys chose.
	view := func(fr *live.Frame) *top.Frame {
		return top.View(fr, top.Sort(sortNow.Load()), top.DefaultRows)
	}
	if f.output == "json" {
		stderr := cmd.ErrOrStderr()
		bw := bufio.NewWriter(stdout)
		enc := json.NewEncoder(bw)
		cfg.Ready = func(in *demo.Info) {
			info.Store(in)
			fmt.Fprintf(stderr, "twtrace: %s; one JSON object per second\n", demo.NarrationLine(in))
		}
		err := demo.Run(ctx, cfg, func(lf *live.Frame) error {
			fr := view(lf)
			last = fr
			if err := enc.Encode(fr); err != nil {
				return err
			}
			return bw.Flush()
		})
		if errors.Is(err, syscall.EPIPE) {
			err = nil
		}
		if err == nil {
			writeLines(stderr, demo.Summary(info.Load(), last))
		}
		return err
	}
	err = runDemoScreen(ctx, stop, fd, cfg, view, &sortNow, &info, &last)
	if err == nil {
		writeLines(stdout, demo.Summary(info.Load(), last))
	}
	return err
}

func writeLines(w io.Writer, lines []string) {
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

// runDemoScreen runs the demo full screen, as runTopScreen runs top (the
// alternate screen, the keyboard raw, the same keys), with the narration
// above top's view. It stores what the demo set up in info, and its last
// frame in last.
func runDemoScreen(ctx context.Context, quit func(), out *os.File, cfg demo.Config, view func(*live.Frame) *top.Frame,
	sortNow *atomic.Int32, info *atomic.Pointer[demo.Info], last **top.Frame) error {
	restore, err := fullScreen(out)
	if err != nil {
		return err
	}
	defer restore()
	go readKeys(quit, sortNow)
	// draw puts lines on the screen; no newline after the last one: on
	// the bottom line it would scroll the screen.
	draw := func(lines []string, width int) error {
		var b strings.Builder
		b.WriteString("\x1b[H")
		for i, l := range lines {
			if i > 0 {
				b.WriteString("\x1b[K\r\n")
			}
			b.WriteString(cutRunes(l, max(width, 40)))
		}
		b.WriteString("\x1b[K\x1b[J")
		_, err := io.WriteString(out, b.String())
		return err
	}
	size := func() (int, int) {
		w, h, err := term.GetSize(int(out.Fd()))
		if err != nil {
			return 80, 24
		}
		return w, h
	}
	draw([]string{"twtrace demo: creating a network namespace and loading twtrace..."}, 80)
	cfg.Ready = func(in *demo.Info) {
		info.Store(in)
		w, _ := size()
		draw(append(demo.Narration(in), "", "server, pooled and churner started; twtrace refreshes every second"), w)
	}
	return demo.Run(ctx, cfg, func(lf *live.Frame) error {
		fr := view(lf)
		*last = fr
		if ctx.Err() != nil {
			return nil
		}
		w, h := size()
		fr.Sort = top.Sort(sortNow.Load()).String()
		var head []string
		if in := info.Load(); in != nil {
			head = append(demo.Narration(in), "")
		}
		return draw(append(head, top.Render(fr, w, max(h-len(head), 5))...), w)
	})
}

// cutRunes shortens s to width runes.
func cutRunes(s string, width int) string {
	if utf8.RuneCountInString(s) <= width {
		return s
	}
	return string([]rune(s)[:width-1]) + "…"
}
