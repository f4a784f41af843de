// Package report turns the socket inventory and its headroom figures into
// what twtrace prints: the JSON documents of `twtrace snapshot` and
// `twtrace top -o json` (schema in docs/json.md) and their tables.
package report

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/twtrace/twtrace/pkg/headroom"
	"github.com/twtrace/twtrace/pkg/inventory"
	"github.com/twtrace/twtrace/pkg/workload"
)

// Namespace is one network namespace's settings and totals.
type Namespace struct {
	Netns uint32 `json:"netns"`
	// PID and Comm name a process in the namespace (its lowest PID): the
	// container, for a person. Absent when no process is in it.
	PID  int    `json:"pid,omitempty"`
	Comm string `json:"comm,omitempty"`
	// Name is the namespace's name under /run/netns, if any.
	Name string `json:"name,omitempty"`
	// Owner is the container or pod that process belongs to, when one
	// does (see NameOwner).
	Owner *workload.Identity `json:"owner,omitempty"`

	PortRange     [2]uint16   `json:"port_range"`
	ReservedPorts [][2]uint16 `json:"reserved_ports"`
	// Usable is the ports connect() can pick toward a destination with
	// nothing in use: the range minus reserved and bind()/listen() ports.
	Usable           int     `json:"ports_usable"`
	ReservedInRange  int     `json:"reserved_in_range"`
	BoundInRange     int     `json:"bound_in_range"`
	TwReuse          int     `json:"tcp_tw_reuse"`
	TwReuseDelayMs   int64   `json:"tcp_tw_reuse_delay_ms"`
	MaxTwBuckets     int     `json:"tcp_max_tw_buckets"`
	FinTimeoutS      float64 `json:"tcp_fin_timeout_s"`
	TCPTimestamps    int     `json:"tcp_timestamps"`
	CeilingPerS      float64 `json:"ceiling_per_s"`
	Timewait         int     `json:"timewait"`
	FinWait2         int     `json:"fin_wait2"`
	AcceptedTimewait int     `json:"accepted_timewait"`

	// TcpExt counters, cumulative since the namespace was made.
	TW                  uint64 `json:"tw_created"`
	TWRecycled          uint64 `json:"tw_recycled"`
	TCPTimeWaitOverflow uint64 `json:"tw_overflow"`
	// Their rates between two refreshes of top; absent in a snapshot.
	TWPerS         *float64 `json:"tw_created_per_s,omitempty"`
	RecycledPerS   *float64 `json:"tw_recycled_per_s,omitempty"`
	OverflowPerS   *float64 `json:"tw_overflow_per_s,omitempty"`
	TwBucketsInUse float64  `json:"tw_buckets_used_pct"`
}

// Destination is the headroom toward one (namespace, source address,
// destination address, destination port).
type Destination struct {
	Netns          uint32     `json:"netns"`
	Saddr          netip.Addr `json:"saddr"`
	Daddr          netip.Addr `json:"daddr"`
	Dport          uint16     `json:"dport"`
	Timewait       int        `json:"timewait"`
	FinWait2       int        `json:"fin_wait2"`
	Established    int        `json:"established"`
	OtherStates    int        `json:"other_states"`
	PortsInUse     int        `json:"ports_in_use"`
	PortsAvailable int        `json:"ports_available"`
	PortsUsable    int        `json:"ports_usable"`
	// HeadroomPct is PortsAvailable as a percentage of PortsUsable.
	HeadroomPct float64 `json:"headroom_pct"`
	// TwReuse: tcp_tw_reuse applies toward this destination; then
	// PortsReusable of its timewait ports can be taken over by connect()
	// now, and PortsAvailableWithReuse counts them in.
	TwReuse                 bool    `json:"tw_reuse"`
	PortsReusable           int     `json:"ports_reusable"`
	PortsAvailableWithReuse int     `json:"ports_available_with_reuse"`
	CeilingPerS             float64 `json:"ceiling_per_s"`
	CeilingWithReusePerS    float64 `json:"ceiling_with_reuse_per_s,omitempty"`
}

// Server is the accepted side of connections on one listening port.
type Server struct {
	Netns       uint32     `json:"netns"`
	Addr        netip.Addr `json:"addr"`
	Port        uint16     `json:"port"`
	Timewait    int        `json:"timewait"`
	FinWait2    int        `json:"fin_wait2"`
	Established int        `json:"established"`
}

// Snapshot is the document of `twtrace snapshot -o json`.
type Snapshot struct {
	Time         time.Time     `json:"time"`
	Namespaces   []Namespace   `json:"namespaces"`
	Destinations []Destination `json:"destinations"`
	Servers      []Server      `json:"servers"`
	// Errors lists namespaces that could not be read (they vanished, or
	// setns was refused), one line each.
	Errors []string `json:"errors,omitempty"`
}

