package top

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twtrace/twtrace/pkg/report"
)

// maxAdvice is how many advice lines a row gets on screen.
const maxAdvice = 2

// Keys is the keyboard help shown on the first line.
const Keys = "keys: t c n e sort, q quits"

// Render lays a frame out for a terminal of width columns and height
// lines: a header, then one block per destination (its headroom and
// forecast), most urgent first, holding the rows of the processes toward
// it, each flagged row followed by its advice. Lines are cut to width;
// blocks that do not fit in height are left out and counted on the last
// line. Process names are escaped: a process chooses its own.
func Render(f *Frame, width, height int) []string {
	sc := &screen{width: max(width, 40)}
	height = max(height, 5)
	sc.header(f)
	order, other := blocksOf(f)
	sc.left = height - len(sc.lines) - 1
	shown := 0
	for _, b := range order {
		if !sc.block(b) {
			break
		}
		shown++
	}
	hidden := len(order) - shown
	if other != nil || hidden > 0 {
		n := hidden
		if other != nil {
			n += other.Folded
		}
		tail := fmt.Sprintf("… %d more destinations/processes not shown", n)
		if other != nil {
			tail += fmt.Sprintf(" (%s conn/s, %s tw/s)", rate(other.ConnectsPerS), rate(other.TimewaitPerS))
		}
		sc.lines = append(sc.lines, cut(tail, sc.width))
	}
	if len(order) == 0 {
		sc.lines = append(sc.lines, "", "no TCP connection attempts or timewait entries seen yet")
	}
	for _, e := range f.Errors {
		sc.lines = append(sc.lines, cut("error: "+e, sc.width))
	}
	if len(sc.lines) > height {
		sc.lines = sc.lines[:height]
	}
	return sc.lines
}

// screen is a frame being laid out: its lines so far, and how many more
// the blocks may take (left).
type screen struct {
	lines []string
	width int
	left  int
}

func (sc *screen) add(format string, a ...any) {
	sc.lines = append(sc.lines, cut(fmt.Sprintf(format, a...), sc.width))
}

// header is the first two lines: the time and keys, then the namespaces'
// timewait sockets and whatever twtrace lost.
func (sc *screen) header(f *Frame) {
	sc.add("twtrace top  %s  every %s  sort: %s  %s", f.Time.Format("15:04:05"), (time.Duration(f.IntervalS * 1e9)).Round(time.Millisecond), f.Sort, Keys)
	var tw, twps float64
	for i := range f.Namespaces {
		n := &f.Namespaces[i]
		tw += float64(n.Timewait + n.FinWait2)
		if n.TWPerS != nil {
			twps += *n.TWPerS
		}
	}
	loss := ""
	if l := f.Losses; l.Records+l.Untracked+l.Missed+l.UncountedConnects > 0 {
		loss = fmt.Sprintf("  LOST: %d records, %d sockets untracked, %d runs missed, %d connects uncounted",
			l.Records, l.Untracked, l.Missed, l.UncountedConnects)
	}
	read := ""
	if age := f.Time.Sub(f.InventoryTime); !f.InventoryTime.IsZero() && age > time.Duration(f.IntervalS*1e9)/2 {
		// The sockets were not read this frame (--inventory-cpu).
		read = fmt.Sprintf(" as read %s ago", age.Round(100*time.Millisecond))
	}
	sc.add("%d %s, %.0f timewait sockets%s (%s new/s)%s", len(f.Namespaces), plural(len(f.Namespaces), "namespace", "namespaces"), tw, read, rate(twps), loss)
}

// block is one destination's head lines and the rows toward it.
type block struct {
	head []string
	rows []*report.Row
}

// blockKey is a destination as rows name it: (netns, daddr, dport), every
// saddr; server blocks hold the connections accepted on a port.
type blockKey struct {
	netns  uint32
	addr   netip.Addr
	port   uint16
	server bool
}

// blocksOf groups the frame's rows by destination, in the order of their
// first row, and returns the Other row apart.
func blocksOf(f *Frame) (order []*block, other *report.Row) {
	dest := map[blockKey]*report.LiveDestination{}
	for i := range f.Destinations {
		d := &f.Destinations[i]
		k := blockKey{d.Netns, d.Daddr, d.Dport, false}
		if cur, ok := dest[k]; !ok || d.HeadroomPct < cur.HeadroomPct {
			dest[k] = d
		}
	}
	blocks := map[blockKey]*block{}
	for i := range f.Rows {
		r := &f.Rows[i]
		if r.Other {
			other = r
			continue
		}
		k := blockKey{r.Netns, r.Daddr, r.Dport, r.Role == "server"}
		b := blocks[k]
		if b == nil {
			b = &block{head: blockHead(k, r, dest[k])}
			blocks[k] = b
			order = append(order, b)
		}
		b.rows = append(b.rows, r)
	}
	return order, other
}

// blockHead describes a destination: its headroom and forecast (d, when
// a socket toward it exists now), or the port connections were accepted on.
func blockHead(k blockKey, r *report.Row, d *report.LiveDestination) []string {
	ap := hostPort(r.Daddr, r.Dport)
	switch {
	case k.server:
		return []string{fmt.Sprintf("accepted on port %d from %s  netns %d (no ephemeral port held)", r.Dport, r.Daddr, r.Netns)}
	case d == nil:
		return []string{fmt.Sprintf("→ %s  netns %d  (no socket toward it now)", ap, r.Netns)}
	}
	ex := "not heading for exhaustion"
	if d.ExhaustionInS != nil {
		ex = "EXHAUSTED IN " + seconds(*d.ExhaustionInS)
		if *d.ExhaustionInS == 0 {
			ex = "EXHAUSTED NOW"
		}
	}
	reuse := ""
	if d.TwReuse {
		reuse = fmt.Sprintf(" +%d reusable", d.PortsReusable)
	}
	return []string{
		fmt.Sprintf("→ %s  netns %d  %d timewait, %d unattributed", ap, r.Netns, d.Timewait+d.FinWait2, d.Unattributed),
		fmt.Sprintf("  ports free %d/%d (%.0f%%)%s  ceiling %s/s  %s", d.PortsAvailable, d.PortsUsable, d.HeadroomPct, reuse, rate(d.CeilingPerS), ex),
	}
}

