package run

import (
	"net/netip"
	"time"

	"github.com/twtrace/twtrace/pkg/aggregate"
	"github.com/twtrace/twtrace/pkg/report"
	"github.com/twtrace/twtrace/pkg/workload"
)

// Report is what `twtrace run` found: the document `--report FILE`
// writes (schema in docs/json.md) and the page `--html FILE` draws.
type Report struct {
	Command []string `json:"command"`
	// ExitCode is the command's exit status; killed by a signal, 128 plus
	// its number (as shells report it) and Signal names it.
	ExitCode int       `json:"exit_code"`
	Signal   string    `json:"signal,omitempty"`
	Start    time.Time `json:"start"`
	// DurationS runs from the command's start to its exit.
	DurationS float64 `json:"duration_s"`
	Totals    Totals  `json:"totals"`
	// Destinations the command's processes connected to (client side).
	Destinations []Destination `json:"destinations"`
	// Processes of the command (itself and its descendants) that made or
	// held connections.
	Processes []Process `json:"processes"`
	// Workloads fold the processes as the rows do (By): a script's
	// clients, a pool's workers, a container.
	By        string     `json:"by"`
	Workloads []Workload `json:"workloads"`
	// Rows are (workload, destination) pairs with the per-request verdict
	// and advice; role "server" rows are connections a process accepted
	// and closed first (dport is then its local port).
	Rows       []report.Row `json:"rows"`
	Thresholds []Threshold  `json:"thresholds"`
	// Passed: every threshold passed (true when none was set).
	Passed bool          `json:"passed"`
	Losses report.Losses `json:"losses"`
	// Tier is the tracer's tier: "precise" (fentry/fexit) or "tracepoint".
	Tier string `json:"tier"`
	// Errors are namespaces the inventory could not read while sampling.
	Errors []string `json:"errors,omitempty"`
}

// Totals sum the command's processes.
type Totals struct {
	// Counts: TimewaitOverflow counts connections closed first for which
	// the kernel made no timewait socket (tcp_max_tw_buckets reached), and
	// TimewaitReused connects that took over a timewait socket: the
	// precise tier's, 0 in the tracepoint tier.
	aggregate.Counts
	// TimewaitClient and TimewaitServer split Timewait by the side of the
	// connection the command's process was: the client (it connected and
	// closed first) or the server (it accepted and closed first).
	TimewaitClient uint64 `json:"timewait_client"`
	TimewaitServer uint64 `json:"timewait_server"`
	// Lost sums what could not be counted: records the ring buffer had no
	// room for, sockets the owner table had no room for, transitions the
	// kernel skipped, connect attempts the count table had no room for,
	// and forks the followed set had no room for (Losses has each).
	Lost uint64 `json:"lost"`
}

// Destination is one (network namespace, address, port) the command's
// processes connected to.
type Destination struct {
	Netns         uint32     `json:"netns"`
	Daddr         netip.Addr `json:"daddr"`
	Dport         uint16     `json:"dport"`
	Connects      uint64     `json:"connects"`
	Timewait      uint64     `json:"timewait"`
	ConnectErrors uint64     `json:"connect_errors"`
	// ConnectsPerS is Connects over the run's duration.
	ConnectsPerS float64 `json:"connects_per_s"`
	// PortsUsable is how many source ports connect() can use toward it
	// (the headroom model's usable ports, from the least roomy source
	// address); CeilingPerS the new connections per second it sustains
	// when each holds its port for 60 s in timewait. 0 when the
	// destination's namespace was never read.
	PortsUsable int     `json:"ports_usable"`
	CeilingPerS float64 `json:"ceiling_per_s"`
	// TimewaitPeak is the most timewait sockets of the command's
	// processes held toward it at one sample; Series has every sample.
	TimewaitPeak int      `json:"timewait_peak"`
	Series       []Sample `json:"series"`
}

// Sample is the number of timewait sockets the command's processes held
// toward a destination, T seconds after the command started (read from
// the kernel's socket table and joined to the processes that made them).
type Sample struct {
	T    float64 `json:"t"`
	Held int     `json:"held"`
}

// Process is one process of the command.
type Process struct {
	PID  uint32 `json:"pid"`
	Comm string `json:"comm"`
	// Counts: as in Totals.
	aggregate.Counts
	// Verdict is "per-request" when any of its rows is.
	Verdict string `json:"verdict"`
}

// Workload is the processes one or more rows fold, over every
// destination.
type Workload struct {
	Workload string `json:"workload"` // its display name (report.Row's)
	Comm     string `json:"comm"`     // its first process's leader's comm
	PID      uint32 `json:"pid"`      // its first process
	// ProcessCount is the distinct PIDs it holds.
	ProcessCount int `json:"process_count"`
	aggregate.Counts
	// Verdict is "per-request" when any of its rows is, else "ok".
	Verdict string `json:"verdict"`
	workload.Identity
}

// Threshold is one --max-… or --fail-on-… flag and how the run fared.
type Threshold struct {
	Name  string  `json:"name"`
	Limit float64 `json:"limit"`
	Value float64 `json:"value"`
	// Result is "pass" or "fail".
	Result string `json:"result"`
	// Destination names the destination that decided a per-destination
	// threshold (the highest value), as address:port.
	Destination string `json:"destination,omitempty"`
}
