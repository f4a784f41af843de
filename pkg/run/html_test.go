package run

import (
	"bytes"
	"github.com/twtrace/twtrace/pkg/workload"
	"io"
	"math"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/net/html"

	"github.com/twtrace/twtrace/pkg/aggregate"
	"github.com/twtrace/twtrace/pkg/report"
)

const hostileComm = "<script>x</script>\x01"

func ptr[T any](v T) *T { return &v }

// manySamples is a series of n samples 0.1 s apart, rising to about max.
func manySamples(n, max int) []Sample {
	s := make([]Sample, n)
	for i := range s {
		s[i] = Sample{T: float64(i) * 0.1, Held: max * i / n}
	}
	return s
}

// testReport has three destinations: many samples under a known ceiling,
// one sample with the ceiling unknown (IPv6), no sample under a known
// ceiling.
func testReport() *Report {
	return &Report{
		Command:   []string{"curl", "-H", `X-A: "q" 'single'`, "http://example.com/?a=1&b=<2>"},
		ExitCode:  137,
		Signal:    "SIGKILL",
		DurationS: 500,
		Totals: Totals{Counts: aggregate.Counts{Connects: 130000, Timewait: 120000, ConnectErrors: 12, BindErrors: 1},
			TimewaitClient: 119000, TimewaitServer: 1000, Lost: 3},
		Destinations: []Destination{
			{Netns: 4026531840, Daddr: netip.MustParseAddr("10.0.0.7"), Dport: 8080,
				Connects: 120000, Timewait: 110000, ConnectErrors: 12, ConnectsPerS: 240,
				PortsUsable: 28231, CeilingPerS: 470.5, TimewaitPeak: 14000,
				Series: manySamples(5000, 14000)},
			{Netns: 4026531840, Daddr: netip.MustParseAddr("2001:db8::1"), Dport: 443,
				Connects: 10, Timewait: 3, ConnectsPerS: 0.02, TimewaitPeak: 3,
				Series: []Sample{{T: 1.5, Held: 3}}},
			{Netns: 4026532000, Daddr: netip.MustParseAddr("192.0.2.1"), Dport: 53,
				Connects: 1, PortsUsable: 1000, CeilingPerS: 16.7},
		},
		Processes: []Process{
			{PID: 100, Comm: "curl", Counts: aggregate.Counts{Connects: 120000, Timewait: 110000, ConnectErrors: 12}, Verdict: "per-request"},
			{PID: 101, Comm: hostileComm, Counts: aggregate.Counts{Connects: 10, Timewait: 3, BindErrors: 1}},
			{PID: 102, Comm: "bad\xff\xfeutf8", Counts: aggregate.Counts{Connects: 1}},
		},
		By: "program",
		Workloads: []Workload{
			{Workload: "curl", Comm: "curl", PID: 100, ProcessCount: 300, Counts: aggregate.Counts{Connects: 120000, Timewait: 110000, ConnectErrors: 12},
				Verdict: "per-request", Identity: workload.Identity{ContainerID: "3f2a1b9c0d1e2f3a", ContainerRuntime: "docker", Pod: hostileComm}},
		},
		Rows: []report.Row{
			{PID: 100, Comm: "curl", Daddr: netip.MustParseAddr("10.0.0.7"), Dport: 8080, Role: "client",
				Counts:        aggregate.Counts{Connects: 120000, Timewait: 110000, ConnectErrors: 12},
				LifetimeP50Ms: ptr(3.2), BytesP50: ptr(uint64(512)), Verdict: "per-request",
				Reason: "240 conn/s, median 3 ms, 512 B", Advice: []string{"Reuse connections.", "<b>not bold</b>"},
				CallSite: "fetch_one (/src/fetch.c:42)", ClientLibrary: "libcurl"},
			{PID: 101, Comm: hostileComm, Daddr: netip.MustParseAddr("2001:db8::1"), Dport: 443, Role: "client",
				Counts: aggregate.Counts{Connects: 10, Timewait: 3}},
			{Other: true, Folded: 4, Counts: aggregate.Counts{Connects: 1}},
		},
		Thresholds: []Threshold{
			{Name: "max-timewait", Limit: 10000, Value: 14000, Result: "fail", Destination: "10.0.0.7:8080"},
			{Name: "fail-on-per-request", Limit: 0, Value: 1, Result: "fail"},
			{Name: "max-connect-errors", Limit: 100, Value: 12, Result: "pass"},
		},
		Passed: false,
		Losses: report.Losses{Records: 3},
		Errors: []string{"netns 4026532000: permission denied"},
	}
}

func render(t testing.TB, r *Report) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := WriteHTML(&b, r); err != nil {
		t.Fatalf("WriteHTML: %v", err)
	}
	return b.Bytes()
}

