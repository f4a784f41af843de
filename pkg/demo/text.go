package demo

import (
	"fmt"
	"math"

	"github.com/twtrace/twtrace/pkg/report"
	"github.com/twtrace/twtrace/pkg/top"
)

// Narration says what the demo does, in lines of at most 80 columns, for
// the top of the screen.
func Narration(in *Info) []string {
	return []string{
		fmt.Sprintf("demo: '%s' opens a connection per request, '%s' keeps one open;", roleChurner, rolePooled),
		fmt.Sprintf("both send %s requests/s to %s; ports %d-%d, tcp_tw_reuse=0",
			rateString(in.Rate), in.Server, in.PortRange[0], in.PortRange[1]),
	}
}

// NarrationLine is Narration in one line, with the namespace.
func NarrationLine(in *Info) string {
	return fmt.Sprintf("demo: '%s' opens a connection per request, '%s' keeps one open; both send %s requests/s to %s in netns %d (ports %d-%d, tcp_tw_reuse=0)",
		roleChurner, rolePooled, rateString(in.Rate), in.Server, in.Netns, in.PortRange[0], in.PortRange[1])
}

// Summary is the demo's outcome in five lines, from its last frame as top
// showed it (nil when it ended before the first one).
func Summary(in *Info, last *top.Frame) []string {
	if in == nil {
		return []string{"twtrace demo: ended before it started"}
	}
	if last == nil {
		return []string{"twtrace demo: ended before the first refresh"}
	}
	var dest *report.LiveDestination
	for i := range last.Destinations {
		d := &last.Destinations[i]
		if d.Netns == in.Netns && d.Daddr == in.Server.Addr() && d.Dport == in.Server.Port() {
			dest = d
		}
	}
	head := fmt.Sprintf("twtrace demo, %ds: ", int(math.Round(last.UptimeS)))
	if dest != nil {
		head += fmt.Sprintf("%d of %d ports free toward %s (range %d-%d, tcp_tw_reuse=0)",
			dest.PortsAvailable, dest.PortsUsable, in.Server, in.PortRange[0], in.PortRange[1])
	} else {
		head += fmt.Sprintf("no socket toward %s now", in.Server)
	}
	lines := []string{head}

	churner := findRow(last, in, in.ChurnerPID, roleChurner)
	if churner == nil {
		lines = append(lines, fmt.Sprintf("  %-7s (pid %d): not seen", roleChurner, in.ChurnerPID))
	} else {
		v := churner.Verdict
		if v == "" {
			v = "none yet"
		}
		lines = append(lines, fmt.Sprintf("  %-7s (pid %d): %d connects, %d timewait, %d failed with EADDRNOTAVAIL; verdict %s",
			roleChurner, in.ChurnerPID, churner.Connects, churner.Timewait, churner.ConnectErrors, v))
	}
	pooled := findRow(last, in, in.PooledPID, rolePooled)
	if pooled == nil {
		lines = append(lines, fmt.Sprintf("  %-7s (pid %d): not seen", rolePooled, in.PooledPID))
	} else {
		lines = append(lines, fmt.Sprintf("  %-7s (pid %d): %d %s, %d timewait, %d failed: the same %s requests/s, one port",
			rolePooled, in.PooledPID, pooled.Connects, plural(pooled.Connects, "connect", "connects"),
			pooled.Timewait, pooled.ConnectErrors, rateString(in.Rate)))
	}
	return append(lines,
		"  the fix: reuse connections (a pool, HTTP keep-alive), as pooled does;",
		"  tcp_tw_reuse=1 or a wider port range only buy time")
}

// findRow is the client row of pid (named comm) toward the demo's server.
func findRow(f *top.Frame, in *Info, pid int, comm string) *report.Row {
	for i := range f.Rows {
		r := &f.Rows[i]
		if !r.Other && r.Role == "client" && int(r.PID) == pid && r.Comm == comm &&
			r.Daddr == in.Server.Addr() && r.Dport == in.Server.Port() {
			return r
		}
	}
	return nil
}

func plural(n uint64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
