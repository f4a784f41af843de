package agent

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/live"
	"github.com/twtrace/twtrace/pkg/report"
)

// The label names. Kubernetes names are OpenTelemetry's: a PodMonitor
// adds namespace, pod and container for the agent's own pod.
var (
	workloadLabels  = []string{"comm", "k8s_namespace_name", "k8s_pod_name", "k8s_container_name", "daddr", "dport"}
	destLabels      = []string{"netns", "saddr", "daddr", "dport", "k8s_namespace_name", "k8s_pod_name"}
	namespaceLabels = []string{"netns", "k8s_namespace_name", "k8s_pod_name"}
)

func with(labels []string, more ...string) []string {
	return append(append([]string{}, labels...), more...)
}

// The metric families the agent exposes (docs/agent.md lists them).
var (
	descConnects = prometheus.NewDesc("twtrace_connect_attempts_total",
		"connect() attempts by the workload toward the destination.", workloadLabels, nil)
	descTimewait = prometheus.NewDesc("twtrace_timewait_entries_total",
		"Connections of the workload that entered TIME_WAIT (each holds its port for 60 s), by the role of the side that closed first.", with(workloadLabels, "role"), nil)
	descConnectErrors = prometheus.NewDesc("twtrace_connect_errors_total",
		"connect() calls that failed for want of a local port toward the destination.", with(workloadLabels, "errno"), nil)
	descBindErrors = prometheus.NewDesc("twtrace_bind_errors_total",
		"bind() calls that failed for want of a local port (needs --events bind_error).", with(workloadLabels, "errno"), nil)
	descOverflows = prometheus.NewDesc("twtrace_timewait_overflows_total",
		"Connections closed first that got no TIME_WAIT socket: tcp_max_tw_buckets was reached (precise tier).", workloadLabels, nil)
	descReuses = prometheus.NewDesc("twtrace_timewait_reuses_total",
		"connect() calls that took over a TIME_WAIT socket's 4-tuple under tcp_tw_reuse (precise tier).", workloadLabels, nil)
	descPerRequest = prometheus.NewDesc("twtrace_per_request_connections",
		"1 when the workload opens a connection per request toward the destination (reuse connections: a pool, keep-alive).", workloadLabels, nil)

	descCallSite = prometheus.NewDesc("twtrace_per_request_call_site",
		"1 for the line of code that opens most of a per-request workload's connections toward the destination (from sampled connect() stacks), and the client library its stack shows.", with(workloadLabels, "call_site", "client_library"), nil)

	descAvailable = prometheus.NewDesc("twtrace_destination_ports_available",
		"Ports connect() can still pick toward the destination from the source address.", destLabels, nil)
	descUsable = prometheus.NewDesc("twtrace_destination_ports_usable",
		"Ports connect() could pick toward the destination with none in use: the range minus reserved and bound ports.", destLabels, nil)
	descDestTimewait = prometheus.NewDesc("twtrace_destination_timewait_sockets",
		"TIME_WAIT sockets toward the destination from the source address now.", destLabels, nil)
	descExhaustion = prometheus.NewDesc("twtrace_destination_exhaustion_seconds",
		"Seconds until connect() toward the destination starts failing if the TIME_WAIT rate holds; present only while heading for exhaustion.", destLabels, nil)

	descNsTimewait = prometheus.NewDesc("twtrace_namespace_timewait_sockets",
		"TIME_WAIT sockets in the network namespace now.", namespaceLabels, nil)
	descNsUsable = prometheus.NewDesc("twtrace_namespace_ports_usable",
		"Ephemeral ports connect() can use toward a destination with none in use: the range minus reserved and bound ports.", namespaceLabels, nil)
	descNsUsage = prometheus.NewDesc("twtrace_namespace_port_usage_max_ratio",
		"The highest port usage (1 - available/usable, 0 to 1) of any destination in the network namespace.", namespaceLabels, nil)
	descNsTW = prometheus.NewDesc("twtrace_namespace_timewait_created_total",
		"TcpExt TW: TIME_WAIT sockets the namespace created.", namespaceLabels, nil)
	descNsRecycled = prometheus.NewDesc("twtrace_namespace_timewait_recycled_total",
		"TcpExt TWRecycled: TIME_WAIT sockets the namespace recycled.", namespaceLabels, nil)
	descNsOverflow = prometheus.NewDesc("twtrace_namespace_timewait_overflow_total",
		"TcpExt TCPTimeWaitOverflow: connections closed without a TIME_WAIT socket, the table being full.", namespaceLabels, nil)

	descLosses = prometheus.NewDesc("twtrace_losses_total",
		"What twtrace dropped, folded or could not tell, by kind (docs/agent.md).", []string{"kind"}, nil)
	descBuild = prometheus.NewDesc("twtrace_build_info",
		"1, labelled with twtrace's version and the kernel hooks' tier.", []string{"version", "tier"}, nil)
	descScan = prometheus.NewDesc("twtrace_inventory_scan_duration_seconds",
		"What the last read of the sockets of every network namespace cost (the walk, the join, the headroom).", nil, nil)
	descReadTime = prometheus.NewDesc("twtrace_inventory_read_timestamp_seconds",
		"When the sockets were last read (--inventory-cpu): the time of the timewait and headroom gauges.", nil, nil)
	descSeries = prometheus.NewDesc("twtrace_workload_series",
		"Workload x destination pairs exposed now (at most --max-series, plus the folded one).", nil, nil)
	descDestinations = prometheus.NewDesc("twtrace_destinations",
		"Destinations (namespace, source and destination address, port) with sockets now; the --max-destinations with the least headroom are exposed.", nil, nil)
)

