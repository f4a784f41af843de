package deploy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// specMetrics are the families the agent exports (docs/agent.md, issue
// 16's contract). An alert or a panel naming anything else would show
// nothing, silently.
var specMetrics = []string{
	"twtrace_connect_attempts_total",
	"twtrace_timewait_entries_total",
	"twtrace_connect_errors_total",
	"twtrace_bind_errors_total",
	"twtrace_timewait_overflows_total",
	"twtrace_timewait_reuses_total",
	"twtrace_per_request_connections",
	"twtrace_per_request_call_site",
	"twtrace_destination_ports_available",
	"twtrace_destination_ports_usable",
	"twtrace_destination_timewait_sockets",
	"twtrace_destination_exhaustion_seconds",
	"twtrace_namespace_timewait_sockets",
	"twtrace_namespace_ports_usable",
	"twtrace_namespace_port_usage_max_ratio",
	"twtrace_namespace_timewait_created_total",
	"twtrace_namespace_timewait_recycled_total",
	"twtrace_namespace_timewait_overflow_total",
	"twtrace_losses_total",
	"twtrace_build_info",
	"twtrace_inventory_scan_duration_seconds",
	"twtrace_inventory_read_timestamp_seconds",
	"twtrace_workload_series",
}

// promqlFunctions are the functions and aggregations the shipped
// expressions may call; anything else followed by "(" is taken for a typo.
var promqlFunctions = []string{
	"sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile",
	"rate", "irate", "increase", "delta", "deriv", "predict_linear",
	"min_over_time", "max_over_time", "avg_over_time", "last_over_time",
	"clamp_min", "clamp_max", "abs", "round", "sort", "sort_desc",
	"label_replace", "label_join", "absent", "vector", "scalar", "time",
}

// promqlKeywords are the words an expression holds that are neither a
// metric nor a function.
var promqlKeywords = []string{
	"by", "without", "on", "ignoring", "group_left", "group_right",
	"bool", "and", "or", "unless", "offset",
}

var (
	// What names no metric: quoted strings, label matchers, range and
	// subquery brackets, Grafana's $variables and ${variables}.
	promqlStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promqlMatchers  = regexp.MustCompile(`\{[^{}]*\}`)
	promqlRanges    = regexp.MustCompile(`\[[^\[\]]*\]`)
	promqlVariables = regexp.MustCompile(`\$\{[^}]*\}|\$\w+`)
	// by (a, b), without (...), on (...), ignoring (...), group_left (...):
	// label lists.
	promqlLabelLists = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promqlIdent      = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?`)
	promqlNumber     = regexp.MustCompile(`\b\d+(\.\d+)?([eE][+-]?\d+)?[smhdwy]?\b`)
)

// metricNames returns the metric names an expression selects, and an
// error for a function it does not know. It is a reader of the shipped
// expressions' shape, not a PromQL parser: promtool checks the syntax.
func metricNames(expr string) ([]string, error) {
	s := promqlStrings.ReplaceAllString(expr, `""`)
	s = promqlVariables.ReplaceAllString(s, " ")
	s = promqlMatchers.ReplaceAllString(s, " ")
	s = promqlRanges.ReplaceAllString(s, " ")
	s = promqlLabelLists.ReplaceAllString(s, " ")
	s = promqlNumber.ReplaceAllString(s, " ")
	var names []string
	for _, m := range promqlIdent.FindAllStringSubmatch(s, -1) {
		word := strings.TrimRight(strings.TrimSuffix(strings.TrimSpace(m[0]), "("), " \t\n")
		switch {
		case m[1] != "":
			if !slices.Contains(promqlFunctions, word) {
				return nil, fmt.Errorf("unknown function %q in %q", word, expr)
			}
		case slices.Contains(promqlKeywords, word):
		default:
			if !slices.Contains(names, word) {
				names = append(names, word)
			}
		}
	}
	return names, nil
}

// checkMetrics fails the test for a metric name outside the spec and for
// an expression that selects none.
func checkMetrics(t *testing.T, where, expr string) {
	t.Helper()
	names, err := metricNames(expr)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	if len(names) == 0 {
		t.Errorf("%s: %q selects no metric", where, expr)
	}
	for _, n := range names {
		if !slices.Contains(specMetrics, n) {
			t.Errorf("%s: %q is not a metric the agent exports", where, n)
		}
	}
}

func TestMetricNames(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []string
		err  bool
	}{
		{`min by (node, dport) (twtrace_destination_exhaustion_seconds) < 300`, []string{"twtrace_destination_exhaustion_seconds"}, false},
		{`sum by (node) (increase(twtrace_connect_errors_total{errno="EADDRNOTAVAIL", comm=~"a{1}"}[5m])) > 0`, []string{"twtrace_connect_errors_total"}, false},
		{`topk(10, sum by (comm) (rate(twtrace_connect_attempts_total{node=~"$node"}[$__rate_interval])))`, []string{"twtrace_connect_attempts_total"}, false},
		{`twtrace_destination_ports_available / on (netns, daddr) group_left twtrace_destination_ports_usable`, []string{"twtrace_destination_ports_available", "twtrace_destination_ports_usable"}, false},
		{`1 - twtrace_namespace_port_usage_max_ratio > bool 0.8e0`, []string{"twtrace_namespace_port_usage_max_ratio"}, false},
		{`node_sockstat_TCP_tw`, []string{"node_sockstat_TCP_tw"}, false},
		{`sumx(twtrace_losses_total)`, nil, true},
		{`rate(twtrace_losses_total[5m] offset 1h)`, []string{"twtrace_losses_total"}, false},
	} {
		got, err := metricNames(c.expr)
		if (err != nil) != c.err || !slices.Equal(got, c.want) {
			t.Errorf("metricNames(%q) = %q, %v; want %q, error %v", c.expr, got, err, c.want, c.err)
		}
	}
}

// Any text: no panic.
func FuzzMetricNames(f *testing.F) {
	f.Add(`sum by (node) (increase(twtrace_connect_errors_total{errno="EADDRNOTAVAIL"}[5m])) > 0`)
	f.Add(`topk(10, rate(x{a=~"$node"}[$__rate_interval]))`)
	f.Add(`"unterminated {[(`)
	f.Add("`raw` ${var:csv} 1e9 by (")
	f.Fuzz(func(t *testing.T, expr string) {
		names, err := metricNames(expr)
		if err != nil && names != nil {
			t.Errorf("names %q with error %v", names, err)
		}
	})
}
