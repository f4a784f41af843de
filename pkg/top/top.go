// Package top is the view of `twtrace top`: the live engine's frames
// (package live) as the JSON object printed each interval, their rows
// ranked and cut to what a screen shows, and that object laid out for a
// terminal (Render).
package top

import (
	"context"
	"fmt"
	"time"

	"github.com/twtrace/twtrace/pkg/live"
	"github.com/twtrace/twtrace/pkg/report"
)

// Sort is the order of rows.
type Sort int

const (
	ByTimewaitRate  Sort = iota // timewait entries per second (default)
	ByConnectRate               // connect attempts per second
	ByTimewaitNow               // timewait sockets held now
	ByConnectErrors             // connect() failures, cumulative
)

var sortNames = [...]string{"timewait", "connects", "now", "errors"}

func (s Sort) String() string { return sortNames[s] }

// ParseSort is the inverse of Sort.String.
func ParseSort(s string) (Sort, error) {
	for i, n := range sortNames {
		if n == s {
			return Sort(i), nil
		}
	}
	return 0, fmt.Errorf("invalid sort %q: want timewait, connects, now or errors", s)
}

// value is what rows are ranked by.
func (s Sort) value(r *report.Row) float64 {
	switch s {
	case ByConnectRate:
		return r.ConnectsPerS
	case ByTimewaitNow:
		return float64(r.TimewaitNow)
	case ByConnectErrors:
		return float64(r.ConnectErrors)
	}
	return r.TimewaitPerS
}

// Config of a top session: the engine's, and what the view shows.
type Config struct {
	live.Config
	Rows int // rows shown, the rest folded into one; default 20
	// Sort returns the current order; nil means ByTimewaitRate.
	Sort func() Sort
}

// DefaultRows is how many rows top shows.
const DefaultRows = 20

// Frame is one refresh: the JSON object `top -o json` prints per interval.
type Frame struct {
	Time         time.Time                `json:"time"`
	IntervalS    float64                  `json:"interval_s"`
	UptimeS      float64                  `json:"uptime_s"`
	Sort         string                   `json:"sort"`
	By           string                   `json:"by"`
	Rows         []report.Row             `json:"rows"`
	Destinations []report.LiveDestination `json:"destinations"`
	Namespaces   []report.Namespace       `json:"namespaces"`
	Losses       report.Losses            `json:"losses"`
	Errors       []string                 `json:"errors,omitempty"`
	// Tier is the tracer's tier: "precise" or "tracepoint".
	Tier string `json:"tier"`
	// Final marks the frame emitted after the drain (live.Config.Drain).
	Final bool `json:"final,omitempty"`
	// InventoryTime is when the sockets were last read: the time of the
	// timewait sockets held and of the headroom, which a frame reads
	// again only within live.Config.InventoryCPU; ScanS is what that read
	// took.
	InventoryTime time.Time `json:"inventory_time"`
	ScanS         float64   `json:"scan_s"`
}

// Run runs the live engine and calls emit with each of its frames as top
// shows it, until ctx is done or cfg.Count frames were emitted.
func Run(ctx context.Context, cfg Config, emit func(*Frame) error) error {
	if cfg.Rows <= 0 {
		cfg.Rows = DefaultRows
	}
	return live.Run(ctx, cfg.Config, func(f *live.Frame) error {
		by := ByTimewaitRate
		if cfg.Sort != nil {
			by = cfg.Sort()
		}
		return emit(View(f, by, cfg.Rows))
	})
}

// View is f as top shows it: its rows ranked by by, the first k, then one
// row flagged Other summing the rest and the engine's own Other row.
func View(f *live.Frame, by Sort, k int) *Frame {
	return &Frame{
		Time:         f.Time,
		IntervalS:    report.Round3(f.Interval.Seconds()),
		UptimeS:      report.Round3(f.Uptime.Seconds()),
		Sort:         by.String(),
		By:           f.By.String(),
		Rows:         rank(f.Rows, by, k),
		Destinations: f.Destinations,
		Namespaces:   f.Namespaces,
		Losses:       f.Losses,
		Errors:       f.Errors,
		Tier:         f.Tier.String(),
		Final:        f.Final,

		InventoryTime: f.InventoryTime,
		ScanS:         report.Round3(f.ScanTime.Seconds()),
	}
}

// rank orders rows by, keeps k, and folds the rest (and the engine's
// Other row) into one row flagged Other.
func rank(rows []live.Row, by Sort, k int) []report.Row {
	out := make([]report.Row, 0, len(rows))
	var table *live.Row
	for i := range rows {
		if rows[i].Other {
			table = &rows[i]
			continue
		}
		out = append(out, rows[i].Report())
	}
	report.SortRows(out, by.value)
	var other *report.Row
	fold := func(r *report.Row) {
		if other == nil {
			o := report.OtherRow()
			other = &o
		}
		other.ConnectsPerS += r.ConnectsPerS
		other.TimewaitPerS += r.TimewaitPerS
		other.TimewaitNow += r.TimewaitNow
		other.Counts.Add(&r.Counts)
		other.Folded++
	}
	if len(out) > k {
		for i := k; i < len(out); i++ {
			fold(&out[i])
		}
		out = out[:k]
	}
	if table != nil {
		// Its rates unrounded: the sum is rounded once, below.
		fold(&report.Row{ConnectsPerS: table.ConnectsPerS, TimewaitPerS: table.TimewaitPerS, Counts: table.Counts})
		other.Folded--
	}
	if other != nil {
		other.ConnectsPerS, other.TimewaitPerS = report.Round3(other.ConnectsPerS), report.Round3(other.TimewaitPerS)
		out = append(out, *other)
	}
	return out
}
