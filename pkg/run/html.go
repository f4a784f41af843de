package run

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/twtrace/twtrace/pkg/report"
)

// WriteHTML writes r as one self-contained HTML5 page: no script, and no
// stylesheet, font or image fetched from anywhere (the style is inline,
// the charts are inline SVG). The page opens with the command, its exit,
// the PASSED/FAILED badge and the totals, then draws one chart per
// destination: the timewait sockets the command held toward it over the
// run, against the destination's port ceiling. Tables follow: thresholds,
// processes, the per-request verdicts with their advice, destinations,
// losses and errors.
//
// Every string of r goes through html/template's escaping; before that,
// bytes that are not valid UTF-8, control characters and bidirectional
// overrides (process names are whatever a process calls itself) are shown
// as \xNN or \uNNNN, so no name can break or disguise the page.
func WriteHTML(w io.Writer, r *Report) error {
	return pageTemplate.Execute(w, newPage(r))
}

// Chart geometry, in SVG user units (the viewBox): the plot is the inner
// rectangle, the margins hold the title, tick labels and axis names.
const (
	chartW      = 760
	chartH      = 300
	plotLeft    = 72
	plotRight   = chartW - 24
	plotTop     = 44
	plotBottom  = chartH - 46
	plotWidth   = plotRight - plotLeft
	plotHeight  = plotBottom - plotTop
	xTickTarget = 6
	yTickTarget = 5
	// yHeadroom keeps the highest of the series and the ceiling below the
	// plot's top edge.
	yHeadroom = 1.05
)

type page struct {
	Title      string
	Command    string
	Exit       string
	ExitBad    bool
	Start      string
	Duration   string
	Passed     bool
	Thresholds string
	Totals     []stat
	Notes      []string
	Charts     []chart
	Threshold  []thresholdRow
	Processes  []processRow
	Rows       []verdictRow
	Dests      []destRow
	Losses     []lossRow
	Errors     []string
}

type stat struct {
	Name, Value, Detail string
	Bad                 bool
}

type tick struct {
	Pos, Label string
}

type chart struct {
	ID, Dest, Title string
	Netns           uint32
	W, H            int
	// The plot rectangle.
	X, Y, PW, PH, Right, Bottom int
	TickEnd, MidY               int
	XLabelX, XLabelY, YLabelX   int
	XTicks, YTicks              []tick
	Points                      string
	Samples                     int
	// One sample: a dot at it (a polyline of one point draws nothing).
	Dot          bool
	DotX, DotY   string
	NoSamples    bool
	HasCeiling   bool
	CeilingY     string
	CeilingLabel string
	CeilingTextY string
	Caption      string
	Warning      string
}

type thresholdRow struct {
	Name, Limit, Value, Dest, Result string
	Failed                           bool
}

type processRow struct {
	PID, Comm, Connects, Timewait, ConnectErrors, BindErrors, Verdict string
	PerRequest                                                        bool
	Errors                                                            bool
}

type verdictRow struct {
	PID, Comm, Role, Dest, Connects, Timewait, ConnectErrors string
	Lifetime, Bytes, Verdict, Reason                         string
	Advice                                                   []string
	PerRequest, Errors                                       bool
}

type destRow struct {
	Dest, Netns, Connects, ConnectsPerS, Timewait, Peak string
	Ports, CeilingPerS, ConnectErrors                   string
	OverCeiling, Errors                                 bool
}

type lossRow struct {
	Name, Value, What string
	Bad               bool
}

