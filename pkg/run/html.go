package run

import (
	_ "embed"
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

// pageSource is the page: markup, style and the SVG of a chart, filled
// from a page value. It is parsed once, when the program starts, so a
// mistake in it stops every test rather than one run's report.
//
//go:embed page.html.tmpl
var pageSource string

var pageTemplate = template.Must(template.New("page").Parse(pageSource))

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

// page is what the template shows: every value already cleaned and
// formatted, so the template only places values and html/template
// escapes each for where it lands (text, attribute, SVG).
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
		Exit:     exitString(r),
		ExitBad:  r.ExitCode != 0 || r.Signal != "",
		Duration: fmtDuration(r.DurationS),
		Passed:   r.Passed,
	}
	if !r.Start.IsZero() {
		p.Start = r.Start.Format("2006-01-02 15:04:05 MST")
	}
	verdict := "PASSED"
	if !r.Passed {
		verdict = "FAILED"
	}
	p.Title = "twtrace run: " + verdict + " — " + truncate(p.Command, 80)
	p.Threshold, p.Thresholds = thresholdRows(r.Thresholds)
	p.Totals = totalCards(&r.Totals)
	p.Notes = notes(r)

	// Every chart shares the x axis: the run.
	xmax := runSpan(r)
	for i := range r.Destinations {
		d := &r.Destinations[i]
		p.Charts = append(p.Charts, newChart(i, d, xmax))
		p.Dests = append(p.Dests, newDestRow(d))
	}
	for i := range r.Processes {
		p.Processes = append(p.Processes, newProcessRow(&r.Processes[i]))
	}
	p.Rows = verdictRows(r)
	p.Losses = losses(r)
	for _, e := range r.Errors {
		p.Errors = append(p.Errors, clean(e))
	}
	return p
}

func exitString(r *Report) string {
	if r.Signal != "" {
		return fmt.Sprintf("killed by %s (exit %d)", clean(r.Signal), r.ExitCode)
	}
	return fmt.Sprintf("exit %d", r.ExitCode)
}

// thresholdRows returns a row per threshold and a line saying how many
// failed.
func thresholdRows(ths []Threshold) ([]thresholdRow, string) {
	var rows []thresholdRow
	failed := 0
	for _, t := range ths {
		if t.Result != "pass" {
			failed++
		}
		rows = append(rows, thresholdRow{
			Name:   clean(t.Name),
			Limit:  fmtNum(t.Limit),
			Value:  fmtNum(t.Value),
			Dest:   orDash(clean(t.Destination)),
			Result: orDash(strings.ToUpper(clean(t.Result))),
			Failed: t.Result != "pass",
		})
	}
	n := plural(len(ths), "threshold", "thresholds")
	switch {
	case len(ths) == 0:
		return rows, "no thresholds set"
	case failed == 0:
		return rows, n + ", all passed"
	}
	return rows, fmt.Sprintf("%d of %s failed", failed, n)
}

func totalCards(t *Totals) []stat {
	return []stat{
		{Name: "connects", Value: fmtUint(t.Connects)},
		{Name: "timewait", Value: fmtUint(t.Timewait),
			Detail: fmtUint(t.TimewaitClient) + " client · " + fmtUint(t.TimewaitServer) + " server"},
		{Name: "connect errors", Value: fmtUint(t.ConnectErrors), Detail: "EADDRNOTAVAIL", Bad: t.ConnectErrors > 0},
		{Name: "bind errors", Value: fmtUint(t.BindErrors), Bad: t.BindErrors > 0},
		{Name: "lost", Value: fmtUint(t.Lost), Detail: "not counted", Bad: t.Lost > 0},
	}
}

// notes say when the totals fall short of what happened.
func notes(r *Report) []string {
	var ns []string
	if n := r.Totals.Lost; n > 0 {
		ns = append(ns, fmtUint(n)+" events could not be counted: the counts above are lower bounds (see Losses).")
	}
	// Sockets closed first whose end (timewait entry or reset) was not
	// seen within the drain time.
	if n := r.Losses.StillClosing; n > 0 {
		ns = append(ns, fmtUint(n)+" of the command's connections were still closing when it exited: the timewait they enter afterwards is not in these counts.")
	}
	return ns
}

