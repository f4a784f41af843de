package run

import (
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"

	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/report"
)

// WriteText prints the report for a terminal or a CI log.
func WriteText(w io.Writer, r *Report) error {
	var b strings.Builder
	status := fmt.Sprintf("exit %d", r.ExitCode)
	if r.Signal != "" {
		status = fmt.Sprintf("killed by %s (%d)", r.Signal, r.ExitCode)
	}
	fmt.Fprintf(&b, "twtrace run: %s: %s after %.3fs\n", quoteArgv(r.Command), status, r.DurationS)
	t := r.Totals
	fmt.Fprintf(&b, "  %d connects, %d timewait (%d as client, %d as server), %d connect errors, %d bind errors, %d lost\n",
		t.Connects, t.Timewait, t.TimewaitClient, t.TimewaitServer, t.ConnectErrors, t.BindErrors, t.Lost)
	if r.Tier != "" {
		fmt.Fprintf(&b, "  tier: %s\n", r.Tier)
	}
	if t.TimewaitOverflow > 0 || t.TimewaitReused > 0 {
		fmt.Fprintf(&b, "  %d connections closed first with no timewait socket (tcp_max_tw_buckets full), %d connects reused a timewait socket\n",
			t.TimewaitOverflow, t.TimewaitReused)
	}
	if r.Losses.StillClosing > 0 {
		fmt.Fprintf(&b, "  %d sockets closed first had not ended when the drain time ran out (their timewait entries, if any, are not counted)\n", r.Losses.StillClosing)
	}

	writeTables(&b, r)
	for _, row := range r.Rows {
		if row.Verdict != "per-request" && len(row.Advice) == 0 {
			continue
		}
		where := fmt.Sprintf("-> %s", netip.AddrPortFrom(row.Daddr, row.Dport))
		if row.Role == "server" {
			where = fmt.Sprintf("serving port %d", row.Dport)
		}
		who := row.Label()
		if w := row.Whose(); w != "" {
			who += " " + w
		}
		fmt.Fprintf(&b, "\n%s (pid %d) %s: %s", who, row.PID, where, cmp.Or(row.Verdict, "ok"))
		if row.Reason != "" {
			fmt.Fprintf(&b, " (%s)", row.Reason)
		}
		b.WriteString("\n")
		if s := report.CallSiteLine(&row); s != "" {
			fmt.Fprintf(&b, "  %s\n", s)
		}
		for _, a := range row.Advice {
			fmt.Fprintf(&b, "  - %s\n", a)
		}
	}
	if len(r.Thresholds) > 0 {
		b.WriteString("\n")
		for _, th := range r.Thresholds {
			at := ""
			if th.Destination != "" {
				at = " (" + th.Destination + ")"
			}
			fmt.Fprintf(&b, "threshold %s: %g%s, limit %g: %s\n", th.Name, th.Value, at, th.Limit, strings.ToUpper(th.Result))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeTables writes the processes, workloads and destinations tables.
func writeTables(b *strings.Builder, r *Report) {
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	if len(r.Processes) > 0 {
		fmt.Fprintln(tw, "\nPROCESS\tPID\tCONNECTS\tTIMEWAIT\tCONNECT ERR\tBIND ERR\tVERDICT")
		for _, p := range r.Processes {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\n", esc(p.Comm), p.PID, p.Connects, p.Timewait, p.ConnectErrors, p.BindErrors, p.Verdict)
		}
	}
	if len(r.Workloads) > 0 {
		fmt.Fprintf(tw, "\nWORKLOAD (by %s)\tPROCESSES\tCONNECTS\tTIMEWAIT\tCONNECT ERR\tVERDICT\n", r.By)
		for i := range r.Workloads {
			w := &r.Workloads[i]
			name := event.Escape(w.Workload)
			if o := report.Owner(&w.Identity); o != "" && w.Workload == w.Comm {
				name += " in " + o
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\n", name, w.ProcessCount, w.Connects, w.Timewait, w.ConnectErrors, w.Verdict)
		}
	}
	if len(r.Destinations) > 0 {
		fmt.Fprintln(tw, "\nDESTINATION\tCONNECTS\t/S\tTIMEWAIT\tPEAK HELD\tUSABLE PORTS\tCEILING /S\tCONNECT ERR")
		for i := range r.Destinations {
			d := &r.Destinations[i]
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%d\t%d\t%d\t%.1f\t%d\n", d.String(), d.Connects, d.ConnectsPerS, d.Timewait, d.TimewaitPeak, d.PortsUsable, d.CeilingPerS, d.ConnectErrors)
		}
	}
	tw.Flush()
}

// quoteArgv shows argv as a shell would take it back. The text report
// and the page (after clean) both show the command this way.
func quoteArgv(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

// shellQuote leaves a word of letters, digits and @%+=:,./-_ as it is and
// puts anything else in single quotes: listing what is plain, rather than
// what is special, cannot miss a character some shell treats specially.
func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	plain := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			strings.ContainsRune("@%+=:,./-_", r)) {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// esc shows a process name with control bytes escaped, as watch does.
func esc(comm string) string {
	var c [16]byte
	copy(c[:15], comm)
	return event.EscapeComm(&c)
}
