package run

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"

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
	By         string
	Workloads  []workloadRow
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
	// ConnectErrorsBad and BindErrorsBad flag each cell on its own.
	ConnectErrorsBad, BindErrorsBad bool
}

type workloadRow struct {
	Name, Processes, Connects, Timewait, ConnectErrors, Verdict string
	PerRequest, ConnectErrorsBad                                bool
}

// newWorkloadRow is w as the page shows it: named with what owns it.
func newWorkloadRow(w *Workload) workloadRow {
	name := w.Workload
	if o := report.Owner(&w.Identity); o != "" && w.Workload == w.Comm {
		name += " in " + o
	}
	return workloadRow{
		Name:             clean(name),
		Processes:        strconv.Itoa(w.ProcessCount),
		Connects:         fmtUint(w.Connects),
		Timewait:         fmtUint(w.Timewait),
		ConnectErrors:    fmtUint(w.ConnectErrors),
		Verdict:          orDash(clean(w.Verdict)),
		PerRequest:       w.Verdict == "per-request",
		ConnectErrorsBad: w.ConnectErrors > 0,
	}
}

type verdictRow struct {
	PID, Comm, Role, Dest, Connects, Timewait, ConnectErrors string
	Lifetime, Bytes, Verdict, Reason                         string
	CallSite                                                 string // report.CallSiteLine
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
	p.By = clean(r.By)
	for i := range r.Workloads {
		p.Workloads = append(p.Workloads, newWorkloadRow(&r.Workloads[i]))
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
		PID:              strconv.FormatUint(uint64(pr.PID), 10),
		Comm:             clean(pr.Comm),
		Connects:         fmtUint(pr.Connects),
		Timewait:         fmtUint(pr.Timewait),
		ConnectErrors:    fmtUint(pr.ConnectErrors),
		BindErrors:       fmtUint(pr.BindErrors),
		Verdict:          orDash(clean(pr.Verdict)),
		PerRequest:       pr.Verdict == "per-request",
		ConnectErrorsBad: pr.ConnectErrors > 0,
		BindErrorsBad:    pr.BindErrors > 0,
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
			CallSite:      clean(report.CallSiteLine(row)),
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

// lossWhat explains the losses by their JSON names.
var lossWhat = map[string]string{
	"lost_records":          "records the ring buffer had no room for",
	"untracked_sockets":     "sockets the owner table had no room for",
	"missed_runs":           "state changes the kernel skipped (missed program runs)",
	"uncounted_connects":    "connect attempts the count table had no room for",
	"folded_events":         "events summed into the other row (row table full)",
	"join_refused":          "timewait entries not remembered (join full): counted unattributed",
	"unfollowed_forks":      "processes forked by the command that the followed set had no room for",
	"still_closing":         "sockets closed first whose end was not seen within the drain time",
	"lost_stacks":           "connect() stacks there was no room to keep: those connections have no call site",
	"unresolved_stacks":     "stacks kept but not symbolized (the process was gone): call site unknown",
	"unprobed_http_callers": "Go programs using net/http whose dials' callers could not be probed: call site is net/http's",
	"uncounted_processes":   "processes a row had no room to remember (left out of its process count)",
	"unresolved_owners":     "rows whose cgroup could not be resolved (no container, pod or unit)",
	"cri_failures":          "listings of the CRI that failed: pod names fell back to ids meanwhile",
	"unknown_parents":       "processes whose parent the kernel could not tell (folded apart from their siblings)",
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