// runSpan is the charts' x axis, in seconds: from the start of the
// command to its exit, or to the last sample if later; 1 when neither
// gives a positive span.
func runSpan(r *Report) float64 {
	xmax := finiteOr(r.DurationS, 0)
	for i := range r.Destinations {
		for _, s := range r.Destinations[i].Series {
			if !math.IsNaN(s.T) && !math.IsInf(s.T, 0) && s.T > xmax {
				xmax = s.T
			}
		}
	}
	if !(xmax > 0) {
		return 1
	}
	return xmax
}

func newDestRow(d *Destination) destRow {
	return destRow{
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
	}
}

func newProcessRow(pr *Process) processRow {
	return processRow{
		PID:           strconv.FormatUint(uint64(pr.PID), 10),
		Comm:          clean(pr.Comm),
		Connects:      fmtUint(pr.Connects),
		Timewait:      fmtUint(pr.Timewait),
		ConnectErrors: fmtUint(pr.ConnectErrors),
		BindErrors:    fmtUint(pr.BindErrors),
		Verdict:       orDash(clean(pr.Verdict)),
		PerRequest:    pr.Verdict == "per-request",
		Errors:        pr.ConnectErrors > 0 || pr.BindErrors > 0,
	}
}

// verdictRows shows r.Rows. It reaches the rows through r, not by their
// type, which belongs to the engine that makes them.
func verdictRows(r *Report) []verdictRow {
	var vs []verdictRow
	for i := range r.Rows {
		row := &r.Rows[i]
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
		vs = append(vs, v)
	}
	return vs
}

// newChart lays out destination d's series: x from 0 to xmax seconds, y
// from 0 (or the lowest sample, were one negative) to a round number above
// both the highest sample and the ceiling. The polyline has one point per
// sample, always, in the order of the series; a single sample is also
// drawn as a dot, and no sample at all leaves the polyline empty and says
// so in the plot.
func newChart(i int, d *Destination, xmax float64) chart {
	dest := destString(d.Daddr, d.Dport)
	c := chartFrame()
	c.ID = "chart-" + strconv.Itoa(i)
	c.Dest = dest
	c.Title = dest + " — timewait sockets held"
	c.Netns = d.Netns
	c.Samples = len(d.Series)

	sc := newScale(d, xmax)
	c.YTicks = axisTicks(sc.ylo, sc.ystep, sc.yhi+sc.ystep*1e-9, sc.y)
	xstep := niceStep(xmax, xTickTarget)
	c.XTicks = axisTicks(0, xstep, xmax*(1+1e-9), sc.x)
	c.Points = polyline(d.Series, sc)
	switch len(d.Series) {
	case 0:
		c.NoSamples = true
	case 1:
		c.Dot = true
		c.DotX = coord(sc.x(d.Series[0].T))
		c.DotY = coord(sc.y(float64(d.Series[0].Held)))
	}
	if d.PortsUsable > 0 {
		c.HasCeiling = true
		c.CeilingY, c.CeilingTextY = ceilingAt(sc.y(float64(d.PortsUsable)))
		c.CeilingLabel = "ceiling: " + fmtInt(d.PortsUsable) + " usable ports (" + fmtRate(d.CeilingPerS) + "/s)"
	}
	c.Caption = caption(d)
	if overCeiling(d) {
		c.Warning = "connects/s above the sustainable rate: a longer run runs out of ports"
	}
	return c
}

// chartFrame is what every chart shares: its size, the plot rectangle and
// where the axis names go.
func chartFrame() chart {
	return chart{
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
	}
}

// scale maps seconds and sockets held into the plot: x from 0 to xmax,
// y from ylo to yhi, with y ticks ystep apart.
type scale struct {
	xmax, ylo, yhi, ystep float64
}

