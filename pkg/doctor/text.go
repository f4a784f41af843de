package doctor

import (
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/twtrace/twtrace/pkg/report"
)

// WriteText prints r for a person.
func WriteText(w io.Writer, r *Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "twtrace doctor: Linux %s\n\n", r.Kernel)

	verdict := "yes"
	if !r.CanRun {
		verdict = "no"
	}
	fmt.Fprintf(&b, "Can twtrace run here? %s (tier: %s)\n", verdict, r.Tier)
	width := 0
	for _, c := range r.Checks {
		width = max(width, len(checkLabels[c.Name]))
	}
	for _, c := range r.Checks {
		status := c.Status
		if c.Status == StatusFail && c.Required {
			status = "FAIL"
		}
		fmt.Fprintf(&b, "  %-7s %-*s  %s\n", status, width, checkLabels[c.Name], c.Detail)
	}
	fmt.Fprintf(&b, "  precise tier: %s\n", r.PreciseTier)
	if len(r.PreciseHooks) > 0 {
		fmt.Fprintf(&b, "  precise hooks: %s\n", strings.Join(r.PreciseHooks, ", "))
	}

	writeNamespace(&b, &r.Namespace)

	b.WriteString("\nWarnings")
	if len(r.Warnings) == 0 {
		b.WriteString(": none\n")
	} else {
		b.WriteByte('\n')
		for _, wr := range r.Warnings {
			fmt.Fprintf(&b, "  ! %s\n", wr.Message)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeNamespace(b *strings.Builder, n *Namespace) {
	who := ""
	switch {
	case n.Name != "" && n.PID != 0:
		who = fmt.Sprintf(" (%s, pid %d %s)", n.Name, n.PID, n.Comm)
	case n.Name != "":
		who = fmt.Sprintf(" (%s)", n.Name)
	case n.PID != 0:
		who = fmt.Sprintf(" (pid %d %s)", n.PID, n.Comm)
	}
	if n.Owner != nil {
		who = " (" + report.Owner(n.Owner) + "," + strings.TrimPrefix(who, " (")
	}
	fmt.Fprintf(b, "\nNetwork namespace %d%s\n", n.Netns, who)
	if n.Settings == nil {
		fmt.Fprintf(b, "  sysctls not read: %s\n", n.Error)
		return
	}
	if n.NoScan != "" {
		fmt.Fprintf(b, "  sysctls and counters from /proc; sockets not read: %s\n", n.NoScan)
	}
	for _, s := range n.Sysctls {
		fmt.Fprintf(b, "  %s = %s\n      %s\n", s.Name, s.Value, s.Meaning)
	}

	b.WriteString("\nCeiling per destination\n")
	fmt.Fprintf(b, "  %s\n", n.Ceiling.Explanation)

	if n.Timewait != nil {
		fmt.Fprintf(b, "\nTimewait now\n  %s\n", n.Timewait.Explanation)
		if len(n.LeastHeadroom) == 0 {
			b.WriteString("  no outgoing connections\n")
		} else {
			fmt.Fprintf(b, "  least headroom (%d of %d destinations):\n", len(n.LeastHeadroom), n.Destinations)
			fmt.Fprintf(b, "  %-15s %-21s %7s %5s %5s %13s %6s\n", "SOURCE", "DESTINATION", "TW", "FW2", "EST", "AVAIL/USABLE", "HEAD")
			for _, d := range n.LeastHeadroom {
				avail := fmt.Sprintf("%d/%d", d.PortsAvailable, d.PortsUsable)
				if d.TwReuse {
					avail += fmt.Sprintf(" (+%d reusable)", d.PortsReusable)
				}
				fmt.Fprintf(b, "  %-15s %-21s %7d %5d %5d %13s %5s%%\n", d.Saddr, hostPort(d.Daddr, d.Dport),
					d.Timewait, d.FinWait2, d.Established, avail, pct(d.HeadroomPct))
			}
		}
	}

	b.WriteString("\nTcpExt counters (since the namespace was made)\n")
	width := 0
	for _, c := range n.Counters {
		width = max(width, len(c.Name))
	}
	for _, c := range n.Counters {
		fmt.Fprintf(b, "  %-*s %12s  %s\n", width, c.Name, thousands64(c.Value), c.Meaning)
	}
}

func hostPort(a netip.Addr, port uint16) string {
	return netip.AddrPortFrom(a, port).String()
}
