package agent

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/aggregate"
	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/live"
	"github.com/twtrace/twtrace/pkg/report"
	"github.com/twtrace/twtrace/pkg/verdict"
	"github.com/twtrace/twtrace/pkg/workload"
)

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

// row is a client row of pid's comm toward dst with recent counts.
func row(pid uint32, comm, dst string, recent aggregate.Counts) live.Row {
	ap := netip.MustParseAddrPort(dst)
	return live.Row{
		Key:    aggregate.Key{Group: workload.Group{PID: pid}, Netns: 1, Daddr: ap.Addr(), Port: ap.Port()},
		Recent: recent, Counts: recent, Comm: comm, PID: pid,
	}
}

func timewaits(n uint64) aggregate.Counts {
	return aggregate.Counts{Connects: n, Timewait: n, Roles: [3]uint64{event.RoleClient: n}}
}

// testAgent is an agent that is not running: tests feed it frames.
func testAgent(t *testing.T, maxSeries int, ttl time.Duration, maxDest int) *Agent {
	t.Helper()
	a, err := New(Config{Listen: "127.0.0.1:0", MaxSeries: maxSeries, SeriesTTL: ttl, MaxDestinations: maxDest, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.ln.Close() })
	return a
}

// gather returns every twtrace_ sample as "name{labels} value" lines,
// after checking the exposition with promlint.
func gather(t *testing.T, a *Agent) map[string]float64 {
	t.Helper()
	mfs, err := a.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "twtrace_") {
			continue
		}
		for _, m := range mf.Metric {
			out[mf.GetName()+labelString(m)] = value(m)
		}
	}
	return out
}

func labelString(m *dto.Metric) string {
	var b strings.Builder
	b.WriteString("{")
	for i, l := range m.Label {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(l.GetName() + "=" + l.GetValue())
	}
	b.WriteString("}")
	return b.String()
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return -1
}

const curlTo = "comm=curl,daddr=10.0.0.9,dport=80,k8s_container_name=api,k8s_namespace_name=shop,k8s_pod_name=web-1"

// TestSeriesSumFoldExpire: rows with one label set sum into one series;
// counters grow by each frame's recent counts; pairs beyond MaxSeries
// fold into comm="other" and are counted; a series quiet longer than the
// TTL disappears while others stay; the exposition is promlint-clean.
func TestSeriesSumFoldExpire(t *testing.T) {
	a := testAgent(t, 2, time.Minute, 50)
	owner := workload.Identity{PodNamespace: "shop", Pod: "web-1", Container: "api"}
	r1, r2 := row(10, "curl", "10.0.0.9:80", timewaits(3)), row(11, "curl", "10.0.0.9:80", timewaits(4))
	r1.Owner, r2.Owner = owner, owner
	r1.Verdict.Verdict = verdict.PerRequest
	wget := row(12, "wget", "10.0.0.8:443", aggregate.Counts{Connects: 2, ConnectErrors: 2})
	bind := row(13, "nc", "0.0.0.0:0", aggregate.Counts{BindErrors: 1})
	f := &live.Frame{Time: t0, Rows: []live.Row{r1, r2, wget, bind, {Other: true, Recent: timewaits(5)}}}
	if err := a.update(f); err != nil {
		t.Fatal(err)
	}
	got := gather(t, a)
	for name, want := range map[string]float64{
		"twtrace_timewait_entries_total{" + curlTo + ",role=client}": 7,
		"twtrace_connect_attempts_total{" + curlTo + "}":             7,
		"twtrace_per_request_connections{" + curlTo + "}":            1,
		"twtrace_connect_errors_total{comm=wget,daddr=10.0.0.8,dport=443,errno=EADDRNOTAVAIL,k8s_container_name=,k8s_namespace_name=,k8s_pod_name=}": 2,
		// nc's bind error found the table full (two pairs): other, with
		// the engine's own Other row's 5 timewaits.
		"twtrace_bind_errors_total{comm=other,daddr=,dport=,errno=EADDRINUSE,k8s_container_name=,k8s_namespace_name=,k8s_pod_name=}": 1,
		"twtrace_timewait_entries_total{comm=other,daddr=,dport=,k8s_container_name=,k8s_namespace_name=,k8s_pod_name=,role=client}": 5,
		"twtrace_losses_total{kind=folded_series}":   1,
		"twtrace_workload_series{}":                  3,
		"twtrace_build_info{tier=auto,version=test}": 1,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}

	// 30 s later: curl again (+2), wget quiet; 61 s after wget's last
	// count, its series is gone and curl's counter has grown to 9.
	r1.Recent, r2.Recent = timewaits(2), aggregate.Counts{}
	wget.Recent = aggregate.Counts{}
	a.update(&live.Frame{Time: t0.Add(30 * time.Second), Rows: []live.Row{r1, r2, wget}})
	a.update(&live.Frame{Time: t0.Add(61 * time.Second), Rows: []live.Row{r2, wget}})
	got = gather(t, a)
	if v := got["twtrace_timewait_entries_total{"+curlTo+",role=client}"]; v != 9 {
		t.Errorf("curl's timewait counter = %v, want 9", v)
	}
	for name := range got {
		if strings.Contains(name, "comm=wget") {
			t.Errorf("wget's series survived its TTL: %s", name)
		}
	}
	if _, ok := got["twtrace_per_request_connections{"+curlTo+"}"]; ok {
		t.Error("the per-request gauge stayed after a frame without the verdict")
	}
	if got["twtrace_workload_series{}"] != 2 {
		t.Errorf("series = %v, want curl's and other", got["twtrace_workload_series{}"])
	}
}

