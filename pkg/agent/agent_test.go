package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/filter"
	"github.com/twtrace/twtrace/pkg/tracer"
)

func TestMain(m *testing.M) {
	testnet.RunClientIfAsked()
	os.Exit(m.Run())
}

// running is an agent serving in the background.
type running struct {
	a    *Agent
	url  string
	stop func()
}

// startAgent runs an agent that traces ns only, refreshing every second,
// and waits until it is ready.
func startAgent(t *testing.T, ns *testnet.Netns, set func(*Config)) *running {
	t.Helper()
	return startAgentIn(t, ns.Inode, set)
}

// startAgentIn is startAgent for the namespace of that inode; 0: every
// namespace.
func startAgentIn(t *testing.T, netns uint32, set func(*Config)) *running {
	t.Helper()
	testnet.RequireBPF(t, tracer.Preflight)
	var only []string
	if netns != 0 {
		only = []string{strconv.FormatUint(uint64(netns), 10)}
	}
	flt, err := filter.Parse(filter.Options{Netns: only, Events: "timewait,connect_error"})
	if err != nil {
		t.Fatal(err)
	}
	// Every refresh reads the sockets: the tests hold each scrape's gauges
	// to the kernel's.
	cfg := Config{Listen: "127.0.0.1:0", Interval: time.Second, InventoryCPU: 1, MaxSeries: DefaultMaxSeries,
		SeriesTTL: DefaultSeriesTTL, MaxDestinations: DefaultMaxDestinations, Filter: flt, Netns: netns, Version: "test"}
	if set != nil {
		set(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	r := &running{a: a, url: "http://" + a.Addr().String()}
	r.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}
	t.Cleanup(func() {
		if ctx.Err() == nil {
			r.stop()
		}
	})
	if !testnet.WaitFor(30*time.Second, func() bool { return r.status(t, "/readyz") == http.StatusOK }) {
		t.Fatalf("/readyz never answered 200")
	}
	return r
}

func (r *running) status(t *testing.T, path string) int {
	resp, err := http.Get(r.url + path)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// scrape returns every sample of /metrics as "name{label=value,...}"
// (labels sorted by name) -> value.
func (r *running) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := http.Get(r.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	out := map[string]float64{}
	for name, mf := range mfs {
		for _, m := range mf.Metric {
			out[name+labelString(m)] = value(m)
		}
	}
	return out
}

// workloadSeries is a workload x destination series' name in scrape's
// keys, for a process outside any pod.
func workloadSeries(name, comm, dest string, extra ...string) string {
	host, port, _ := strings.Cut(dest, ":")
	l := append([]string{"comm=" + comm, "daddr=" + host, "dport=" + port}, extra...)
	l = append(l, "k8s_container_name=", "k8s_namespace_name=", "k8s_pod_name=")
	sortLabels(l)
	return name + "{" + strings.Join(l, ",") + "}"
}

func sortLabels(l []string) {
	for i := 1; i < len(l); i++ {
		for j := i; j > 0 && l[j] < l[j-1]; j-- {
			l[j], l[j-1] = l[j-1], l[j]
		}
	}
}

func destSeries(name string, netns uint32, dest string) string {
	host, port, _ := strings.Cut(dest, ":")
	return fmt.Sprintf("%s{daddr=%s,dport=%s,k8s_namespace_name=,k8s_pod_name=,netns=%d,saddr=%s}", name, host, port, netns, host)
}

// The check, scraped: a churner (30 connections, closed first)
// and a client that runs its destination out of ports (94 connections
// made, 6 EADDRNOTAVAIL) in a namespace of known headroom. /metrics has
// their exact counters, each destination's exact headroom, and the
// namespace's usage ratio at 1 (a destination has no port left).
func TestAgentExactCounts(t *testing.T) {
	ns, srv := testnet.NewSmallRange(t, 2)
	r := startAgent(t, ns, nil)
	churner := testnet.StartClient(t, ns, testnet.ClientSpec{Comm: "churner", Dest: srv[0].Dest(false), N: 30})
	full := testnet.StartClient(t, ns, testnet.ClientSpec{Comm: "exhauster", Dest: srv[1].Dest(false), N: 100})
	if len(churner.Ports) != 30 || len(full.Ports) != 94 || full.Failures != 6 {
		t.Fatalf("clients: %d connections; %d and %d failures; want 30; 94 and 6", len(churner.Ports), len(full.Ports), full.Failures)
	}
	a, b := srv[0].Dest(false), srv[1].Dest(false)
	want := map[string]float64{
		workloadSeries("twtrace_timewait_entries_total", "churner", a, "role=client"):                               30,
		workloadSeries("twtrace_connect_attempts_total", "churner", a):                                              30,
		workloadSeries("twtrace_per_request_connections", "churner", a):                                             1,
		workloadSeries("twtrace_timewait_entries_total", "exhauster", b, "role=client"):                             94,
		workloadSeries("twtrace_connect_attempts_total", "exhauster", b):                                            100,
		workloadSeries("twtrace_connect_errors_total", "exhauster", b, "errno=EADDRNOTAVAIL"):                       6,
		destSeries("twtrace_destination_timewait_sockets", ns.Inode, a):                                             30,
		destSeries("twtrace_destination_ports_available", ns.Inode, a):                                              64,
		destSeries("twtrace_destination_ports_usable", ns.Inode, a):                                                 testnet.SmallRangeUsable,
		destSeries("twtrace_destination_timewait_sockets", ns.Inode, b):                                             94,
		destSeries("twtrace_destination_ports_available", ns.Inode, b):                                              0,
		fmt.Sprintf("twtrace_namespace_port_usage_max_ratio{k8s_namespace_name=,k8s_pod_name=,netns=%d}", ns.Inode): 1,
		fmt.Sprintf("twtrace_namespace_timewait_sockets{k8s_namespace_name=,k8s_pod_name=,netns=%d}", ns.Inode):     124,
		fmt.Sprintf("twtrace_namespace_ports_usable{k8s_namespace_name=,k8s_pod_name=,netns=%d}", ns.Inode):         testnet.SmallRangeUsable,
		"twtrace_workload_series{}": 2,
	}
	var got map[string]float64
	settled := testnet.WaitFor(20*time.Second, func() bool {
		got = r.scrape(t)
		for k, v := range want {
			if got[k] != v {
				return false
			}
		}
		return true
	})
	if !settled {
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %v, want %v", k, got[k], v)
			}
		}
	}
	// unknown_parents is host-wide: any process forked on the host while
	// the fork hook was being attached counts when it acts (other builds
	// and tests run beside this one).
	for k, v := range got {
		if strings.HasPrefix(k, "twtrace_losses_total") && k != "twtrace_losses_total{kind=unknown_parents}" && v != 0 {
			t.Errorf("%s = %v, want no loss", k, v)
		}
	}
}