// voids are the elements without an end tag.
var voids = map[string]bool{"area": true, "base": true, "br": true, "col": true, "embed": true,
	"hr": true, "img": true, "input": true, "link": true, "meta": true, "source": true,
	"track": true, "wbr": true}

// checkDocument parses the page and checks what holds of every page: it
// is UTF-8, every element is closed where it was opened (a name cannot
// open or close one), there is no script, nothing is loaded from
// anywhere. It returns the parsed tree.
func checkDocument(t testing.TB, b []byte) *html.Node {
	t.Helper()
	if !utf8.Valid(b) {
		t.Error("page is not valid UTF-8")
	}
	if bytes.Contains(bytes.ToLower(b), []byte("<script")) {
		t.Error("page contains <script")
	}
	z := html.NewTokenizer(bytes.NewReader(b))
	var open []string
tokens:
	for {
		switch z.Next() {
		case html.ErrorToken:
			if z.Err() != io.EOF {
				t.Fatalf("tokenizer: %v", z.Err())
			}
			break tokens
		case html.StartTagToken:
			name, _ := z.TagName()
			if !voids[string(name)] {
				open = append(open, string(name))
			}
		case html.EndTagToken:
			name, _ := z.TagName()
			if len(open) == 0 || open[len(open)-1] != string(name) {
				t.Fatalf("</%s> closes %v", name, open)
			}
			open = open[:len(open)-1]
		}
	}
	if len(open) > 0 {
		t.Fatalf("elements left open: %v", open)
	}

	doc, err := html.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	walk(doc, func(n *html.Node) {
		if n.Type != html.ElementNode {
			return
		}
		switch n.Data {
		case "script", "link", "img", "iframe", "object", "embed", "image", "use", "foreignObject", "a":
			t.Errorf("page has a <%s> element", n.Data)
		case "style":
			css := strings.ToLower(text(n))
			if strings.Contains(css, "url(") || strings.Contains(css, "@import") {
				t.Error("style loads something")
			}
		}
		for _, a := range n.Attr {
			k := strings.ToLower(a.Key)
			if strings.HasPrefix(k, "on") {
				t.Errorf("<%s> has an event handler %s", n.Data, a.Key)
			}
			if k == "src" || k == "href" || strings.HasSuffix(k, ":href") {
				if strings.Contains(strings.ToLower(a.Val), "http") {
					t.Errorf("<%s %s=%q> loads from the network", n.Data, a.Key, a.Val)
				}
				t.Errorf("<%s> has %s=%q: nothing should be referenced", n.Data, a.Key, a.Val)
			}
			if k == "style" {
				t.Errorf("<%s> has a style attribute", n.Data)
			}
		}
	})
	return doc
}

func walk(n *html.Node, f func(*html.Node)) {
	f(n)
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		walk(c, f)
	}
}

func find(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var found []*html.Node
	walk(n, func(n *html.Node) {
		if n.Type == html.ElementNode && match(n) {
			found = append(found, n)
		}
	})
	return found
}

func elem(name, class string) func(*html.Node) bool {
	return func(n *html.Node) bool {
		return n.Data == name && (class == "" || hasClass(n, class))
	}
}

func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

func hasClass(n *html.Node, class string) bool {
	v, _ := attr(n, "class")
	for _, c := range strings.Fields(v) {
		if c == class {
			return true
		}
	}
	return false
}

func byID(doc *html.Node, id string) *html.Node {
	found := find(doc, func(n *html.Node) bool { v, _ := attr(n, "id"); return v == id })
	if len(found) != 1 {
		return nil
	}
	return found[0]
}

func text(n *html.Node) string {
	var b strings.Builder
	walk(n, func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
	})
	return b.String()
}

func num(t testing.TB, n *html.Node, key string) float64 {
	t.Helper()
	v, ok := attr(n, key)
	if !ok {
		t.Fatalf("<%s> has no %s", n.Data, key)
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		t.Fatalf("<%s %s=%q>: not a finite number", n.Data, key, v)
	}
	return f
}

type point struct{ x, y float64 }

// points parses a polyline's points: pairs "x,y" apart by spaces, each
// coordinate finite.
func points(t testing.TB, pl *html.Node) []point {
	t.Helper()
	v, ok := attr(pl, "points")
	if !ok {
		t.Fatal("polyline without points")
	}
	var ps []point
	for _, pair := range strings.Fields(v) {
		xs, ys, ok := strings.Cut(pair, ",")
		x, err1 := strconv.ParseFloat(xs, 64)
		y, err2 := strconv.ParseFloat(ys, 64)
		if !ok || err1 != nil || err2 != nil || math.IsNaN(x) || math.IsNaN(y) ||
			math.IsInf(x, 0) || math.IsInf(y, 0) {
			t.Fatalf("bad point %q", pair)
		}
		ps = append(ps, point{x, y})
	}
	return ps
}

