package run

import (
	"math"
	"strconv"
	"strings"
)

// The SVG chart of one destination: timewait sockets held over the run
// against its port ceiling, laid out in Go, drawn by page.html.tmpl.

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