// FromNamespace converts one namespace's inventory and headroom figures.
func FromNamespace(ns *inventory.Namespace, r *headroom.Report) (Namespace, []Destination, []Server) {
	sc := &ns.Sysctls
	out := Namespace{
		Netns: ns.Inode, PID: ns.PID, Comm: ns.Comm, Name: ns.Name,
		PortRange:           [2]uint16{sc.PortRange.Lo, sc.PortRange.Hi},
		ReservedPorts:       [][2]uint16{},
		Usable:              r.Namespace.Usable,
		ReservedInRange:     r.Namespace.Reserved,
		BoundInRange:        r.Namespace.Bound,
		TwReuse:             sc.TwReuse,
		TwReuseDelayMs:      sc.TwReuseDelay.Milliseconds(),
		MaxTwBuckets:        sc.MaxTwBuckets,
		FinTimeoutS:         sc.FinTimeout.Seconds(),
		TCPTimestamps:       sc.Timestamps,
		CeilingPerS:         round(float64(r.Namespace.Usable)/60, 10),
		Timewait:            r.Namespace.Timewait,
		FinWait2:            r.Namespace.FinWait2,
		AcceptedTimewait:    r.Namespace.AcceptedTimewait,
		TW:                  ns.Counters.TW,
		TWRecycled:          ns.Counters.TWRecycled,
		TCPTimeWaitOverflow: ns.Counters.TCPTimeWaitOverflow,
	}
	for _, s := range sc.Reserved {
		out.ReservedPorts = append(out.ReservedPorts, [2]uint16{s.Lo, s.Hi})
	}
	if sc.MaxTwBuckets > 0 {
		out.TwBucketsInUse = round(100*float64(r.Namespace.Timewait+r.Namespace.FinWait2)/float64(sc.MaxTwBuckets), 10)
	}
	dests := make([]Destination, 0, len(r.Destinations))
	for i := range r.Destinations {
		d := &r.Destinations[i]
		v := Destination{
			Netns: d.Netns, Saddr: d.Saddr, Daddr: d.Daddr, Dport: d.Dport,
			Timewait: d.Timewait, FinWait2: d.FinWait2, Established: d.Established, OtherStates: d.Other,
			PortsInUse: d.PortsInUse, PortsAvailable: d.PortsAvailable, PortsUsable: d.Usable,
			TwReuse: d.Reuse, PortsReusable: d.PortsReusable, PortsAvailableWithReuse: d.PortsAvailableWithReuse,
			CeilingPerS:          round(d.CeilingPerS, 10),
			CeilingWithReusePerS: round(d.CeilingWithReusePerS, 10),
		}
		if d.Usable > 0 {
			v.HeadroomPct = round(100*float64(d.PortsAvailable)/float64(d.Usable), 10)
		}
		dests = append(dests, v)
	}
	servers := make([]Server, 0, len(r.Servers))
	for _, s := range r.Servers {
		servers = append(servers, Server{Netns: ns.Inode, Addr: s.Addr, Port: s.Port,
			Timewait: s.Timewait, FinWait2: s.FinWait2, Established: s.Established})
	}
	return out, dests, servers
}

// LiveDestination is a Destination with top's live figures.
type LiveDestination struct {
	Destination
	// ConnectsPerS: connect() attempts toward it per second, by the
	// traced processes (every source address).
	ConnectsPerS float64 `json:"connects_per_s"`
	// TimewaitPerS: connections from this source address entering
	// timewait per second: each holds its port for 60 s.
	TimewaitPerS float64 `json:"timewait_per_s"`
	// Unattributed timewait sockets entered timewait before tracing began
	// (or their entry was not reported): no process to name.
	Unattributed int `json:"timewait_unattributed"`
	// ExhaustionInS is when connect() toward it starts failing if the
	// timewait rate holds; null when it is not heading there.
	ExhaustionInS *float64 `json:"exhaustion_in_s"`
}

// Live returns d with top's live figures; exhaustion may be nil.
func Live(d Destination, connects, timewait float64, unattributed int, exhaustion *float64) LiveDestination {
	l := LiveDestination{Destination: d, ConnectsPerS: round(connects, 10), TimewaitPerS: round(timewait, 10), Unattributed: unattributed}
	if exhaustion != nil {
		e := round(*exhaustion, 10)
		l.ExhaustionInS = &e
	}
	return l
}

func round(x, scale float64) float64 {
	if math.IsInf(x, 0) || math.IsNaN(x) {
		return 0
	}
	return math.Round(x*scale) / scale
}

// Spans formats port spans as the sysctl does: "8080,9000-9010".
func Spans(s [][2]uint16) string {
	if len(s) == 0 {
		return "-"
	}
	var b strings.Builder
	for i, p := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(p[0])))
		if p[1] != p[0] {
			fmt.Fprintf(&b, "-%d", p[1])
		}
	}
	return b.String()
}