// axis is the linear map from values to SVG coordinates that an axis's
// tick labels show.
type axis struct{ v0, p0, scale float64 }

func (a axis) at(v float64) float64 { return a.p0 + (v-a.v0)*a.scale }

// ticks reads the labels of class class (xtick or ytick), their value and
// their position (attribute pos), and checks that they are evenly spaced
// in both.
func ticks(t testing.TB, svg *html.Node, class, pos string) (axis, []float64) {
	t.Helper()
	labels := find(svg, elem("text", class))
	if len(labels) < 2 {
		t.Fatalf("%d %s labels", len(labels), class)
	}
	var vs, ps []float64
	for _, l := range labels {
		v, err := strconv.ParseFloat(strings.ReplaceAll(text(l), ",", ""), 64)
		if err != nil {
			t.Fatalf("%s label %q: %v", class, text(l), err)
		}
		vs = append(vs, v)
		ps = append(ps, num(t, l, pos))
	}
	a := axis{v0: vs[0], p0: ps[0], scale: (ps[len(ps)-1] - ps[0]) / (vs[len(vs)-1] - vs[0])}
	for i := range vs {
		if d := math.Abs(a.at(vs[i]) - ps[i]); d > 0.15 {
			t.Errorf("%s %v at %v, %v off the axis", class, vs[i], ps[i], d)
		}
	}
	return a, vs
}

type rect struct{ x0, y0, x1, y1 float64 }

func (r rect) has(p point) bool {
	const e = 0.06 // coordinates are rounded to 0.1
	return p.x >= r.x0-e && p.x <= r.x1+e && p.y >= r.y0-e && p.y <= r.y1+e
}

func plotRect(t testing.TB, svg *html.Node) rect {
	t.Helper()
	rs := find(svg, elem("rect", "plot"))
	if len(rs) != 1 {
		t.Fatalf("%d rect.plot", len(rs))
	}
	x, y := num(t, rs[0], "x"), num(t, rs[0], "y")
	return rect{x, y, x + num(t, rs[0], "width"), y + num(t, rs[0], "height")}
}