func newPage(r *Report) *page {
	p := &page{
		Command:  commandLine(r.Command),
		Duration: fmtDuration(r.DurationS),
		Passed:   r.Passed,
		ExitBad:  r.ExitCode != 0 || r.Signal != "",
	}
	if r.Signal != "" {
		p.Exit = fmt.Sprintf("killed by %s (exit %d)", clean(r.Signal), r.ExitCode)
	} else {
		p.Exit = fmt.Sprintf("exit %d", r.ExitCode)
	}
	if !r.Start.IsZero() {
		p.Start = r.Start.Format("2006-01-02 15:04:05 MST")
	}
	verdict := "PASSED"
	if !r.Passed {
		verdict = "FAILED"
	}
	p.Title = "twtrace run: " + verdict + " — " + truncate(p.Command, 80)

	failed := 0
	for _, t := range r.Thresholds {
		if t.Result != "pass" {
			failed++
		}
		p.Threshold = append(p.Threshold, thresholdRow{
			Name:   clean(t.Name),
			Limit:  fmtNum(t.Limit),
			Value:  fmtNum(t.Value),
			Dest:   orDash(clean(t.Destination)),
			Result: orDash(strings.ToUpper(clean(t.Result))),
			Failed: t.Result != "pass",
		})
	}
	switch {
	case len(r.Thresholds) == 0:
		p.Thresholds = "no thresholds set"
	case failed == 0:
		p.Thresholds = plural(len(r.Thresholds), "threshold", "thresholds") + ", all passed"
	default:
		p.Thresholds = fmt.Sprintf("%d of %s failed", failed, plural(len(r.Thresholds), "threshold", "thresholds"))
	}

	t := &r.Totals
	p.Totals = []stat{
		{Name: "connects", Value: fmtUint(t.Connects)},
		{Name: "timewait", Value: fmtUint(t.Timewait),
			Detail: fmtUint(t.TimewaitClient) + " client · " + fmtUint(t.TimewaitServer) + " server"},
		{Name: "connect errors", Value: fmtUint(t.ConnectErrors), Detail: "EADDRNOTAVAIL", Bad: t.ConnectErrors > 0},
		{Name: "bind errors", Value: fmtUint(t.BindErrors), Bad: t.BindErrors > 0},
		{Name: "lost", Value: fmtUint(t.Lost), Detail: "not counted", Bad: t.Lost > 0},
	}
	if t.Lost > 0 {
		p.Notes = append(p.Notes, fmtUint(t.Lost)+" events could not be counted: the counts above are lower bounds (see Losses).")
	}
	if n := stillClosing(&r.Losses); n > 0 {
		p.Notes = append(p.Notes, fmtUint(n)+" of the command's connections were still closing when it exited: the timewait they enter afterwards is not in these counts.")
	}

	// Every chart shares the x axis: the run, from the start of the
	// command to its exit (or the last sample, if later).
	xmax := finiteOr(r.DurationS, 0)
	for i := range r.Destinations {
		for _, s := range r.Destinations[i].Series {
			if !math.IsNaN(s.T) && !math.IsInf(s.T, 0) && s.T > xmax {
				xmax = s.T
			}
		}
	}
	if !(xmax > 0) {
		xmax = 1
	}
	for i := range r.Destinations {
		d := &r.Destinations[i]
		p.Charts = append(p.Charts, newChart(i, d, xmax))
		p.Dests = append(p.Dests, destRow{
			Dest:          destString(d.Daddr, d.Dport),
			Netns:         strconv.FormatUint(uint64(d.Netns), 10),
			Connects:      fmtUint(d.Connects),
			ConnectsPerS:  fmtRate(d.ConnectsPerS),
			Timewait:      fmtUint(d.Timewait),
			Peak:          fmtInt(d.TimewaitPeak),
			Ports:         portsString(d.PortsUsable),
			CeilingPerS:   ceilingRate(d),
			ConnectErrors: fmtUint(d.ConnectErrors),
			OverCeiling:   overCeiling(d),
			Errors:        d.ConnectErrors > 0,
		})
	}

	for _, pr := range r.Processes {
		p.Processes = append(p.Processes, processRow{
			PID:           strconv.FormatUint(uint64(pr.PID), 10),
			Comm:          clean(pr.Comm),
			Connects:      fmtUint(pr.Connects),
			Timewait:      fmtUint(pr.Timewait),
			ConnectErrors: fmtUint(pr.ConnectErrors),
			BindErrors:    fmtUint(pr.BindErrors),
			Verdict:       orDash(clean(pr.Verdict)),
			PerRequest:    pr.Verdict == "per-request",
			Errors:        pr.ConnectErrors > 0 || pr.BindErrors > 0,
		})
	}

	for i := range r.Rows {
		p.Rows = append(p.Rows, newVerdictRow(&r.Rows[i]))
	}

	p.Losses = losses(&r.Losses)
	for _, e := range r.Errors {
		p.Errors = append(p.Errors, clean(e))
	}
	return p
}

