package main

import "testing"

const exposition = `# TYPE twtrace_losses_total counter
twtrace_losses_total{kind="lost_records"} 12
twtrace_losses_total{kind="missed_runs"} 0 1700000000
twtrace_losses_total{kind="lost_records_x"} 5
twtrace_workload_series 3
`

func TestMetricValue(t *testing.T) {
	for series, want := range map[string]float64{
		`twtrace_losses_total{kind="lost_records"}`: 12,
		`twtrace_losses_total{kind="missed_runs"}`:  0,
		`twtrace_workload_series`:                   3,
	} {
		if got, ok := metricValue([]byte(exposition), series); !ok || got != want {
			t.Errorf("metricValue(%s) = %v, %v; want %v", series, got, ok, want)
		}
	}
	if _, ok := metricValue([]byte(exposition), `twtrace_losses_total{kind="untracked_sockets"}`); ok {
		t.Error("a missing series was found")
	}
}

func TestServingAddress(t *testing.T) {
	line := "time=2026-12-04T20:14:46.508Z level=INFO msg=serving address=127.0.0.1:39081 version=devel\n"
	if got, ok := servingAddress(line); !ok || got != "127.0.0.1:39081" {
		t.Errorf("servingAddress = %q, %v", got, ok)
	}
	if got, ok := servingAddress(`level=INFO msg="Listening on" component=http address=127.0.0.1:39081`); ok {
		t.Errorf("servingAddress of exporter-toolkit's line = %q", got)
	}
}

func FuzzMetricValue(f *testing.F) {
	f.Add(exposition, `twtrace_workload_series`)
	f.Add("twtrace_workload_series \n", "twtrace_workload_series")
	f.Fuzz(func(t *testing.T, body, series string) {
		metricValue([]byte(body), series)
		servingAddress(body)
	})
}