// checkChart checks the chart of d: one point per sample, each where the
// axes say and inside the plot; the ceiling line, if d has one, inside
// the plot and at its value; the y axis reaches both.
func checkChart(t *testing.T, svg *html.Node, d *Destination) {
	t.Helper()
	want := netip.AddrPortFrom(d.Daddr, d.Dport).String()
	plot := plotRect(t, svg)
	title := find(svg, elem("text", "title"))
	if len(title) != 1 || text(title[0]) != want+" — timewait sockets held" {
		t.Errorf("%s: title %v", want, title)
	}

	ya, yv := ticks(t, svg, "ytick", "y")
	xa, _ := ticks(t, svg, "xtick", "x")
	if ya.scale >= 0 || xa.scale <= 0 {
		t.Fatalf("%s: axes run the wrong way: x %v, y %v", want, xa.scale, ya.scale)
	}
	top := yv[len(yv)-1]

	pls := find(svg, elem("polyline", "held"))
	if len(pls) != 1 {
		t.Fatalf("%s: %d polyline.held", want, len(pls))
	}
	ps := points(t, pls[0])
	if len(ps) != len(d.Series) {
		t.Fatalf("%s: %d points for %d samples", want, len(ps), len(d.Series))
	}
	for i, p := range ps {
		s := d.Series[i]
		if !plot.has(p) {
			t.Fatalf("%s: point %d %v outside the plot %v", want, i, p, plot)
		}
		// Times outside the run are drawn at its edges.
		wantX := xa.at(s.T)
		switch {
		case math.IsNaN(s.T) || s.T < 0:
			wantX = xa.at(0)
		case math.IsInf(s.T, 1):
			wantX = plot.x1
		}
		if math.Abs(p.x-wantX) > 0.15 || math.Abs(p.y-ya.at(float64(s.Held))) > 0.15 {
			t.Fatalf("%s: sample %+v at %v, want (%.1f, %.1f)", want, s, p, wantX, ya.at(float64(s.Held)))
		}
		if float64(s.Held) > top {
			t.Fatalf("%s: sample %+v above the axis (%v)", want, s, top)
		}
	}
	dots := find(svg, elem("circle", "dot"))
	if (len(d.Series) == 1) != (len(dots) == 1) || len(dots) > 1 {
		t.Errorf("%s: %d samples, %d dots", want, len(d.Series), len(dots))
	}
	if len(dots) == 1 && (math.Abs(num(t, dots[0], "cx")-ps[0].x) > 0.06 || math.Abs(num(t, dots[0], "cy")-ps[0].y) > 0.06) {
		t.Errorf("%s: dot not at the sample", want)
	}
	empty := strings.Contains(text(svg), "no samples")
	if empty != (len(d.Series) == 0) {
		t.Errorf("%s: %d samples, says no samples: %v", want, len(d.Series), empty)
	}

	lines := find(svg, elem("line", "ceiling"))
	labels := find(svg, elem("text", "ceiling-label"))
	if len(labels) != 1 {
		t.Fatalf("%s: %d ceiling labels", want, len(labels))
	}
	if d.PortsUsable <= 0 {
		if len(lines) != 0 {
			t.Errorf("%s: ceiling unknown, yet a ceiling line", want)
		}
		if text(labels[0]) != "ceiling unknown" {
			t.Errorf("%s: ceiling label %q", want, text(labels[0]))
		}
		return
	}
	if len(lines) != 1 {
		t.Fatalf("%s: %d ceiling lines", want, len(lines))
	}
	l := lines[0]
	y := num(t, l, "y1")
	if y != num(t, l, "y2") {
		t.Errorf("%s: ceiling not horizontal", want)
	}
	if num(t, l, "x1") != plot.x0 || num(t, l, "x2") != plot.x1 {
		t.Errorf("%s: ceiling does not span the plot", want)
	}
	// Strictly below the top (the axis has headroom above the ceiling);
	// at the bottom edge only when tiny next to the series.
	if !(y > plot.y0 && y <= plot.y1) {
		t.Errorf("%s: ceiling at y %v outside the plot %v", want, y, plot)
	}
	if math.Abs(y-ya.at(float64(d.PortsUsable))) > 0.15 {
		t.Errorf("%s: ceiling at y %v, the axis puts %d at %v", want, y, d.PortsUsable, ya.at(float64(d.PortsUsable)))
	}
	if float64(d.PortsUsable) > top {
		t.Errorf("%s: ceiling %d above the axis (%v)", want, d.PortsUsable, top)
	}
	if da, _ := attr(l, "stroke-dasharray"); da == "" {
		t.Errorf("%s: ceiling not dashed", want)
	}
	wantLabel := "ceiling: " + fmtInt(d.PortsUsable) + " usable ports (" + fmtRate(d.CeilingPerS) + "/s)"
	if text(labels[0]) != wantLabel {
		t.Errorf("%s: ceiling label %q, want %q", want, text(labels[0]), wantLabel)
	}
}

// charts returns the page's charts by destination, failing on any other
// count than one per destination.
func charts(t testing.TB, doc *html.Node, r *Report) []*html.Node {
	t.Helper()
	svgs := find(doc, func(n *html.Node) bool { _, ok := attr(n, "data-destination"); return ok })
	all := find(doc, elem("svg", ""))
	if len(svgs) != len(r.Destinations) || len(all) != len(r.Destinations) {
		t.Fatalf("%d svg, %d with data-destination, for %d destinations", len(all), len(svgs), len(r.Destinations))
	}
	for i, svg := range svgs {
		if svg.Data != "svg" || svg.Namespace != "svg" {
			t.Errorf("data-destination on <%s>", svg.Data)
		}
		d := &r.Destinations[i]
		want := netip.AddrPortFrom(d.Daddr, d.Dport).String()
		if got, _ := attr(svg, "data-destination"); got != want {
			t.Errorf("chart %d is of %q, want %q", i, got, want)
		}
	}
	return svgs
}

func tableRows(t testing.TB, doc *html.Node, id string) []*html.Node {
	t.Helper()
	tab := byID(doc, id)
	if tab == nil || tab.Data != "table" {
		t.Fatalf("no table #%s", id)
	}
	var rows []*html.Node
	for _, body := range find(tab, elem("tbody", "")) {
		rows = append(rows, find(body, elem("tr", ""))...)
	}
	return rows
}

func cells(tr *html.Node) []string {
	var cs []string
	for _, td := range find(tr, elem("td", "")) {
		cs = append(cs, text(td))
	}
	return cs
}