var colHead = fmt.Sprintf("  %7s %-14s %6s %6s %6s %5s %6s %6s  %s", "PID", "WORKLOAD", "CONN/s", "TW/s", "TW-NOW", "ERR", "LIFE", "BYTES", "VERDICT")

// block lays b out if its head and rows fit in what is left, and says
// whether they did; notes and advice take what remains after them.
func (sc *screen) block(b *block) bool {
	need := len(b.head) + 1 + len(b.rows)
	if need > sc.left {
		return false
	}
	sc.lines = append(sc.lines, "")
	for _, h := range b.head {
		sc.add("%s", h)
	}
	sc.add("%s", colHead)
	sc.left -= need + 1
	for _, r := range b.rows {
		sc.row(r)
	}
	return true
}

// row is one process's line, its precise-tier note and its advice.
func (sc *screen) row(r *report.Row) {
	sc.add("  %7d %-14s %6s %6s %6d %5d %6s %6s  %s", r.PID, padComm(r.Label(), 14),
		rate(r.ConnectsPerS), rate(r.TimewaitPerS), r.TimewaitNow, r.ConnectErrors,
		lifetime(r.LifetimeP50Ms), size(r.BytesP50), strings.ToUpper(r.Verdict))
	if w := r.Whose(); w != "" && sc.left > 1 {
		sc.add("          %s", cut(w, sc.width-10))
		sc.left--
	}
	if n := preciseNote(r); n != "" && sc.left > 1 {
		sc.add("      %s", cut(n, sc.width-6))
		sc.left--
	}
	if s := report.CallSiteLine(r); s != "" && sc.left > 1 {
		sc.add("      %s", cut(s, sc.width-6))
		sc.left--
	}
	// Advice: the most pressing first, at most maxAdvice items a row,
	// wrapped (all of it is in -o json).
	for i, a := range r.Advice {
		if i == maxAdvice {
			if sc.left > 1 {
				sc.add("      … %d more: twtrace top -o json", len(r.Advice)-maxAdvice)
				sc.left--
			}
			return
		}
		for j, l := range wrap(a, sc.width-8) {
			if sc.left <= 1 {
				break
			}
			mark := "    - "
			if j > 0 {
				mark = "      "
			}
			sc.add("%s%s", mark, l)
			sc.left--
		}
	}
}

func hostPort(a netip.Addr, port uint16) string {
	return netip.AddrPortFrom(a, port).String()
}

// cut shortens s to width runes.
func cut(s string, width int) string {
	if utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return string(r[:width-1]) + "…"
}

func padComm(s string, w int) string {
	if utf8.RuneCountInString(s) > w {
		r := []rune(s)
		return string(r[:w-1]) + "~"
	}
	return s
}

func rate(x float64) string {
	switch {
	case x >= 10000:
		return fmt.Sprintf("%.0fk", x/1000)
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	}
	return fmt.Sprintf("%.1f", x)
}

func lifetime(ms *float64) string {
	if ms == nil {
		return "-"
	}
	d := time.Duration(*ms * 1e6)
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return fmt.Sprintf("%.0fm", d.Minutes())
}

func size(b *uint64) string {
	if b == nil {
		return "-"
	}
	v := float64(*b)
	for _, u := range []string{"B", "K", "M", "G"} {
		if v < 1000 {
			if u == "B" {
				return fmt.Sprintf("%.0f%s", v, u)
			}
			return fmt.Sprintf("%.1f%s", v, u)
		}
		v /= 1024
	}
	return fmt.Sprintf("%.1fT", v)
}

func seconds(s float64) string {
	if s < 100 {
		return fmt.Sprintf("%.0fs", s)
	}
	return (time.Duration(s) * time.Second).String()
}

// wrap breaks s into lines of at most width runes, at spaces.
func wrap(s string, width int) []string {
	var out []string
	for utf8.RuneCountInString(s) > width {
		r := []rune(s)
		cutAt := width
		for i := width; i > width/2; i-- {
			if r[i] == ' ' {
				cutAt = i
				break
			}
		}
		out = append(out, strings.TrimRight(string(r[:cutAt]), " "))
		s = strings.TrimLeft(string(r[cutAt:]), " ")
	}
	return append(out, s)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// preciseNote is what the precise tier adds to a row: connections closed
// with no timewait socket and connects that took one over; "" when none.
func preciseNote(r *report.Row) string {
	var parts []string
	if r.TimewaitOverflow > 0 {
		parts = append(parts, fmt.Sprintf("%d closed with no timewait socket (tcp_max_tw_buckets full)", r.TimewaitOverflow))
	}
	if r.TimewaitReused > 0 {
		parts = append(parts, fmt.Sprintf("%d connects reused a timewait socket (tcp_tw_reuse)", r.TimewaitReused))
	}
	if parts == nil {
		return ""
	}
	return "! " + strings.Join(parts, "; ")
}
