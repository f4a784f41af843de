package report

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/twtrace/twtrace/pkg/aggregate"
	"github.com/twtrace/twtrace/pkg/symbol"
	"github.com/twtrace/twtrace/pkg/workload"
)

// Row is one (process, destination) row as `twtrace top -o json` and the
// report of `twtrace run` show it (docs/json.md): rates and the lifetime
// rounded to the thousandth (Round3).
type Row struct {
	// PID is the first process the row holds (the process under --by
	// pid), Comm its thread-group leader's comm.
	PID  uint32 `json:"pid"`
	Comm string `json:"comm"`
	// Workload is the row's display name: a process's or program's comm,
	// a container's, pod's or unit's name (workload.Name).
	Workload string `json:"workload"`
	// ProcessCount is the distinct PIDs the row folds; PPID and
	// ParentComm name the first one's parent ("" when it was gone).
	ProcessCount int    `json:"process_count"`
	PPID         uint32 `json:"ppid"`
	ParentComm   string `json:"parent_comm"`
	// Identity is what owns the first process: "" where not known.
	workload.Identity
	Netns uint32     `json:"netns"`
	Daddr netip.Addr `json:"daddr"`
	// Dport is the destination's port; for role "server" rows (timewaits
	// of connections the process accepted and closed first) it is the
	// local port they were accepted on.
	Dport        uint16  `json:"dport"`
	Role         string  `json:"role"` // client or server
	ConnectsPerS float64 `json:"connects_per_s"`
	TimewaitPerS float64 `json:"timewait_per_s"`
	TimewaitNow  int     `json:"timewait_now"`
	// Counts are cumulative. TimewaitOverflow and TimewaitReused are the
	// precise tier's, 0 in the tracepoint tier.
	aggregate.Counts
	LifetimeP50Ms *float64 `json:"lifetime_p50_ms"`
	BytesP50      *uint64  `json:"bytes_p50"`
	// HeadroomPct and ExhaustionInS are the destination's (the least of
	// its source addresses).
	HeadroomPct   *float64 `json:"headroom_pct"`
	ExhaustionInS *float64 `json:"exhaustion_in_s"`
	Verdict       string   `json:"verdict"`
	Advice        []string `json:"advice"`
	Reason        string   `json:"reason,omitempty"`
	// CallSite is the line of code that opened most of the row's
	// connections, of those whose connect() stack was taken:
	// "function (file:line)", escaped; "" when not known, and then
	// CallSiteNote says why when a stack was taken. ClientLibrary is the
	// client library its stack shows ("net/http", ...), Stack that stack,
	// innermost first. CallSites lists every call site, when there are
	// several.
	CallSite      string          `json:"call_site"`
	CallSiteNote  string          `json:"call_site_note,omitempty"`
	ClientLibrary string          `json:"client_library"`
	Stack         []symbol.Frame  `json:"stack"`
	CallSites     []CallSiteCount `json:"call_sites,omitempty"`
	// Other marks the row summing every row not shown (Folded of them).
	Other  bool `json:"other,omitempty"`
	Folded int  `json:"folded,omitempty"`
}

// CallSiteLine says where the row's connections were opened, for a
// screen or a text report: "called from F (file:line) [via net/http]",
// the note when the stack said nothing, "" without stacks. Already
// escaped (symbol.Frame.String, symbol.Escape).
func CallSiteLine(r *Row) string {
	via := ""
	if r.ClientLibrary != "" {
		via = " via " + r.ClientLibrary
	}
	more := ""
	if n := len(r.CallSites); n > 1 {
		more = fmt.Sprintf(" (and %d more sites)", n-1)
	}
	switch {
	case r.CallSite != "":
		return "called from " + r.CallSite + via + more
	case r.CallSiteNote != "":
		return "call site unknown: " + r.CallSiteNote + via + more
	}
	return ""
}

// CallSiteCount is one of a row's call sites and the connections it
// opened (of those whose stack was taken).
type CallSiteCount struct {
	CallSite      string `json:"call_site"` // "" when not known
	CallSiteNote  string `json:"call_site_note,omitempty"`
	ClientLibrary string `json:"client_library"`
	Connects      uint64 `json:"connects"`
}

// OtherRow is an empty row flagged Other, as it starts before rows are
// summed into it.
func OtherRow() Row {
	return Row{Other: true, Comm: "(other)", Advice: []string{}, Stack: []symbol.Frame{}}
}

// SortRows orders rows by val, largest first; ties go to the row with
// more timewait entries, then more connects, and rows still equal keep
// their order (a refreshing screen does not shuffle them).
func SortRows(rows []Row, val func(*Row) float64) {
	slices.SortStableFunc(rows, func(a, b Row) int {
		if c := cmp.Compare(val(&b), val(&a)); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Timewait, a.Timewait); c != 0 {
			return c
		}
		return cmp.Compare(b.Connects, a.Connects)
	})
}

// Losses are what could not be counted, cumulative: the "losses" object
// of top's frames and run's report. Every field is a counter (the run
// report's page lists them by their JSON names).
type Losses struct {
	Records           uint64 `json:"lost_records"`
	Untracked         uint64 `json:"untracked_sockets"`
	Missed            uint64 `json:"missed_runs"`
	UncountedConnects uint64 `json:"uncounted_connects"`
	// FoldedEvents went to the Other row: MaxKeys rows were full.
	FoldedEvents uint64 `json:"folded_events"`
	// JoinRefused timewait entries found the join full (MaxJoin live
	// timewait sockets remembered): their sockets count as unattributed.
	JoinRefused uint64 `json:"join_refused"`
	// UnfollowedForks: processes forked by followed ones that the
	// followed set had no room for (when following a command only).
	UnfollowedForks uint64 `json:"unfollowed_forks,omitempty"`
	// UncountedProcesses: PIDs a row (or run's per-process tally) had no
	// room to remember, so that process_count leaves them out.
	UncountedProcesses uint64 `json:"uncounted_processes"`
	// UnresolvedOwners: rows whose cgroup could not be resolved to a
	// path (their container, pod and unit are "").
	UnresolvedOwners uint64 `json:"unresolved_owners"`
	// CRIFailures: listings of the node's CRI that failed (absent, slow,
	// gone); meanwhile pod and container names fell back to ids.
	CRIFailures uint64 `json:"cri_failures"`
	// UnknownParents: processes whose parent the kernel could not tell
	// (its identity cache had pushed them out): ppid 0, so they fold by
	// program apart from their siblings.
	UnknownParents uint64 `json:"unknown_parents"`
	// LostStacks: connect() stacks there was no room to keep (the
	// kernel's stack table, or the call sites' bound): their connections
	// carry no call site. UnresolvedStacks: stacks kept but not
	// symbolized (the process was gone before they were read): their
	// call site is "" with a note.
	LostStacks       uint64 `json:"lost_stacks"`
	UnresolvedStacks uint64 `json:"unresolved_stacks"`
	// UnprobedHTTPCallers: Go executables dialling through net/http whose
	// dials' callers could not be reached (built before Go 1.18, the
	// functions not found, the uprobe refused): their call site stays
	// net/http's own dial goroutine.
	UnprobedHTTPCallers uint64 `json:"unprobed_http_callers"`
	// StillClosing: with a drain, sockets closed first whose end was not
	// seen within the drain time (final frame only).
	StillClosing uint64 `json:"still_closing,omitempty"`
}

// Round3 rounds x half up to the thousandth: rates and seconds in top's
// frames and run's rows.
func Round3(x float64) float64 {
	return float64(int64(x*1000+0.5)) / 1000
}