func TestWriteHTMLPage(t *testing.T) {
	r := testReport()
	b := render(t, r)
	doc := checkDocument(t, b)

	if n := byID(doc, "verdict"); n == nil || text(n) != "FAILED" || !hasClass(n, "fail") {
		t.Error("no FAILED badge")
	}
	wantCmd := `curl -H 'X-A: "q" '\''single'\''' 'http://example.com/?a=1&b=<2>'`
	if n := byID(doc, "command"); n == nil || text(n) != wantCmd {
		t.Errorf("command shown as %q, want %q", text(byID(doc, "command")), wantCmd)
	}
	head := text(find(doc, elem("header", ""))[0])
	for _, s := range []string{"killed by SIGKILL (exit 137)", "8 min 20 s", "2 of 3 thresholds failed"} {
		if !strings.Contains(head, s) {
			t.Errorf("header lacks %q: %q", s, head)
		}
	}
	totals := text(byID(doc, "totals"))
	for _, s := range []string{"130,000", "120,000", "119,000 client · 1,000 server", "connect errors12", "bind errors1", "lost3", "3 events could not be counted"} {
		if !strings.Contains(totals, s) {
			t.Errorf("totals lack %q: %q", s, totals)
		}
	}

	for i, svg := range charts(t, doc, r) {
		checkChart(t, svg, &r.Destinations[i])
	}
	caption := text(find(doc, elem("figcaption", ""))[0])
	for _, s := range []string{"peak 14,000 held (50% of the ceiling)", "240 connects/s", "5,000 samples"} {
		if !strings.Contains(caption, s) {
			t.Errorf("caption lacks %q: %q", s, caption)
		}
	}
	if c := text(find(doc, elem("figcaption", ""))[1]); !strings.Contains(c, "ceiling unknown") {
		t.Errorf("caption of the unknown ceiling: %q", c)
	}

	// The hostile name is text, shown with its control byte spelled out,
	// wherever it appears; the name that is not UTF-8 shows its bytes.
	procs := tableRows(t, doc, "processes")
	if len(procs) != len(r.Processes) {
		t.Fatalf("%d process rows for %d processes", len(procs), len(r.Processes))
	}
	for i, want := range [][]string{
		{"100", "curl", "120,000", "110,000", "12", "0", "per-request"},
		{"101", `<script>x</script>\x01`, "10", "3", "0", "1", "—"},
		{"102", `bad\xff\xfeutf8`, "1", "0", "0", "0", "—"},
	} {
		if got := cells(procs[i]); !reflect.DeepEqual(got, want) {
			t.Errorf("process row %d: %q, want %q", i, got, want)
		}
	}
	// A failure count is flagged in its own cell only: curl's connect
	// errors, the hostile process's bind error.
	for i, want := range [][2]bool{{true, false}, {false, true}, {false, false}} {
		var tds []*html.Node
		for c := procs[i].FirstChild; c != nil; c = c.NextSibling {
			if c.Type == html.ElementNode && c.Data == "td" {
				tds = append(tds, c)
			}
		}
		if got := [2]bool{hasClass(tds[4], "bad"), hasClass(tds[5], "bad")}; got != want {
			t.Errorf("process row %d: connect/bind error cells flagged %v, want %v", i, got, want)
		}
	}

	dests := tableRows(t, doc, "destinations")
	if len(dests) != len(r.Destinations) {
		t.Fatalf("%d destination rows for %d destinations", len(dests), len(r.Destinations))
	}
	for i, want := range [][]string{
		{"10.0.0.7:8080", "4026531840", "120,000", "240", "110,000", "14,000", "28,231", "471", "12"},
		{"[2001:db8::1]:443", "4026531840", "10", "0.02", "3", "3", "unknown", "—", "0"},
		{"192.0.2.1:53", "4026532000", "1", "0.00", "0", "0", "1,000", "16.7", "0"},
	} {
		if got := cells(dests[i]); !reflect.DeepEqual(got, want) {
			t.Errorf("destination row %d: %q, want %q", i, got, want)
		}
	}

	rows := tableRows(t, doc, "rows")
	if len(rows) != len(r.Rows) {
		t.Fatalf("%d verdict rows for %d rows", len(rows), len(r.Rows))
	}
	if got := cells(rows[0]); got[1] != "curl" || got[3] != "10.0.0.7:8080" || got[7] != "3.2 ms" || got[8] != "512 B" ||
		got[9] != "per-request" || !strings.Contains(got[10], "Reuse connections.") || !strings.Contains(got[10], "<b>not bold</b>") ||
		!strings.Contains(got[10], "called from fetch_one (/src/fetch.c:42) via libcurl") {
		t.Errorf("verdict row 0: %q", got)
	}
	if got := cells(rows[1]); got[1] != `<script>x</script>\x01` || got[7] != "—" || got[8] != "—" {
		t.Errorf("verdict row 1: %q", got)
	}
	if got := cells(rows[2]); got[0] != "—" || got[1] != "other (4 rows)" || got[3] != "—" {
		t.Errorf("verdict row 2 (other): %q", got)
	}
	if n := len(find(byID(doc, "rows"), elem("li", ""))); n != 2 {
		t.Errorf("%d advice items, want 2", n)
	}
	if n := len(find(byID(doc, "rows"), elem("b", ""))); n != 0 {
		t.Error("advice markup became an element")
	}

	ths := tableRows(t, doc, "thresholds")
	if len(ths) != len(r.Thresholds) {
		t.Fatalf("%d threshold rows for %d thresholds", len(ths), len(r.Thresholds))
	}
	for i, want := range [][]string{
		{"max-timewait", "10,000", "14,000", "10.0.0.7:8080", "FAIL"},
		{"fail-on-per-request", "0", "1", "—", "FAIL"},
		{"max-connect-errors", "100", "12", "—", "PASS"},
	} {
		if got := cells(ths[i]); !reflect.DeepEqual(got, want) {
			t.Errorf("threshold row %d: %q, want %q", i, got, want)
		}
	}

	losses := tableRows(t, doc, "losses")
	if want := reflect.TypeFor[report.Losses]().NumField(); len(losses) != want {
		t.Errorf("%d loss rows, want %d", len(losses), want)
	}
	if got := cells(losses[0]); got[0] != "lost records" || got[1] != "3" {
		t.Errorf("loss row 0: %q", got)
	}
	if e := byID(doc, "errors"); e == nil || strings.TrimSpace(text(e)) != "netns 4026532000: permission denied" {
		t.Error("errors not listed")
	}

	// Nothing the page was given became markup: every element is one the
	// page itself writes.
	known := map[string]bool{}
	for _, s := range strings.Fields("html head body meta title style main header h1 h2 div span b code section " +
		"p table thead tbody tr th td ul li figure figcaption svg text rect line polyline circle footer") {
		known[s] = true
	}
	walk(doc, func(n *html.Node) {
		if n.Type == html.ElementNode && !known[n.Data] {
			t.Errorf("unexpected element <%s>", n.Data)
		}
	})
}