// A per-request workload's call site, from top's sampling of connect()
// stacks: twtrace_per_request_call_site names the exact line of its
// net.Dial call beside the per-request gauge.
func TestAgentCallSite(t *testing.T) {
	ns, srv := testnet.NewSmallRange(t, 1)
	r := startAgent(t, ns, func(c *Config) { c.Stacks = 64 })
	cl := testnet.StartClient(t, ns, testnet.ClientSpec{Comm: "dialer", Dest: srv[0].Dest(false), N: 30, NetDial: true})
	if len(cl.Ports) != 30 {
		t.Fatalf("client made %d connections, want 30", len(cl.Ports))
	}
	fn, file, line := testnet.DialCallSite()
	a := srv[0].Dest(false)
	key := workloadSeries("twtrace_per_request_call_site", "dialer", a,
		fmt.Sprintf("call_site=%s (%s:%d)", fn, file, line), "client_library=")
	var got map[string]float64
	if !testnet.WaitFor(20*time.Second, func() bool {
		got = r.scrape(t)
		return got[key] == 1 && got[workloadSeries("twtrace_per_request_connections", "dialer", a)] == 1
	}) {
		var have []string
		for k := range got {
			if strings.HasPrefix(k, "twtrace_per_request") {
				have = append(have, k)
			}
		}
		t.Errorf("no %s = 1; the per-request series: %v", key, have)
	}
}