var allDescs = []*prometheus.Desc{
	descConnects, descTimewait, descConnectErrors, descBindErrors, descOverflows, descReuses, descPerRequest, descCallSite,
	descAvailable, descUsable, descDestTimewait, descExhaustion,
	descNsTimewait, descNsUsable, descNsUsage, descNsTW, descNsRecycled, descNsOverflow,
	descLosses, descBuild, descScan, descReadTime, descSeries, descDestinations,
}

// exposition builds one frame's metrics.
type exposition struct {
	out []prometheus.Metric
}

func (e *exposition) add(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
	e.out = append(e.out, prometheus.MustNewConstMetric(d, t, v, labels...))
}

var roleNames = [3]string{event.RoleUnknown: "unknown", event.RoleClient: "client", event.RoleServer: "server"}

// workloads adds the series of every workload x destination pair; a
// family's series appears at its first count.
func (e *exposition) workloads(t *seriesTable) {
	emit := func(w pair, s *tally) {
		l := []string{w.comm, w.namespace, w.pod, w.container, w.daddr, w.dport}
		if s.Connects > 0 {
			e.add(descConnects, prometheus.CounterValue, float64(s.Connects), l...)
		}
		for role, n := range s.Roles {
			if n > 0 {
				e.add(descTimewait, prometheus.CounterValue, float64(n), with(l, roleNames[role])...)
			}
		}
		if s.ConnectErrors > 0 {
			e.add(descConnectErrors, prometheus.CounterValue, float64(s.ConnectErrors), with(l, "EADDRNOTAVAIL")...)
		}
		if s.BindErrors > 0 {
			e.add(descBindErrors, prometheus.CounterValue, float64(s.BindErrors), with(l, "EADDRINUSE")...)
		}
		if s.TimewaitOverflow > 0 {
			e.add(descOverflows, prometheus.CounterValue, float64(s.TimewaitOverflow), l...)
		}
		if s.TimewaitReused > 0 {
			e.add(descReuses, prometheus.CounterValue, float64(s.TimewaitReused), l...)
		}
		if cs, ok := t.perRequest[w]; ok {
			e.add(descPerRequest, prometheus.GaugeValue, 1, l...)
			if cs != (site{}) {
				e.add(descCallSite, prometheus.GaugeValue, 1, with(l, cs.callSite, cs.library)...)
			}
		}
	}
	for w, s := range t.m {
		emit(w, s)
	}
	if t.other != (tally{}) {
		emit(other, &t.other)
	}
}