func newVerdictRow(row *report.Row) verdictRow {
	v := verdictRow{
		PID:           strconv.FormatUint(uint64(row.PID), 10),
		Comm:          clean(row.Comm),
		Role:          orDash(clean(row.Role)),
		Dest:          destString(row.Daddr, row.Dport),
		Connects:      fmtUint(row.Connects),
		Timewait:      fmtUint(row.Timewait),
		ConnectErrors: fmtUint(row.ConnectErrors),
		Lifetime:      "—",
		Bytes:         "—",
		Verdict:       orDash(clean(row.Verdict)),
		Reason:        clean(row.Reason),
		PerRequest:    row.Verdict == "per-request",
		Errors:        row.ConnectErrors > 0,
	}
	if row.Other {
		v.PID = "—"
		v.Comm = "other (" + plural(row.Folded, "row", "rows") + ")"
		if !row.Daddr.IsValid() {
			v.Dest = "—"
		}
	}
	if row.LifetimeP50Ms != nil {
		v.Lifetime = fmtMs(*row.LifetimeP50Ms)
	}
	if row.BytesP50 != nil {
		v.Bytes = fmtUint(*row.BytesP50) + " B"
	}
	for _, a := range row.Advice {
		v.Advice = append(v.Advice, clean(a))
	}
	return v
}

// newChart lays out destination d's series: x from 0 to xmax seconds, y
// from 0 (or the lowest sample, were one negative) to a round number above
// both the highest sample and the ceiling. The polyline has one point per
// sample, always, in the order of the series; a single sample is also
// drawn as a dot, and no sample at all leaves the polyline empty and says
// so in the plot.
func newChart(i int, d *Destination, xmax float64) chart {
	dest := destString(d.Daddr, d.Dport)
	c := chart{
		ID:      "chart-" + strconv.Itoa(i),
		Dest:    dest,
		Title:   dest + " — timewait sockets held",
		Netns:   d.Netns,
		W:       chartW,
		H:       chartH,
		X:       plotLeft,
		Y:       plotTop,
		PW:      plotWidth,
		PH:      plotHeight,
		Right:   plotRight,
		Bottom:  plotBottom,
		TickEnd: plotBottom + 5,
		MidY:    (plotTop + plotBottom) / 2,
		XLabelX: (plotLeft + plotRight) / 2,
		XLabelY: chartH - 10,
		YLabelX: -(plotTop + plotBottom) / 2,
		Samples: len(d.Series),
	}

	lo, hi := 0.0, 0.0
	peak, peakT := math.Inf(-1), math.NaN()
	for _, s := range d.Series {
		h := float64(s.Held)
		if h > peak {
			peak, peakT = h, s.T
		}
		lo = math.Min(lo, h)
		hi = math.Max(hi, h)
	}
	if d.PortsUsable > 0 {
		hi = math.Max(hi, float64(d.PortsUsable))
	}
	want := hi * yHeadroom // hi >= 0
	ystep := math.Max(1, niceStep(want-lo, yTickTarget))
	ylo := math.Floor(lo/ystep) * ystep
	yhi := math.Ceil(want/ystep) * ystep
	if !(yhi > ylo) {
		yhi = ylo + ystep
	}
	yOf := func(v float64) float64 {
		return plotBottom - plotHeight*((v-ylo)/(yhi-ylo))
	}
	xOf := func(t float64) float64 {
		switch {
		case math.IsNaN(t) || t < 0:
			t = 0
		case t > xmax:
			t = xmax
		}
		return plotLeft + plotWidth*(t/xmax)
	}

	for k := 0; k <= 50; k++ {
		v := ylo + float64(k)*ystep
		if v > yhi+ystep*1e-9 {
			break
		}
		c.YTicks = append(c.YTicks, tick{Pos: coord(yOf(v)), Label: fmtTick(v, ystep)})
	}
	xstep := niceStep(xmax, xTickTarget)
	for k := 0; k <= 50; k++ {
		v := float64(k) * xstep
		if v > xmax*(1+1e-9) {
			break
		}
		c.XTicks = append(c.XTicks, tick{Pos: coord(xOf(v)), Label: fmtTick(v, xstep)})
	}

	buf := make([]byte, 0, len(d.Series)*12)
	for k, s := range d.Series {
		if k > 0 {
			buf = append(buf, ' ')
		}
		buf = strconv.AppendFloat(buf, xOf(s.T), 'f', 1, 64)
		buf = append(buf, ',')
		buf = strconv.AppendFloat(buf, yOf(float64(s.Held)), 'f', 1, 64)
	}
	c.Points = string(buf)
	switch len(d.Series) {
	case 0:
		c.NoSamples = true
	case 1:
		c.Dot = true
		c.DotX = coord(xOf(d.Series[0].T))
		c.DotY = coord(yOf(float64(d.Series[0].Held)))
	}

	if d.PortsUsable > 0 {
		y := yOf(float64(d.PortsUsable))
		c.HasCeiling = true
		c.CeilingY = coord(y)
		c.CeilingLabel = "ceiling: " + fmtInt(d.PortsUsable) + " usable ports (" + fmtRate(d.CeilingPerS) + "/s)"
		// Above the line, unless that would leave the plot.
		if y-5 < plotTop+10 {
			c.CeilingTextY = coord(y + 14)
		} else {
			c.CeilingTextY = coord(y - 5)
		}
	}

	// The caption: the peak (the report's, or the series' if higher),
	// the rate, and how they compare with the ceiling.
	var parts []string
	pk := float64(d.TimewaitPeak)
	if len(d.Series) > 0 && peak > pk {
		pk = peak
	}
	s := "peak " + fmtNum(pk) + " held"
	if d.PortsUsable > 0 {
		s += " (" + fmtPct(pk/float64(d.PortsUsable)) + " of the ceiling)"
	}
	if len(d.Series) > 0 && peak == pk && !math.IsNaN(peakT) && !math.IsInf(peakT, 0) {
		s += " at " + fmtDuration(peakT)
	}
	parts = append(parts, s)
	parts = append(parts, fmtRate(d.ConnectsPerS)+" connects/s")
	if d.PortsUsable > 0 {
		parts = append(parts, "sustainable "+fmtRate(d.CeilingPerS)+"/s")
	} else {
		parts = append(parts, "ceiling unknown")
	}
	parts = append(parts, plural(len(d.Series), "sample", "samples"))
	if d.ConnectErrors > 0 {
		parts = append(parts, fmtUint(d.ConnectErrors)+" connect errors")
	}
	c.Caption = strings.Join(parts, " · ")
	if overCeiling(d) {
		c.Warning = "connects/s above the sustainable rate: a longer run runs out of ports"
	}
	return c
}