// TestWriteHTMLHostile puts one hostile string (markup, quotes, the end
// tags of the elements whose text the parser treats specially, an entity,
// a control byte, a bidi override) in every string of the report a
// process or the user chooses, and finds it everywhere as text: cleaned,
// then shown character for character, never as markup.
func TestWriteHTMLHostile(t *testing.T) {
	const h = `<script>alert("x")</script>'</style></title></code>&amp;` + "\x01\u202e"
	shown := clean(h)
	r := &Report{
		Command:    []string{h},
		ExitCode:   1,
		Signal:     h,
		Processes:  []Process{{PID: 1, Comm: h, Verdict: h}},
		Rows:       []report.Row{{PID: 1, Comm: h, Role: h, Verdict: h, Reason: h, Advice: []string{h}, CallSite: h}},
		Thresholds: []Threshold{{Name: h, Result: h, Destination: h}},
		Errors:     []string{h},
	}
	b := render(t, r)
	doc := checkDocument(t, b)
	for _, raw := range []string{"\x01", "\u202e", "<script", "</title></code>"} {
		if bytes.Contains(b, []byte(raw)) {
			t.Errorf("page has %q unescaped", raw)
		}
	}
	if n := bytes.Count(b, []byte("</style")); n != 1 {
		t.Errorf("%d </style in the page, want the page's own one", n)
	}

	cmd := quoteArgv([]string{shown})
	if got := text(byID(doc, "command")); got != cmd {
		t.Errorf("command shown as %q, want %q", got, cmd)
	}
	titles := find(doc, func(n *html.Node) bool { return n.Data == "title" && n.Parent.Data == "head" })
	if len(titles) != 1 || text(titles[0]) != "twtrace run: FAILED — "+cmd {
		t.Errorf("title %q, want the command %q", text(titles[0]), cmd)
	}
	exit := "killed by " + shown + " (exit 1)"
	if head := text(find(doc, elem("header", ""))[0]); !strings.Contains(head, exit) {
		t.Errorf("header lacks %q: %q", exit, head)
	}
	for _, c := range []struct {
		table string
		want  []string
	}{
		{"thresholds", []string{shown, "0", "0", shown, strings.ToUpper(shown)}},
		{"processes", []string{"1", shown, "0", "0", "0", "0", shown}},
		{"rows", []string{"1", shown, shown, "?:0", "0", "0", "0", "—", "—", shown, shown + "called from " + shown + shown}},
	} {
		rows := tableRows(t, doc, c.table)
		if got := cells(rows[0]); len(rows) != 1 || !reflect.DeepEqual(got, c.want) {
			t.Errorf("#%s row %q, want %q", c.table, got, c.want)
		}
	}
	if got := text(byID(doc, "errors")); strings.TrimSpace(got) != shown {
		t.Errorf("error shown as %q, want %q", got, shown)
	}
	if n := len(find(doc, elem("code", ""))); n != 1 {
		t.Errorf("%d code elements, want the command's", n)
	}
}

