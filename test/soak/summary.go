package main

import (
	"fmt"
	"io"
	"slices"
	"time"
)

// flatGrowth is the most RSS may grow over the churn's second half and
// still be called flat: by then the tables are full.
const flatGrowth = 0.05

// summary is what the soak concludes from its samples.
type summary struct {
	churnTime                time.Duration
	churn                    progress
	rssAt                    [5]int64 // at 10, 25, 50, 75 and 100 % of the run
	rssMax                   int64
	rssMid, rssChurnEnd      int64 // at half the churn and at its end
	growth                   float64
	scrapeMax, scrapeP99     time.Duration
	samplesMax, workloadsMax int
	baseline, final          int // twtrace_* sample lines before the churn and at the end
	baselineWL, finalWL      int // workload series, the folded one not counted
	folded, lost             int64
	cpuChurn                 time.Duration
}

var percents = [5]int{10, 25, 50, 75, 100}

func summarizeSamples(ss []sample) summary {
	var m summary
	if len(ss) == 0 {
		return m
	}
	for i, p := range percents {
		m.rssAt[i] = ss[max(0, (len(ss)*p+99)/100-1)].rss
	}
	var scrapes []time.Duration
	var churn []sample
	for _, s := range ss {
		m.rssMax = max(m.rssMax, s.rss)
		m.samplesMax = max(m.samplesMax, s.samples)
		m.workloadsMax = max(m.workloadsMax, s.workloads)
		scrapes = append(scrapes, s.scrape)
		if s.phase == "churn" {
			churn = append(churn, s)
		}
	}
	slices.Sort(scrapes)
	m.scrapeMax = scrapes[len(scrapes)-1]
	m.scrapeP99 = scrapes[max(0, (len(scrapes)*99+99)/100-1)]
	first, last := ss[0], ss[len(ss)-1]
	m.baseline, m.baselineWL = first.samples, labelledSeries(first)
	m.final, m.finalWL = last.samples, labelledSeries(last)
	m.folded, m.lost = last.folded, last.lost
	if len(churn) > 0 {
		c0, c1 := churn[0], churn[len(churn)-1]
		m.churnTime, m.churn = c1.at-c0.at, c1.churn
		m.cpuChurn = c1.cpu - c0.cpu
		m.rssMid, m.rssChurnEnd = churn[len(churn)/2].rss, c1.rss
		if m.rssMid > 0 {
			m.growth = float64(m.rssChurnEnd-m.rssMid) / float64(m.rssMid)
		}
	}
	return m
}

// labelledSeries are s's workload series but the folded one: that one
// is cumulative counters of workloads that had no series of their own,
// and stays, as counters do (one series per family, whatever the churn).
func labelledSeries(s sample) int {
	if s.other {
		return max(0, s.workloads-1)
	}
	return s.workloads
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func summarize(w io.Writer, cfg config, ss []sample) {
	if len(ss) == 0 {
		return
	}
	m := summarizeSamples(ss)
	fmt.Fprintf(w, "churn: %d processes (%d names), %d connections, %d errors toward %d destinations in %s (%.0f conn/s)\n",
		m.churn.processes, cfg.names, m.churn.connections, m.churn.errors, cfg.destinations,
		m.churnTime.Round(time.Second), float64(m.churn.connections)/max(m.churnTime.Seconds(), 1))
	fmt.Fprintf(w, "agent CPU during the churn: %s (%.0f %% of one CPU)\n",
		m.cpuChurn.Round(10*time.Millisecond), 100*m.cpuChurn.Seconds()/max(m.churnTime.Seconds(), 1))
	fmt.Fprintf(w, "RSS at 10/25/50/75/100 %% of the run: %s / %s / %s / %s / %s; max %s\n",
		mib(m.rssAt[0]), mib(m.rssAt[1]), mib(m.rssAt[2]), mib(m.rssAt[3]), mib(m.rssAt[4]), mib(m.rssMax))
	verdict := "flat"
	if m.growth >= flatGrowth {
		verdict = "NOT flat"
	}
	fmt.Fprintf(w, "RSS over the churn's second half: %s -> %s (%+.1f %%): %s (limit +%.0f %%)\n",
		mib(m.rssMid), mib(m.rssChurnEnd), 100*m.growth, verdict, 100*flatGrowth)
	fmt.Fprintf(w, "scrape: max %s, p99 %s over %d scrapes\n", ms(m.scrapeMax), ms(m.scrapeP99), len(ss))
	fmt.Fprintf(w, "series: max %d twtrace_* samples, max %d workload series (--max-series %d); folded_series %d; lost %d\n",
		m.samplesMax, m.workloadsMax, cfg.maxSeries, m.folded, m.lost)
	if ss[len(ss)-1].phase != "cooldown" {
		fmt.Fprintln(w, "the run ended before the cooldown: no verdict on leaks")
		return
	}
	if cfg.cooldown < cfg.ttl+cfg.interval {
		fmt.Fprintf(w, "the cooldown (%s) is shorter than the series TTL (%s): no verdict on leaks\n", cfg.cooldown, cfg.ttl)
		return
	}
	// The folded comm="other" series stays (its counters hold what the
	// workloads without a series counted): up to one sample per workload
	// family (otherFamilies) above the baseline is it, not a leak.
	leak := "no leak"
	allowed := m.baseline
	if ss[len(ss)-1].other {
		allowed += otherFamilies
	}
	if m.final > allowed || m.finalWL > m.baselineWL {
		leak = "LEAK"
	}
	perMinute(w, ss)
	fmt.Fprintf(w, "after the churn and the TTL: %d twtrace_* samples (baseline %d), %d labelled workload series besides comm=\"other\" (baseline %d): %s\n",
		m.final, m.baseline, m.finalWL, m.baselineWL, leak)
}

// otherFamilies: the workload families the comm="other" series can have a
// sample in (connect attempts, timewait entries by three roles, connect and
// bind errors, overflows, reuses).
const otherFamilies = 8

// perMinute prints the curve: the last sample of each minute, with the
// minute's longest scrape.
func perMinute(w io.Writer, ss []sample) {
	fmt.Fprintln(w, "| minute | phase | processes | connections | RSS | longest scrape | twtrace_* samples | workload series | agent CPU |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	var longest time.Duration
	for i, s := range ss {
		longest = max(longest, s.scrape)
		if i+1 < len(ss) && ss[i+1].at/time.Minute == s.at/time.Minute {
			continue
		}
		fmt.Fprintf(w, "| %.1f | %s | %d | %d | %s | %s | %d | %d | %.1f s |\n", s.at.Minutes(), s.phase,
			s.churn.processes, s.churn.connections, mib(s.rss), ms(longest), s.samples, s.workloads, s.cpu.Seconds())
		longest = 0
	}
}