// overCeiling: the destination was connected to faster than its ports
// sustain with every connection holding its port 60 s in timewait.
func overCeiling(d *Destination) bool {
	return d.PortsUsable > 0 && d.CeilingPerS > 0 && d.ConnectsPerS > d.CeilingPerS
}

// stillClosing: sockets closed first whose end (timewait entry or reset)
// was not seen within the drain time.
func stillClosing(l *report.Losses) uint64 { return l.StillClosing }

// lossWhat explains the losses by their JSON names.
var lossWhat = map[string]string{
	"lost_records":       "records the ring buffer had no room for",
	"untracked_sockets":  "sockets the owner table had no room for",
	"missed_runs":        "state changes the kernel skipped (missed program runs)",
	"uncounted_connects": "connect attempts the count table had no room for",
	"folded_events":      "events summed into the other row (row table full)",
	"join_refused":       "timewait entries not remembered (join full): counted unattributed",
	"unfollowed_forks":   "processes forked by the command that the followed set had no room for",
	"still_closing":      "sockets closed first whose end was not seen within the drain time",
}

// losses lists every counter of report.Losses by its JSON name, so that a
// counter added there shows here.
func losses(l *report.Losses) []lossRow {
	v := reflect.ValueOf(l).Elem()
	t := v.Type()
	var rows []lossRow
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		var n uint64
		fv := v.Field(i)
		switch {
		case fv.CanUint():
			n = fv.Uint()
		case fv.CanInt():
			if fv.Int() > 0 {
				n = uint64(fv.Int())
			}
		default:
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			name = f.Name
		}
		rows = append(rows, lossRow{
			Name:  strings.ReplaceAll(name, "_", " "),
			Value: fmtUint(n),
			What:  lossWhat[name],
			Bad:   n > 0,
		})
	}
	return rows
}

// niceStep is a round step (1, 2 or 5 times a power of ten) that cuts
// span into about n intervals; 1 for an empty or infinite span.
func niceStep(span float64, n int) float64 {
	if !(span > 0) || math.IsInf(span, 0) {
		return 1
	}
	raw := span / float64(n)
	pow := math.Pow(10, math.Floor(math.Log10(raw)))
	var f float64
	switch m := raw / pow; {
	case m <= 1:
		f = 1
	case m <= 2:
		f = 2
	case m <= 5:
		f = 5
	default:
		f = 10
	}
	step := f * pow
	if !(step > 0) || math.IsInf(step, 0) {
		return 1
	}
	return step
}