func newScale(d *Destination, xmax float64) scale {
	lo, hi := 0.0, 0.0
	for _, s := range d.Series {
		lo = math.Min(lo, float64(s.Held))
		hi = math.Max(hi, float64(s.Held))
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
	return scale{xmax: xmax, ylo: ylo, yhi: yhi, ystep: ystep}
}

func (s scale) y(v float64) float64 {
	return plotBottom - plotHeight*((v-s.ylo)/(s.yhi-s.ylo))
}

// x puts times outside the run (and NaN) at its edges.
func (s scale) x(t float64) float64 {
	switch {
	case math.IsNaN(t) || t < 0:
		t = 0
	case t > s.xmax:
		t = s.xmax
	}
	return plotLeft + plotWidth*(t/s.xmax)
}

// axisTicks labels first, first+step, … up to limit (at most 51 ticks),
// each placed by pos.
func axisTicks(first, step, limit float64, pos func(float64) float64) []tick {
	var ts []tick
	for k := 0; k <= 50; k++ {
		v := first + float64(k)*step
		if v > limit {
			break
		}
		ts = append(ts, tick{Pos: coord(pos(v)), Label: fmtTick(v, step)})
	}
	return ts
}

// polyline is the points attribute of the series: "x,y" pairs apart by
// spaces, one per sample. Appending numbers keeps a long series cheap.
func polyline(series []Sample, sc scale) string {
	buf := make([]byte, 0, len(series)*12)
	for k, s := range series {
		if k > 0 {
			buf = append(buf, ' ')
		}
		buf = strconv.AppendFloat(buf, sc.x(s.T), 'f', 1, 64)
		buf = append(buf, ',')
		buf = strconv.AppendFloat(buf, sc.y(float64(s.Held)), 'f', 1, 64)
	}
	return string(buf)
}

// ceilingAt places the ceiling line at y and its label above the line,
// unless that would leave the plot.
func ceilingAt(y float64) (line, label string) {
	if y-5 < plotTop+10 {
		return coord(y), coord(y + 14)
	}
	return coord(y), coord(y - 5)
}

// caption: the peak (the report's, or the series' if higher), the rate,
// and how they compare with the ceiling.
func caption(d *Destination) string {
	peak, peakT := seriesPeak(d.Series)
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
	parts := []string{s, fmtRate(d.ConnectsPerS) + " connects/s"}
	if d.PortsUsable > 0 {
		parts = append(parts, "sustainable "+fmtRate(d.CeilingPerS)+"/s")
	} else {
		parts = append(parts, "ceiling unknown")
	}
	parts = append(parts, plural(len(d.Series), "sample", "samples"))
	if d.ConnectErrors > 0 {
		parts = append(parts, fmtUint(d.ConnectErrors)+" connect errors")
	}
	return strings.Join(parts, " · ")
}

// seriesPeak is the most sockets held at one sample and the time of the
// first sample that held them; -Inf and NaN for no sample.
func seriesPeak(series []Sample) (peak, at float64) {
	peak, at = math.Inf(-1), math.NaN()
	for _, s := range series {
		if h := float64(s.Held); h > peak {
			peak, at = h, s.T
		}
	}
	return peak, at
}

// overCeiling: the destination was connected to faster than its ports
// sustain with every connection holding its port 60 s in timewait.
func overCeiling(d *Destination) bool {
	return d.PortsUsable > 0 && d.CeilingPerS > 0 && d.ConnectsPerS > d.CeilingPerS
}

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

// losses lists every counter of r.Losses by its JSON name, so that a
// counter added there shows here.
func losses(r *Report) []lossRow {
	v := reflect.ValueOf(&r.Losses).Elem()
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

// commandLine is the command as the page shows it: each argument
// cleaned, then quoted as the text report quotes it.
func commandLine(argv []string) string {
	shown := make([]string, len(argv))
	for i, a := range argv {
		shown[i] = clean(a)
	}
	return quoteArgv(shown)
}
