package top

import (
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/twtrace/twtrace/pkg/aggregate"
	"github.com/twtrace/twtrace/pkg/report"
)

func testFrame() *Frame {
	ex := 3.0
	ms, b := 2.5, uint64(480)
	hp := 2.0
	churner := report.Row{PID: 4121, Comm: "checkout-svc", Netns: 7, Daddr: netip.MustParseAddr("10.0.0.2"), Dport: 80, Role: "client",
		ConnectsPerS: 931, TimewaitPerS: 930.5, TimewaitNow: 27479,
		Counts:        aggregate.Counts{ConnectErrors: 12, Connects: 9000, Timewait: 8990},
		LifetimeP50Ms: &ms, BytesP50: &b, HeadroomPct: &hp, ExhaustionInS: &ex, Verdict: "per-request",
		Advice: []string{"one", "two", "three", "four", "five"}}
	evil := report.Row{PID: 66, Comm: "\x1b[2Jevil", Netns: 7, Daddr: netip.MustParseAddr("2001:db8::1"), Dport: 443, Role: "client",
		ConnectsPerS: 1, Advice: []string{}}
	server := report.Row{PID: 9, Comm: "nginx", Netns: 7, Daddr: netip.MustParseAddr("10.0.0.9"), Dport: 8080, Role: "server",
		TimewaitPerS: 5, Counts: aggregate.Counts{Timewait: 50, TimewaitOverflow: 7, TimewaitReused: 2}, Advice: []string{"harmless"}}
	return &Frame{
		Time: time.Date(2026, 11, 24, 14, 2, 11, 0, time.UTC), IntervalS: 1, Sort: "timewait",
		Rows: []report.Row{churner, server, evil, {Other: true, Comm: "(other)", Folded: 4, ConnectsPerS: 3, TimewaitPerS: 2}},
		Destinations: []report.LiveDestination{report.Live(report.Destination{
			Netns: 7, Saddr: netip.MustParseAddr("10.0.0.1"), Daddr: netip.MustParseAddr("10.0.0.2"), Dport: 80,
			Timewait: 27690, PortsInUse: 27690, PortsAvailable: 542, PortsUsable: 28232, HeadroomPct: 1.9, CeilingPerS: 470.5,
		}, 931, 930.5, 211, &ex)},
		Namespaces: []report.Namespace{{Netns: 7, Timewait: 27690}},
	}
}

// Every line fits 80 columns; the churner's block leads with its headroom
// and forecast; advice is cut to maxAdvice lines; a hostile comm is
// escaped; what does not fit is counted.
func TestRenderEighty(t *testing.T) {
	lines := Render(testFrame(), 80, 40)
	text := strings.Join(lines, "\n")
	for _, l := range lines {
		if n := utf8.RuneCountInString(l); n > 80 {
			t.Errorf("line of %d columns: %q", n, l)
		}
	}
	for _, want := range []string{
		"→ 10.0.0.2:80", "ports free 542/28232 (2%)", "EXHAUSTED IN 3s", "211 unattributed",
		"checkout-svc", "PER-REQUEST", "- one", "- two", "… 3 more",
		"accepted on port 8080", "! 7 closed with no timewait socket (tcp_max_tw_buckets full); 2 connects", `\x1b[2Jevil`, "→ [2001:db8::1]:443", "4 more destinations/processes",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("screen lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "- three") || strings.Contains(text, "\x1b") {
		t.Errorf("advice not cut or escape not escaped:\n%s", text)
	}
}

// A short terminal gets whole blocks only, and a count of the rest.
func TestRenderShortTerminal(t *testing.T) {
	lines := Render(testFrame(), 80, 12)
	if len(lines) > 12 {
		t.Fatalf("%d lines for a 12-line terminal", len(lines))
	}
	last := lines[len(lines)-1]
	if !strings.Contains(last, "more destinations/processes") {
		t.Errorf("last line %q: want the count of what is not shown", last)
	}
}

func TestWrap(t *testing.T) {
	s := "Stop-gap only: net.ipv4.tcp_tw_reuse=1 (needs TCP timestamps) or a wider ip_local_port_range."
	got := wrap(s, 40)
	if strings.Join(got, " ") != s {
		t.Errorf("wrap lost text: %q", got)
	}
	for _, l := range got {
		if utf8.RuneCountInString(l) > 40 || strings.HasPrefix(l, " ") || strings.HasSuffix(l, " ") {
			t.Errorf("line %q: want at most 40 runes, no edge spaces", l)
		}
	}
	if got := wrap("short", 40); len(got) != 1 || got[0] != "short" {
		t.Errorf("wrap(short) = %q", got)
	}
	long := strings.Repeat("x", 90) // no space: cut hard
	if got := wrap(long, 40); len(got) != 3 || strings.Join(got, "") != long {
		t.Errorf("wrap of a word longer than the line = %q", got)
	}
}