// coord formats an SVG coordinate to a tenth of a unit.
func coord(v float64) string {
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// fmtTick labels a tick at v on an axis stepping by step.
func fmtTick(v, step float64) string {
	switch {
	case math.Abs(v) >= 1e9 || step >= 1e9:
		return strconv.FormatFloat(v, 'g', 3, 64)
	case step >= 1:
		return fmtInt64(int64(math.Round(v)))
	}
	dec := int(math.Ceil(-math.Log10(step) - 1e-9))
	dec = min(max(dec, 1), 9)
	return strconv.FormatFloat(v, 'f', dec, 64)
}

func fmtUint(n uint64) string {
	s := strconv.FormatUint(n, 10)
	return group(s)
}

func fmtInt(n int) string { return fmtInt64(int64(n)) }

func fmtInt64(n int64) string {
	if n < 0 {
		return "-" + group(strconv.FormatUint(uint64(-(n+1))+1, 10))
	}
	return group(strconv.FormatInt(n, 10))
}

// group puts thousands separators into a string of digits.
func group(s string) string {
	if len(s) <= 3 {
		return s
	}
	var b strings.Builder
	head := len(s) % 3
	if head > 0 {
		b.WriteString(s[:head])
	}
	for i := head; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

// fmtNum formats a value: whole numbers with separators, others with up
// to four significant digits.
func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case math.IsInf(v, 1):
		return "∞"
	case math.IsInf(v, -1):
		return "-∞"
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return fmtInt64(int64(v))
	case math.Abs(v) >= 1000 && math.Abs(v) < 1e14:
		// Tenths, with separators.
		t := int64(math.Round(math.Abs(v) * 10))
		s := fmtInt64(t/10) + "." + strconv.FormatInt(t%10, 10)
		if v < 0 {
			s = "-" + s
		}
		return s
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// fmtRate formats a rate per second: whole above 100, one decimal above
// 10, two below.
func fmtRate(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return fmtNum(v)
	case math.Abs(v) >= 100:
		return fmtNum(math.Round(v))
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func fmtPct(f float64) string {
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return "—"
	case f >= 0.1:
		return strconv.FormatFloat(f*100, 'f', 0, 64) + "%"
	}
	return strconv.FormatFloat(f*100, 'f', 1, 64) + "%"
}

func fmtMs(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmtNum(v)
	}
	if v >= 1000 {
		return strconv.FormatFloat(v/1000, 'f', 2, 64) + " s"
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " ms"
}

func fmtDuration(s float64) string {
	switch {
	case math.IsNaN(s) || math.IsInf(s, 0) || s < 0:
		return "—"
	case s < 60:
		return strconv.FormatFloat(s, 'f', 1, 64) + " s"
	case s < 3600:
		m := math.Floor(s / 60)
		return fmt.Sprintf("%.0f min %.0f s", m, math.Floor(s-60*m))
	case s < 1e12:
		h := math.Floor(s / 3600)
		m := math.Floor((s - 3600*h) / 60)
		return fmt.Sprintf("%.0f h %.0f min", h, m)
	}
	return strconv.FormatFloat(s, 'g', 3, 64) + " s"
}

func portsString(n int) string {
	if n <= 0 {
		return "unknown"
	}
	return fmtInt(n)
}

func ceilingRate(d *Destination) string {
	if d.PortsUsable <= 0 {
		return "—"
	}
	return fmtRate(d.CeilingPerS)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmtInt(n) + " " + many
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func finiteOr(v, def float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return def
	}
	return v
}

func destString(a netip.Addr, port uint16) string {
	if !a.IsValid() {
		return "?:" + strconv.Itoa(int(port))
	}
	return netip.AddrPortFrom(a, port).String()
}

// truncate cuts s to n runes, marking the cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// clean makes s safe to show as text: bytes that are not UTF-8 become
// \xNN, control characters \xNN or \uNNNN, and so do the invisible
// characters that reorder text (bidirectional overrides and isolates), so
// that a process name cannot hide or disguise itself. HTML escaping is
// html/template's, afterwards.
func clean(s string) string {
	ok := true
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) || bidi(r) {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x80 && unicode.IsControl(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unicode.IsControl(r) || bidi(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func bidi(r rune) bool {
	return r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 ||
		r == 0x200e || r == 0x200f || r == 0x061c
}

// commandLine shows argv as a shell would take it: arguments that need it
// in single quotes.
func commandLine(argv []string) string {
	var b strings.Builder
	for i, a := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(shellQuote(clean(a)))
	}
	return b.String()
}

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

var pageTemplate = template.Must(template.New("page").Parse(pageHTML))

const pageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
:root { color-scheme: light; }
body { margin: 0; background: #f6f7f9; color: #1f2328; line-height: 1.45;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 20px 24px 48px; }
h1 { font-size: 1.15em; margin: 0 0 10px; font-weight: 600; color: #59636e; }
h2 { font-size: 1.1em; margin: 32px 0 10px; }
header { background: #fff; border: 1px solid #d8dee4; border-radius: 10px; padding: 16px 20px; }
.headline { display: flex; align-items: center; gap: 14px; flex-wrap: wrap; }
.badge { display: inline-block; padding: 4px 14px; border-radius: 999px; font-weight: 700;
  letter-spacing: .06em; color: #fff; font-size: 1.05em; }
.badge.pass { background: #1a7f37; }
.badge.fail { background: #cf222e; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .92em; }
code.cmd { font-size: 1.05em; background: #eef1f4; padding: 3px 8px; border-radius: 5px;
  word-break: break-all; white-space: pre-wrap; }
.meta { margin-top: 10px; color: #59636e; display: flex; gap: 22px; flex-wrap: wrap; }
.meta b { color: #1f2328; font-weight: 600; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr)); gap: 12px; margin-top: 16px; }
.card { background: #fff; border: 1px solid #d8dee4; border-radius: 10px; padding: 12px 16px; }
.card .v { font-size: 1.7em; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .k { color: #59636e; font-size: .85em; text-transform: uppercase; letter-spacing: .04em; }
.card .d { color: #59636e; font-size: .85em; }
.card.bad .v { color: #cf222e; }
.note { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 8px; padding: 8px 14px; margin-top: 12px; }
.charts { display: grid; grid-template-columns: 1fr; gap: 16px; }
figure { margin: 0; background: #fff; border: 1px solid #d8dee4; border-radius: 10px; padding: 8px 12px 10px; }
figcaption { color: #59636e; font-size: .88em; padding: 0 4px; }
figcaption .bad { display: block; }
svg.chart { display: block; width: 100%; max-width: 900px; height: auto; }
svg.chart text { font-size: 11px; fill: #59636e; }
svg.chart text.title { font-size: 14px; font-weight: 600; fill: #1f2328; }
svg.chart .grid { stroke: #eaeef2; stroke-width: 1; }
svg.chart .axis { stroke: #8c959f; stroke-width: 1; }
svg.chart .held { fill: none; stroke: #0969da; stroke-width: 1.6; stroke-linejoin: round; }
svg.chart .dot { fill: #0969da; }
svg.chart .ceiling { stroke: #cf222e; stroke-width: 1.4; stroke-dasharray: 6 4; }
svg.chart text.ceiling-label { fill: #cf222e; font-weight: 600; }
svg.chart text.ceiling-label.unknown { fill: #59636e; font-weight: 400; }
svg.chart text.empty { font-size: 13px; }
table { border-collapse: separate; border-spacing: 0; width: 100%; background: #fff;
  border: 1px solid #d8dee4; border-radius: 10px; overflow: hidden; font-size: .9em; }
th, td { padding: 6px 10px; border-bottom: 1px solid #eaeef2; text-align: left; vertical-align: top; }
tbody tr:last-child td { border-bottom: 0; }
th { background: #f6f8fa; font-weight: 600; color: #3d444d; white-space: nowrap; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fbfcfd; }
.bad { color: #cf222e; font-weight: 600; }
.good { color: #1a7f37; font-weight: 600; }
.tag { display: inline-block; padding: 0 8px; border-radius: 999px; font-size: .85em; font-weight: 600; white-space: nowrap; }
.tag.bad { background: #ffebe9; color: #cf222e; }
.tag.good { background: #dafbe1; color: #1a7f37; }
td ul { margin: 0; padding-left: 18px; }
.muted { color: #59636e; }
footer { margin-top: 40px; color: #8c959f; font-size: .85em; }
</style>
</head>
<body>
<main>
<header>
<h1>twtrace run</h1>
<div class="headline">
{{if .Passed}}<span class="badge pass" id="verdict">PASSED</span>{{else}}<span class="badge fail" id="verdict">FAILED</span>{{end}}
<code class="cmd" id="command">{{.Command}}</code>
</div>
<div class="meta">
<span><b{{if .ExitBad}} class="bad"{{end}}>{{.Exit}}</b></span>
<span>duration <b>{{.Duration}}</b></span>
{{if .Start}}<span>started <b>{{.Start}}</b></span>
{{end}}<span>{{.Thresholds}}</span>
</div>
</header>

<section id="totals">
<div class="cards">
{{range .Totals}}<div class="card{{if .Bad}} bad{{end}}"><div class="k">{{.Name}}</div><div class="v">{{.Value}}</div>{{if .Detail}}<div class="d">{{.Detail}}</div>{{end}}</div>
{{end}}</div>
{{range .Notes}}<p class="note">{{.}}</p>
{{end}}</section>

{{if .Threshold}}<section>
<h2>Thresholds</h2>
<table id="thresholds">
<thead><tr><th>threshold</th><th class="n">limit</th><th class="n">value</th><th>destination</th><th>result</th></tr></thead>
<tbody>
{{range .Threshold}}<tr><td class="mono">{{.Name}}</td><td class="n">{{.Limit}}</td><td class="n">{{.Value}}</td><td class="mono">{{.Dest}}</td><td>{{if .Failed}}<span class="tag bad">{{.Result}}</span>{{else}}<span class="tag good">{{.Result}}</span>{{end}}</td></tr>
{{end}}</tbody>
</table>
</section>
{{end}}
<section>
<h2>Timewait sockets held, per destination</h2>
{{if .Charts}}<div class="charts">
{{range .Charts}}<figure>
<svg class="chart" data-destination="{{.Dest}}" data-netns="{{.Netns}}" viewBox="0 0 {{.W}} {{.H}}" role="img" aria-labelledby="{{.ID}}-title">
<title id="{{.ID}}-title">{{.Title}}</title>
<text class="title" x="{{.X}}" y="22">{{.Title}}</text>
<rect class="plot" x="{{.X}}" y="{{.Y}}" width="{{.PW}}" height="{{.PH}}" fill="none" stroke="none"></rect>
{{$c := .}}{{range .YTicks}}<line class="grid" x1="{{$c.X}}" x2="{{$c.Right}}" y1="{{.Pos}}" y2="{{.Pos}}" stroke="#eaeef2"></line><text class="ytick" x="{{$c.X}}" dx="-6" y="{{.Pos}}" dy="4" text-anchor="end">{{.Label}}</text>
{{end}}{{range .XTicks}}<line class="grid" x1="{{.Pos}}" x2="{{.Pos}}" y1="{{$c.Y}}" y2="{{$c.Bottom}}" stroke="#eaeef2"></line><line class="axis" x1="{{.Pos}}" x2="{{.Pos}}" y1="{{$c.Bottom}}" y2="{{$c.TickEnd}}" stroke="#8c959f"></line><text class="xtick" x="{{.Pos}}" y="{{$c.Bottom}}" dy="18" text-anchor="middle">{{.Label}}</text>
{{end}}<line class="axis" x1="{{.X}}" x2="{{.Right}}" y1="{{.Bottom}}" y2="{{.Bottom}}" stroke="#8c959f"></line>
<line class="axis" x1="{{.X}}" x2="{{.X}}" y1="{{.Y}}" y2="{{.Bottom}}" stroke="#8c959f"></line>
<text x="{{.XLabelX}}" y="{{.XLabelY}}" text-anchor="middle">seconds since the command started</text>
<text transform="rotate(-90)" x="{{.YLabelX}}" y="16" text-anchor="middle">timewait sockets held</text>
{{if .HasCeiling}}<line class="ceiling" x1="{{.X}}" x2="{{.Right}}" y1="{{.CeilingY}}" y2="{{.CeilingY}}" stroke="#cf222e" stroke-dasharray="6 4"></line>
<text class="ceiling-label" x="{{.Right}}" y="{{.CeilingTextY}}" text-anchor="end">{{.CeilingLabel}}</text>
{{else}}<text class="ceiling-label unknown" x="{{.Right}}" y="{{.Y}}" dy="-6" text-anchor="end">ceiling unknown</text>
{{end}}<polyline class="held" data-samples="{{.Samples}}" points="{{.Points}}" fill="none" stroke="#0969da"></polyline>
{{if .Dot}}<circle class="dot" cx="{{.DotX}}" cy="{{.DotY}}" r="3.5" fill="#0969da"></circle>
{{end}}{{if .NoSamples}}<text class="empty" x="{{.XLabelX}}" y="{{.MidY}}" text-anchor="middle">no samples</text>
{{end}}</svg>
<figcaption>{{.Caption}}{{if .Warning}}<span class="bad">{{.Warning}}</span>{{end}}</figcaption>
</figure>
{{end}}</div>
{{else}}<p class="muted">The command connected to no destination.</p>
{{end}}</section>

<section>
<h2>Processes</h2>
{{if .Processes}}<table id="processes">
<thead><tr><th class="n">pid</th><th>comm</th><th class="n">connects</th><th class="n">timewait</th><th class="n">connect errors</th><th class="n">bind errors</th><th>verdict</th></tr></thead>
<tbody>
{{range .Processes}}<tr><td class="n">{{.PID}}</td><td class="mono">{{.Comm}}</td><td class="n">{{.Connects}}</td><td class="n">{{.Timewait}}</td><td class="n{{if .Errors}} bad{{end}}">{{.ConnectErrors}}</td><td class="n{{if .Errors}} bad{{end}}">{{.BindErrors}}</td><td>{{if .PerRequest}}<span class="tag bad">{{.Verdict}}</span>{{else}}{{.Verdict}}{{end}}</td></tr>
{{end}}</tbody>
</table>
{{else}}<p class="muted">No process of the command made or held a connection.</p>
{{end}}</section>

<section>
<h2>Verdicts and advice</h2>
{{if .Rows}}<table id="rows">
<thead><tr><th class="n">pid</th><th>comm</th><th>role</th><th>destination</th><th class="n">connects</th><th class="n">timewait</th><th class="n">connect errors</th><th class="n">lifetime p50</th><th class="n">bytes p50</th><th>verdict</th><th>reason and advice</th></tr></thead>
<tbody>
{{range .Rows}}<tr><td class="n">{{.PID}}</td><td class="mono">{{.Comm}}</td><td>{{.Role}}</td><td class="mono">{{.Dest}}</td><td class="n">{{.Connects}}</td><td class="n">{{.Timewait}}</td><td class="n{{if .Errors}} bad{{end}}">{{.ConnectErrors}}</td><td class="n">{{.Lifetime}}</td><td class="n">{{.Bytes}}</td><td>{{if .PerRequest}}<span class="tag bad">{{.Verdict}}</span>{{else}}{{.Verdict}}{{end}}</td><td>{{if .Reason}}<div class="muted">{{.Reason}}</div>{{end}}{{if .Advice}}<ul>{{range .Advice}}<li>{{.}}</li>{{end}}</ul>{{end}}</td></tr>
{{end}}</tbody>
</table>
{{else}}<p class="muted">No rows.</p>
{{end}}</section>

<section>
<h2>Destinations</h2>
{{if .Dests}}<table id="destinations">
<thead><tr><th>destination</th><th class="n">netns</th><th class="n">connects</th><th class="n">connects/s</th><th class="n">timewait</th><th class="n">peak held</th><th class="n">usable ports</th><th class="n">ceiling/s</th><th class="n">connect errors</th></tr></thead>
<tbody>
{{range .Dests}}<tr><td class="mono">{{.Dest}}</td><td class="n">{{.Netns}}</td><td class="n">{{.Connects}}</td><td class="n{{if .OverCeiling}} bad{{end}}">{{.ConnectsPerS}}</td><td class="n">{{.Timewait}}</td><td class="n">{{.Peak}}</td><td class="n">{{.Ports}}</td><td class="n">{{.CeilingPerS}}</td><td class="n{{if .Errors}} bad{{end}}">{{.ConnectErrors}}</td></tr>
{{end}}</tbody>
</table>
{{else}}<p class="muted">No destinations.</p>
{{end}}</section>

<section>
<h2>Losses</h2>
<table id="losses">
<thead><tr><th>loss</th><th class="n">count</th><th>what</th></tr></thead>
<tbody>
{{range .Losses}}<tr><td>{{.Name}}</td><td class="n{{if .Bad}} bad{{end}}">{{.Value}}</td><td class="muted">{{.What}}</td></tr>
{{end}}</tbody>
</table>
</section>

{{if .Errors}}<section>
<h2>Errors</h2>
<ul id="errors">
{{range .Errors}}<li class="bad">{{.}}</li>
{{end}}</ul>
</section>
{{end}}
<footer>Made by twtrace run. This page is self-contained: it loads nothing.</footer>
</main>
</body>
</html>
`