// TestWriteHTMLSeries draws one destination at a time, with and without a
// ceiling, over the series lengths that need care.
func TestWriteHTMLSeries(t *testing.T) {
	series := map[string][]Sample{
		"none":        nil,
		"one":         {{T: 2, Held: 7}},
		"one at zero": {{T: 0, Held: 0}},
		"two flat":    {{T: 0, Held: 5}, {T: 1, Held: 5}},
		"zeros":       {{T: 0, Held: 0}, {T: 1, Held: 0}, {T: 2, Held: 0}},
		"many":        manySamples(10000, 50000),
		// A sample after the run's end widens the axis; one before its
		// start sits at 0; odd times (NaN, infinities) are clamped.
		"odd times": {{T: -3, Held: 1}, {T: 12, Held: 2}, {T: math.NaN(), Held: 3}, {T: math.Inf(1), Held: 4}, {T: math.Inf(-1), Held: 5}},
		"negative":  {{T: 0, Held: -5}, {T: 1, Held: 10}},
	}
	for name, s := range series {
		for _, ports := range []int{0, 1, 5, 28231, 1 << 20} {
			t.Run(name+"/"+strconv.Itoa(ports), func(t *testing.T) {
				r := &Report{
					Command:   []string{"true"},
					DurationS: 10,
					Passed:    true,
					Destinations: []Destination{{Daddr: netip.MustParseAddr("127.0.0.1"), Dport: 80,
						PortsUsable: ports, CeilingPerS: float64(ports) / 60, Series: s}},
				}
				doc := checkDocument(t, render(t, r))
				if n := byID(doc, "verdict"); n == nil || text(n) != "PASSED" || !hasClass(n, "pass") {
					t.Error("no PASSED badge")
				}
				if name == "odd times" && r.Destinations[0].Series[3].T != math.Inf(1) {
					t.Fatal("WriteHTML changed the report")
				}
				checkChart(t, charts(t, doc, r)[0], &r.Destinations[0])
			})
		}
	}
}

// TestWriteHTMLEmpty: a report with nothing in it is still a page.
func TestWriteHTMLEmpty(t *testing.T) {
	for _, r := range []*Report{{}, {Passed: true, DurationS: math.NaN()}} {
		doc := checkDocument(t, render(t, r))
		if n := len(find(doc, elem("svg", ""))); n != 0 {
			t.Errorf("%d charts for no destination", n)
		}
		for _, id := range []string{"processes", "destinations", "rows", "thresholds"} {
			if byID(doc, id) != nil {
				t.Errorf("table #%s with no rows", id)
			}
		}
		if !strings.Contains(text(doc), "no thresholds set") {
			t.Error("no word on thresholds")
		}
	}
}

// TestWriteHTMLSize: the page grows linearly with the samples, a few bytes
// each.
func TestWriteHTMLSize(t *testing.T) {
	size := func(n int) int {
		r := &Report{DurationS: float64(n), Destinations: []Destination{{
			Daddr: netip.MustParseAddr("10.1.2.3"), Dport: 80, PortsUsable: 28231,
			Series: manySamples(n, 20000)}}}
		return len(render(t, r))
	}
	base, big := size(0), size(100000)
	if per := float64(big-base) / 100000; per > 14 {
		t.Errorf("%.1f bytes per sample", per)
	}
}

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"curl":                   "curl",
		"":                       "",
		"naïve 日本":               "naïve 日本",
		"a\x00b":                 `a\x00b`,
		"tab\there":              `tab\x09here`,
		"bad\xff":                `bad\xff`,
		"\xe6\x97":               `\xe6\x97`, // a cut multibyte character
		"del\x7f":                `del\x7f`,
		"c1\u0085":               `c1\u0085`,
		"evil\u202egnp.exe":      `evil\u202egnp.exe`,
		"<script>x</script>\x01": `<script>x</script>\x01`,
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{fmtUint(0), "0"},
		{fmtUint(999), "999"},
		{fmtUint(1000), "1,000"},
		{fmtUint(math.MaxUint64), "18,446,744,073,709,551,615"},
		{fmtInt(-1234567), "-1,234,567"},
		{fmtInt64(math.MinInt64), "-9,223,372,036,854,775,808"},
		{fmtNum(1234.96), "1,235.0"},
		{fmtNum(-1234.5), "-1,234.5"},
		{fmtNum(0.125), "0.125"},
		{fmtNum(math.NaN()), "—"},
		{fmtRate(470.5), "471"},
		{fmtRate(16.66), "16.7"},
		{fmtRate(0.5), "0.50"},
		{fmtDuration(59.94), "59.9 s"},
		{fmtDuration(61), "1 min 1 s"},
		{fmtDuration(7322), "2 h 2 min"},
		{fmtTick(0.5, 0.5), "0.5"},
		{fmtTick(30000, 5000), "30,000"},
		{fmtTick(0.25, 0.05), "0.25"},
		{shellQuote("it's"), `'it'\''s'`},
		{shellQuote("a/b-c.d"), "a/b-c.d"},
		{shellQuote(""), "''"},
		{quoteArgv([]string{"sh", "-c", "echo $HOME; ls *", "a!b", "naïve", ""}), `sh -c 'echo $HOME; ls *' 'a!b' 'naïve' ''`},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	for _, c := range []struct {
		span float64
		want float64
	}{{10, 2}, {1, 0.2}, {7, 2}, {28231 * 1.05, 10000}, {0, 1}, {math.NaN(), 1}, {math.Inf(1), 1}} {
		if got := niceStep(c.span, 5); got != c.want {
			t.Errorf("niceStep(%v, 5) = %v, want %v", c.span, got, c.want)
		}
	}
}

