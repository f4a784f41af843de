package main

import (
	"testing"
	"time"
)

func TestParseProgress(t *testing.T) {
	for _, p := range []progress{{}, {processes: 50000, connections: 2000000, errors: 3}, {processes: 1, done: true}} {
		got, ok := parseProgress(p.String())
		if !ok || got != p {
			t.Errorf("parseProgress(%q) = %+v, %v; want %+v", p.String(), got, ok, p)
		}
	}
	for _, bad := range []string{"", "progress", "progress 1 2", "progress 1 2 x", "progress -1 2 3", "went 1 2 3", "done 1 2 3 4"} {
		if p, ok := parseProgress(bad); ok {
			t.Errorf("parseProgress(%q) = %+v, want not ok", bad, p)
		}
	}
}

func TestDestination(t *testing.T) {
	for i, want := range map[int]string{0: "127.1.0.1:80", 249: "127.1.0.250:80", 250: "127.1.1.1:80", 4999: "127.1.19.250:80", 62500: "127.2.0.1:80"} {
		if got := destination(i, 80); got != want {
			t.Errorf("destination(%d) = %s, want %s", i, got, want)
		}
	}
}

func TestProcessName(t *testing.T) {
	// 50,000 processes under 10,000 names: five in a row share one.
	for p, want := range map[int]string{0: "w00000", 4: "w00000", 5: "w00001", 49999: "w09999"} {
		if got := processName(p, 50000, 10000); got != want {
			t.Errorf("processName(%d) = %s, want %s", p, got, want)
		}
	}
}

const exposition1 = `# HELP twtrace_workload_series Pairs.
# TYPE twtrace_workload_series gauge
twtrace_workload_series 500
twtrace_losses_total{kind="folded_series"} 1234
twtrace_losses_total{kind="lost_records"} 2
twtrace_losses_total{kind="missed_runs"} 3
twtrace_losses_total{kind="cri_failures"} 7
twtrace_connect_attempts_total{comm="a b}",daddr="127.1.0.1"} 9
go_goroutines 12
`

func TestReadExposition(t *testing.T) {
	got := readExposition([]byte(exposition1))
	want := exposition{samples: 6, workloads: 500, folded: 1234, lost: 5}
	if got.other {
		t.Error("no comm=\"other\" series, but other is set")
	}
	if got != want {
		t.Errorf("readExposition = %+v, want %+v", got, want)
	}
}

func TestReadExpositionOther(t *testing.T) {
	got := readExposition([]byte("twtrace_workload_series 3\ntwtrace_connect_attempts_total{comm=\"other\",daddr=\"\"} 9\n"))
	if !got.other || got.workloads != 3 || labelledSeries(sample{workloads: 3, other: true}) != 2 {
		t.Errorf("readExposition = %+v", got)
	}
}

func TestSplitSample(t *testing.T) {
	for line, want := range map[string]struct {
		series string
		v      float64
		ok     bool
	}{
		"twtrace_x 1.5\n":                 {"twtrace_x", 1.5, true},
		`twtrace_x{a="} }"} 2 1700000000`: {`twtrace_x{a="} }"}`, 2, true},
		"twtrace_x":                       {"", 0, false},
		"twtrace_x NaN":                   {"", 0, false},
		"twtrace_x{a=\"\"} ":              {"", 0, false},
	} {
		s, v, ok := splitSample(line)
		if s != want.series || v != want.v || ok != want.ok {
			t.Errorf("splitSample(%q) = %q, %v, %v; want %q, %v, %v", line, s, v, ok, want.series, want.v, want.ok)
		}
	}
}

func TestServingAddress(t *testing.T) {
	line := "time=2026-12-04T20:14:46.508Z level=INFO msg=serving address=127.0.0.1:39081 version=devel"
	if got, ok := servingAddress(line); !ok || got != "127.0.0.1:39081" {
		t.Errorf("servingAddress = %q, %v", got, ok)
	}
	if got, ok := servingAddress(`level=INFO msg="Listening on" address=127.0.0.1:1`); ok {
		t.Errorf("servingAddress of another line = %q", got)
	}
}

func TestSummarizeSamples(t *testing.T) {
	const mb = 1 << 20
	var ss []sample
	for i := range 20 {
		phase := "churn"
		switch {
		case i < 2:
			phase = "baseline"
		case i >= 16:
			phase = "cooldown"
		}
		ss = append(ss, sample{at: time.Duration(i) * time.Second, phase: phase, rss: int64(20+i) * mb,
			scrape: time.Duration(i+1) * time.Millisecond, samples: 30 + i%3, workloads: i % 7,
			churn: progress{processes: int64(i)}, cpu: time.Duration(i) * 100 * time.Millisecond})
	}
	m := summarizeSamples(ss)
	if m.rssAt != [5]int64{21 * mb, 24 * mb, 29 * mb, 34 * mb, 39 * mb} {
		t.Errorf("rssAt = %v", m.rssAt)
	}
	// Churn: samples 2..15; its middle is sample 9, its end sample 15.
	if m.rssMid != 29*mb || m.rssChurnEnd != 35*mb || m.churnTime != 13*time.Second || m.cpuChurn != 1300*time.Millisecond {
		t.Errorf("churn: mid %d end %d time %s cpu %s", m.rssMid, m.rssChurnEnd, m.churnTime, m.cpuChurn)
	}
	if m.scrapeMax != 20*time.Millisecond || m.scrapeP99 != 20*time.Millisecond {
		t.Errorf("scrape max %s p99 %s", m.scrapeMax, m.scrapeP99)
	}
	if m.samplesMax != 32 || m.workloadsMax != 6 || m.baseline != 30 || m.final != 31 || m.finalWL != 5 {
		t.Errorf("series: %+v", m)
	}
	if summarizeSamples(nil) != (summary{}) {
		t.Error("no samples: want a zero summary")
	}
}

func FuzzParseProgress(f *testing.F) {
	for _, s := range []string{"progress 1 2 3", "done 50000 2000000 0", "progress -1 2 3", "", "done 1 2 99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, ok := parseProgress(s)
		if ok {
			if q, ok2 := parseProgress(p.String()); !ok2 || q != p {
				t.Errorf("%q: %+v does not round-trip", s, p)
			}
		}
	})
}

func FuzzReadExposition(f *testing.F) {
	f.Add(exposition1)
	f.Add("twtrace_x}{ 1\ntwtrace_\n}")
	f.Add(`twtrace_losses_total{kind="lost_records"} 1e300`)
	f.Fuzz(func(t *testing.T, s string) {
		e := readExposition([]byte(s))
		if e.samples < 0 || e.samples > len(s) {
			t.Errorf("%d samples in %d bytes", e.samples, len(s))
		}
		servingAddress(s)
	})
}