// destinations adds the gauges of the maxDest destinations with the
// least headroom (f's order: soonest exhaustion first) and of every
// namespace.
func (e *exposition) destinations(f *live.Frame, maxDest int) {
	pods := map[uint32][2]string{}
	for i := range f.Namespaces {
		if o := f.Namespaces[i].Owner; o != nil {
			pods[f.Namespaces[i].Netns] = [2]string{o.PodNamespace, o.Pod}
		}
	}
	usage := map[uint32]float64{}
	for i := range f.Destinations {
		d := &f.Destinations[i]
		if d.PortsUsable > 0 {
			usage[d.Netns] = max(usage[d.Netns], 1-float64(d.PortsAvailable)/float64(d.PortsUsable))
		}
		if i >= maxDest {
			continue
		}
		netns := strconv.FormatUint(uint64(d.Netns), 10)
		p := pods[d.Netns]
		l := []string{netns, d.Saddr.String(), d.Daddr.String(), strconv.Itoa(int(d.Dport)), p[0], p[1]}
		e.add(descAvailable, prometheus.GaugeValue, float64(d.PortsAvailable), l...)
		e.add(descUsable, prometheus.GaugeValue, float64(d.PortsUsable), l...)
		e.add(descDestTimewait, prometheus.GaugeValue, float64(d.Timewait), l...)
		if d.ExhaustionInS != nil {
			e.add(descExhaustion, prometheus.GaugeValue, *d.ExhaustionInS, l...)
		}
	}
	for i := range f.Namespaces {
		ns := &f.Namespaces[i]
		p := pods[ns.Netns]
		l := []string{strconv.FormatUint(uint64(ns.Netns), 10), p[0], p[1]}
		e.add(descNsTimewait, prometheus.GaugeValue, float64(ns.Timewait), l...)
		e.add(descNsUsable, prometheus.GaugeValue, float64(ns.Usable), l...)
		e.add(descNsUsage, prometheus.GaugeValue, usage[ns.Netns], l...)
		e.add(descNsTW, prometheus.CounterValue, float64(ns.TW), l...)
		e.add(descNsRecycled, prometheus.CounterValue, float64(ns.TWRecycled), l...)
		e.add(descNsOverflow, prometheus.CounterValue, float64(ns.TCPTimeWaitOverflow), l...)
	}
	e.add(descDestinations, prometheus.GaugeValue, float64(len(f.Destinations)))
}

// losses adds twtrace_losses_total, one series per kind (docs/json.md's
// losses keys, and folded_series).
func (e *exposition) losses(l *report.Losses, foldedSeries uint64) {
	for _, k := range []struct {
		kind string
		n    uint64
	}{
		{"lost_records", l.Records}, {"untracked_sockets", l.Untracked}, {"missed_runs", l.Missed},
		{"uncounted_connects", l.UncountedConnects}, {"folded_events", l.FoldedEvents},
		{"join_refused", l.JoinRefused}, {"uncounted_processes", l.UncountedProcesses},
		{"unresolved_owners", l.UnresolvedOwners}, {"cri_failures", l.CRIFailures},
		{"unknown_parents", l.UnknownParents}, {"lost_stacks", l.LostStacks},
		{"unresolved_stacks", l.UnresolvedStacks}, {"unprobed_http_callers", l.UnprobedHTTPCallers},
		{"folded_series", foldedSeries},
	} {
		e.add(descLosses, prometheus.CounterValue, float64(k.n), k.kind)
	}
}