// FuzzWriteHTML: whatever the names, the command and the samples, the page
// parses with every element closed where it opened, loads nothing, has no
// script, and draws one finite point per sample.
func FuzzWriteHTML(f *testing.F) {
	f.Add(hostileComm, `a "b" 'c'`, 0.0, 1.0, 0, 3, uint16(100), 28231)
	f.Add("</td></tr></table><svg onload=alert(1)>", "<!--", 1e308, 1e308, math.MaxInt, math.MaxInt, uint16(5), 1)
	f.Add("\xff\xfe\x00", "]]></style><script>", math.NaN(), math.Inf(-1), -5, -7, uint16(1), 0)
	f.Add("\u202eexe.txt", "javascript:alert(1)", -1.0, 0.0, 0, 0, uint16(0), -1)
	f.Fuzz(func(t *testing.T, comm, arg string, t0, dt float64, h0, dh int, n uint16, ports int) {
		series := make([]Sample, int(n)%2048)
		for k := range series {
			series[k] = Sample{T: t0 + float64(k)*dt, Held: h0 + k*dh}
		}
		r := &Report{
			Command:   []string{arg, comm},
			Signal:    comm,
			DurationS: t0,
			Destinations: []Destination{
				{Daddr: netip.MustParseAddr("10.0.0.1"), Dport: 80, PortsUsable: ports, CeilingPerS: dt, ConnectsPerS: t0, Series: series},
				{Daddr: netip.MustParseAddr("::1"), Dport: 443, TimewaitPeak: h0, Series: series[:min(len(series), 1)]},
			},
			Processes:  []Process{{PID: 1, Comm: comm, Verdict: arg}},
			Rows:       []report.Row{{Comm: comm, Role: arg, Reason: comm, Advice: []string{arg, comm}, LifetimeP50Ms: &dt}},
			Thresholds: []Threshold{{Name: comm, Limit: t0, Value: dt, Result: arg, Destination: arg}},
			Errors:     []string{comm, arg},
		}
		doc := checkDocument(t, render(t, r))
		if len(find(doc, elem("script", ""))) > 0 {
			t.Fatal("script element")
		}
		svgs := charts(t, doc, r)
		if len(svgs) != 2 {
			t.Fatalf("%d charts", len(svgs))
		}
		for i, svg := range svgs {
			plot := plotRect(t, svg)
			pls := find(svg, elem("polyline", "held"))
			if len(pls) != 1 {
				t.Fatalf("%d polylines", len(pls))
			}
			ps := points(t, pls[0])
			if len(ps) != len(r.Destinations[i].Series) {
				t.Fatalf("%d points for %d samples", len(ps), len(r.Destinations[i].Series))
			}
			for _, p := range ps {
				if !plot.has(p) {
					t.Fatalf("point %v outside the plot %v", p, plot)
				}
			}
			lines := find(svg, elem("line", "ceiling"))
			if (r.Destinations[i].PortsUsable > 0) != (len(lines) == 1) || len(lines) > 1 {
				t.Fatalf("ports %d, %d ceiling lines", r.Destinations[i].PortsUsable, len(lines))
			}
			for _, l := range lines {
				if y := num(t, l, "y1"); !(y > plot.y0 && y <= plot.y1) {
					t.Fatalf("ceiling at %v outside the plot %v", y, plot)
				}
			}
		}
		if got := cells(tableRows(t, doc, "processes")[0])[1]; got != clean(comm) {
			t.Fatalf("comm shown as %q, want %q", got, clean(comm))
		}
	})
}

func BenchmarkWriteHTML(b *testing.B) {
	r := testReport()
	for b.Loop() {
		if err := WriteHTML(io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
}
