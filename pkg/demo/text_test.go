package demo

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/twtrace/twtrace/pkg/aggregate"
	"github.com/twtrace/twtrace/pkg/report"
	"github.com/twtrace/twtrace/pkg/top"
)

func testInfo() *Info {
	return &Info{
		Netns: 4026532177, Server: ServerAddr, PortRange: [2]uint16{PortFirst, PortLast},
		Usable: PortsUsable, Rate: Rate, ServerPID: 100, PooledPID: 101, ChurnerPID: 102,
	}
}

func TestNarrationFitsEightyColumns(t *testing.T) {
	in := testInfo()
	lines := Narration(in)
	want := []string{
		"demo: 'churner' opens a connection per request, 'pooled' keeps one open;",
		"both send 150 requests/s to 127.0.0.1:8080; ports 40000-40499, tcp_tw_reuse=0",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("Narration = %q, want %q", lines, want)
	}
	for _, l := range lines {
		if n := utf8.RuneCountInString(l); n > 80 {
			t.Errorf("%q: %d columns, want at most 80", l, n)
		}
	}
	one := NarrationLine(in)
	for _, s := range []string{"'churner'", "'pooled'", "150 requests/s", "127.0.0.1:8080", "netns 4026532177", "ports 40000-40499", "tcp_tw_reuse=0"} {
		if !strings.Contains(one, s) {
			t.Errorf("NarrationLine %q lacks %q", one, s)
		}
	}
}

func TestSummary(t *testing.T) {
	in := testInfo()
	lo := netip.MustParseAddr("127.0.0.1")
	f := &top.Frame{
		UptimeS: 12.004,
		Rows: []report.Row{
			{PID: 102, Comm: "churner", Netns: in.Netns, Daddr: lo, Dport: 8080, Role: "client",
				Counts: aggregate.Counts{Connects: 1800, Timewait: 499, ConnectErrors: 1294}, Verdict: "per-request"},
			{PID: 101, Comm: "pooled", Netns: in.Netns, Daddr: lo, Dport: 8080, Role: "client", Counts: aggregate.Counts{Connects: 1}},
			{Other: true, Comm: "(other)", Counts: aggregate.Counts{Connects: 7}},
		},
		Destinations: []report.LiveDestination{{Destination: report.Destination{
			Netns: in.Netns, Saddr: lo, Daddr: lo, Dport: 8080, PortsAvailable: 0, PortsUsable: 500,
		}}},
	}
	want := []string{
		"twtrace demo, 12s: 0 of 500 ports free toward 127.0.0.1:8080 (range 40000-40499, tcp_tw_reuse=0)",
		"  churner (pid 102): 1800 connects, 499 timewait, 1294 failed with EADDRNOTAVAIL; verdict per-request",
		"  pooled  (pid 101): 1 connect, 0 timewait, 0 failed: the same 150 requests/s, one port",
		"  the fix: reuse connections (a pool, HTTP keep-alive), as pooled does;",
		"  tcp_tw_reuse=1 or a wider port range only buy time",
	}
	if got := Summary(in, f); !slices.Equal(got, want) {
		t.Errorf("Summary =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// A row of another pid or name is not the client's: a process that
	// took a client's pid, or a client under another name.
	f.Rows[0].PID, f.Rows[1].Comm = 999, "twtrace"
	f.Destinations = nil
	got := Summary(in, f)
	if got[0] != "twtrace demo, 12s: no socket toward 127.0.0.1:8080 now" ||
		got[1] != "  churner (pid 102): not seen" || got[2] != "  pooled  (pid 101): not seen" {
		t.Errorf("Summary without the clients' rows = %q", got)
	}

	if got := Summary(in, nil); len(got) != 1 || !strings.Contains(got[0], "before the first refresh") {
		t.Errorf("Summary without a frame = %q", got)
	}
	if got := Summary(nil, nil); len(got) != 1 || !strings.Contains(got[0], "before it started") {
		t.Errorf("Summary before the start = %q", got)
	}
}

func TestParseSpec(t *testing.T) {
	good := []string{
		`{"role":"server"}`,
		`{"role":"churner","addr":"127.0.0.1:8080","rate":150}`,
		`{"role":"pooled","addr":"127.0.0.1:8080","rate":0.5,"parent":1}`,
	}
	for _, raw := range good {
		if _, err := parseSpec(raw); err != nil {
			t.Errorf("parseSpec(%s): %v", raw, err)
		}
	}
	bad := []string{
		``, `{`, `{"role":"shell"}`, `{"role":""}`,
		`{"role":"churner","addr":"nowhere","rate":150}`,
		`{"role":"churner","addr":"127.0.0.1:8080","rate":0}`,
		`{"role":"pooled","addr":"127.0.0.1:8080","rate":-1}`,
		`{"role":"pooled","addr":"127.0.0.1:8080"}`,
	}
	for _, raw := range bad {
		if _, err := parseSpec(raw); err == nil || !strings.HasPrefix(err.Error(), "invalid "+ChildEnv) {
			t.Errorf("parseSpec(%s) = %v, want an error naming %s", raw, err, ChildEnv)
		}
	}
}

func TestTailKeepsTheLastWords(t *testing.T) {
	var tl tail
	tl.Write([]byte(strings.Repeat("x", 3000) + "\n"))
	tl.Write([]byte(childPrefix("pooled") + "dial tcp 127.0.0.1:8080: connection refused\n\n"))
	if got := tl.lastWords("pooled"); got != "dial tcp 127.0.0.1:8080: connection refused" {
		t.Errorf("lastWords = %q", got)
	}
	if len(tl.b) > tailSize {
		t.Errorf("tail holds %d bytes, want at most %d", len(tl.b), tailSize)
	}
}