// TestLabelsOf: a comm that is not UTF-8 is made valid; a bind row has
// no destination labels; server rows keep the local port as dport.
func TestLabelsOf(t *testing.T) {
	r := row(1, "a\xffb", "10.0.0.1:8080", timewaits(1))
	r.Key.Server = true
	if w := labelsOf(&r); w.comm != "a\uFFFDb" || w.daddr != "10.0.0.1" || w.dport != "8080" {
		t.Errorf("labels %+v", w)
	}
	b := row(2, "nc", "0.0.0.0:0", aggregate.Counts{BindErrors: 1})
	b.Key.Daddr = netip.Addr{}
	if w := labelsOf(&b); w.daddr != "" || w.dport != "" {
		t.Errorf("bind labels %+v, want no destination", w)
	}
}

// TestDestinationGauges: the first maxDest destinations of the frame
// (its order: soonest exhaustion first), exhaustion only where set, the
// namespace's highest usage over all its destinations, the pod that owns
// the namespace.
func TestDestinationGauges(t *testing.T) {
	a := testAgent(t, 10, time.Minute, 1)
	secs := 120.0
	d := func(port uint16, avail int, ex *float64) report.LiveDestination {
		return report.LiveDestination{Destination: report.Destination{Netns: 7, Saddr: netip.MustParseAddr("10.1.0.5"),
			Daddr: netip.MustParseAddr("10.2.0.1"), Dport: port, Timewait: 94 - avail, PortsAvailable: avail, PortsUsable: 94}, ExhaustionInS: ex}
	}
	f := &live.Frame{Time: t0,
		Destinations: []report.LiveDestination{d(443, 47, &secs), d(80, 1, nil)},
		Namespaces: []report.Namespace{{Netns: 7, Usable: 94, Timewait: 140, TW: 1000, TWRecycled: 3, TCPTimeWaitOverflow: 2,
			Owner: &workload.Identity{PodNamespace: "shop", Pod: "web-1"}}},
	}
	a.update(f)
	got := gather(t, a)
	dl := "{daddr=10.2.0.1,dport=443,k8s_namespace_name=shop,k8s_pod_name=web-1,netns=7,saddr=10.1.0.5}"
	nl := "{k8s_namespace_name=shop,k8s_pod_name=web-1,netns=7}"
	for name, want := range map[string]float64{
		"twtrace_destination_ports_available" + dl:       47,
		"twtrace_destination_ports_usable" + dl:          94,
		"twtrace_destination_timewait_sockets" + dl:      47,
		"twtrace_destination_exhaustion_seconds" + dl:    120,
		"twtrace_namespace_port_usage_max_ratio" + nl:    1 - 1.0/94,
		"twtrace_namespace_timewait_sockets" + nl:        140,
		"twtrace_namespace_ports_usable" + nl:            94,
		"twtrace_namespace_timewait_created_total" + nl:  1000,
		"twtrace_namespace_timewait_recycled_total" + nl: 3,
		"twtrace_namespace_timewait_overflow_total" + nl: 2,
		"twtrace_destinations{}":                         2,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
	for name := range got {
		if strings.Contains(name, "dport=80,") {
			t.Errorf("a destination beyond --max-destinations 1 was exposed: %s", name)
		}
	}
}

// TestSeriesWaitForNames: a pod's row the CRI has not named yet holds
// its counts; named a frame later, the series has them all under the
// names. A pod never named goes without the names after nameGrace.
func TestSeriesWaitForNames(t *testing.T) {
	a := testAgent(t, 10, time.Hour, 50)
	r := row(10, "nc", "10.0.0.9:80", timewaits(3))
	r.Owner = workload.Identity{PodUID: "u1", ContainerID: "c1"}
	a.update(&live.Frame{Time: t0, Rows: []live.Row{r}})
	if got := gather(t, a); len(filterPrefix(got, "twtrace_timewait_entries_total")) != 0 {
		t.Fatalf("an unnamed pod's counts were exposed: %v", got)
	}
	r.Owner.Pod, r.Owner.PodNamespace, r.Owner.Container = "web-1", "shop", "api"
	r.Recent = timewaits(2)
	a.update(&live.Frame{Time: t0.Add(time.Second), Rows: []live.Row{r}})
	named := "twtrace_timewait_entries_total{comm=nc,daddr=10.0.0.9,dport=80,k8s_container_name=api,k8s_namespace_name=shop,k8s_pod_name=web-1,role=client}"
	if got := gather(t, a); got[named] != 5 || len(filterPrefix(got, "twtrace_timewait_entries_total")) != 1 {
		t.Errorf("after the names: %v, want %s = 5 alone", filterPrefix(got, "twtrace_timewait_entries_total"), named)
	}

	never := row(11, "nc", "10.0.0.8:80", timewaits(4))
	never.Owner = workload.Identity{PodUID: "u2", ContainerID: "c2"}
	a.update(&live.Frame{Time: t0.Add(2 * time.Second), Rows: []live.Row{never}})
	never.Recent = aggregate.Counts{}
	a.update(&live.Frame{Time: t0.Add(2*time.Second + nameGrace), Rows: []live.Row{never}})
	bare := "twtrace_timewait_entries_total{comm=nc,daddr=10.0.0.8,dport=80,k8s_container_name=,k8s_namespace_name=,k8s_pod_name=,role=client}"
	if got := gather(t, a); got[bare] != 4 {
		t.Errorf("a pod never named: %s = %v, want 4 after the grace", bare, got[bare])
	}
}

func filterPrefix(m map[string]float64, prefix string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out
}

// TestLogErrorsOnce: an inventory error is logged when it starts and when
// it ends, not at every refresh.
func TestLogErrorsOnce(t *testing.T) {
	a := testAgent(t, 10, time.Minute, 10)
	var log testnet.SyncBuffer
	a.cfg.Log = slog.New(slog.NewTextHandler(&log, nil))
	for _, errs := range [][]string{{"netns 7: setns: EPERM"}, {"netns 7: setns: EPERM"}, {"netns 7: setns: EPERM", "netns 9: gone"}, nil} {
		a.update(&live.Frame{Time: t0, Errors: errs})
	}
	out := log.String()
	if strings.Count(out, "msg=inventory ") != 2 || strings.Count(out, `msg="inventory recovered"`) != 2 {
		t.Errorf("log:\n%s\nwant two errors logged once each, and their recovery", out)
	}
}
