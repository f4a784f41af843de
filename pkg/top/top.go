// Package top is `twtrace top` without its flag parsing: the tracer's
// events and connect counts aggregated per process and destination, joined
// every interval with the live socket inventory of every namespace, the
// port headroom of each destination, its forecast, and the per-request
// verdict of each row.
package top

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/btf"

	"github.com/twtrace/twtrace/pkg/aggregate"
	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/filter"
	"github.com/twtrace/twtrace/pkg/headroom"
	"github.com/twtrace/twtrace/pkg/inventory"
	"github.com/twtrace/twtrace/pkg/report"
	"github.com/twtrace/twtrace/pkg/tracer"
	"github.com/twtrace/twtrace/pkg/verdict"
)

// Sort is the order of rows.
type Sort int

const (
	ByTimewaitRate  Sort = iota // timewait entries per second (default)
	ByConnectRate               // connect attempts per second
	ByTimewaitNow               // timewait sockets held now
	ByConnectErrors             // connect() failures, cumulative
)

var sortNames = [...]string{"timewait", "connects", "now", "errors"}

func (s Sort) String() string { return sortNames[s] }

// ParseSort is the inverse of Sort.String.
func ParseSort(s string) (Sort, error) {
	for i, n := range sortNames {
		if n == s {
			return Sort(i), nil
		}
	}
	return 0, fmt.Errorf("invalid sort %q: want timewait, connects, now or errors", s)
}

// Config of a top session.
type Config struct {
	Interval time.Duration // default 1 s
	Count    int           // frames to produce; 0 = until ctx is done
	Rows     int           // rows shown, the rest folded into one; default 20
	Filter   *filter.Filter
	Netns    uint32 // in-kernel namespace filter; 0 = all
	RingSize int    // 0 means DefaultRingSize()
	// MaxSockets sizes the tracer's owner table; MaxKeys the (process,
	// destination) rows kept (further ones are summed into one Other
	// row); MaxJoin the timewait entries remembered for attribution.
	MaxSockets, MaxKeys, MaxJoin int
	// Tier picks the tracer's hooks (tracer.Options.Tier).
	Tier tracer.Tier
	// Sort returns the current order; nil means ByTimewaitRate.
	Sort  func() Sort
	Ready func()
	// Follow, when not nil, restricts tracing to the processes it puts
	// in the followed set and to everything they fork from then on
	// (tracer.Options.Follow). It is called once tracing is live, before
	// Ready; it typically follows itself, starts a command and unfollows
	// itself.
	Follow func(Follower) error
	// Drain, when ctx is done, waits up to this long for the sockets
	// closed by then to reach their end (their timewait entry, or the
	// reset that ends them), and emits one last frame (Final). 0: stop at
	// once. Only meaningful with Follow: the wait is for every socket the
	// tracer saw closing.
	Drain time.Duration
}

// Follower is the tracer's followed set (see Config.Follow).
type Follower interface {
	Follow(pid uint32) error
	Unfollow(pid uint32) error
}

// DefaultRows and DefaultMaxKeys bound what top holds and shows.
const (
	DefaultRows = 20
	// DefaultMaxKeys: each row holds two histograms (~4.3 KiB), and top
	// keeps the table and two snapshots of it.
	DefaultMaxKeys = 1024
)

// Row is one (process, destination) line of a frame.
type Row struct {
	PID   uint32     `json:"pid"`
	Comm  string     `json:"comm"`
	Netns uint32     `json:"netns"`
	Daddr netip.Addr `json:"daddr"`
	// Dport is the destination's port; for role "server" rows (timewaits
	// of connections the process accepted and closed first) it is the
	// local port they were accepted on.
	Dport         uint16  `json:"dport"`
	Role          string  `json:"role"` // client or server
	ConnectsPerS  float64 `json:"connects_per_s"`
	TimewaitPerS  float64 `json:"timewait_per_s"`
	TimewaitNow   int     `json:"timewait_now"`
	ConnectErrors uint64  `json:"connect_errors"`
	BindErrors    uint64  `json:"bind_errors"`
	Connects      uint64  `json:"connects"`
	Timewait      uint64  `json:"timewait"`
	// TimewaitOverflow counts connections it closed first for which the
	// kernel made no timewait socket (tcp_max_tw_buckets reached), and
	// TimewaitReused connects that took over a timewait socket
	// (tcp_tw_reuse): the precise tier's, 0 in the tracepoint tier.
	TimewaitOverflow uint64   `json:"timewait_overflow"`
	TimewaitReused   uint64   `json:"timewait_reused"`
	LifetimeP50Ms    *float64 `json:"lifetime_p50_ms"`
	BytesP50         *uint64  `json:"bytes_p50"`
	// HeadroomPct and ExhaustionInS are the destination's (the least of
	// its source addresses).
	HeadroomPct   *float64 `json:"headroom_pct"`
	ExhaustionInS *float64 `json:"exhaustion_in_s"`
	Verdict       string   `json:"verdict"`
	Advice        []string `json:"advice"`
	Reason        string   `json:"reason,omitempty"`
	// Other marks the row summing every row not shown (Folded of them).
	Other  bool `json:"other,omitempty"`
	Folded int  `json:"folded,omitempty"`

	commRaw [16]byte
}

// Losses are what could not be counted, cumulative.
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
	// followed set had no room for (Config.Follow only).
	UnfollowedForks uint64 `json:"unfollowed_forks,omitempty"`
	// StillClosing: with Config.Drain, sockets closed first whose end was
	// not seen within the drain time (final frame only).
	StillClosing uint64 `json:"still_closing,omitempty"`
}

// Frame is one refresh: the JSON object `top -o json` prints per interval.
type Frame struct {
	Time         time.Time                `json:"time"`
	IntervalS    float64                  `json:"interval_s"`
	UptimeS      float64                  `json:"uptime_s"`
	Sort         string                   `json:"sort"`
	Rows         []Row                    `json:"rows"`
	Destinations []report.LiveDestination `json:"destinations"`
	Namespaces   []report.Namespace       `json:"namespaces"`
	Losses       Losses                   `json:"losses"`
	Errors       []string                 `json:"errors,omitempty"`
	// Tier is the tracer's tier: "precise" or "tracepoint".
	Tier string `json:"tier"`
	// Final marks the frame emitted after the drain (Config.Drain).
	Final bool `json:"final,omitempty"`
}

// destKey is a destination from one source address, as the headroom is.
type destKey = headroom.Key

// rowDest is a destination over every source address: rows have no
// source address (a process may reach one destination from several).
type rowDest struct {
	netns uint32
	daddr netip.Addr
	dport uint16
}

// session is the state of one Run.
type session struct {
	cfg   Config
	tr    *tracer.Tracer
	inv   *inventory.Scanner
	table *aggregate.Table
	start time.Time

	mu     sync.Mutex // guards join, keys, twDest (the reader adds)
	join   *join
	keys   []aggregate.Key
	keyIdx map[aggregate.Key]int32
	twDest map[destKey]uint64 // timewait entries per destination, cumulative
	prevTw map[destKey]uint64
	prev   aggregate.Snapshot
	spare  aggregate.Snapshot // memory for the next snapshot
	prevNs map[uint32]inventory.Counters
	nsMem  map[uint32]*inventory.Namespace // each namespace's scan, reused
	drains atomic.Uint64                   // times the reader emptied the ring
}

// DefaultRingSize is top's ring buffer: 1 MiB per CPU, at least 2 and at
// most 16 MiB. top prints no line per event, so its reader drains the
// ring every 100 ms (or as soon as a quarter is full) whatever the load:
// 2 MiB is 14,500 records, over half a second of the 24k connections/s a
// 2-CPU machine can churn, and the churn a host can reach grows with its
// CPUs. The ring is mapped twice into the process (so that a record can
// wrap around its end), and all of it counts in top's RSS.
func DefaultRingSize() int {
	mib := 2
	for mib < runtime.NumCPU() && mib < 16 {
		mib *= 2
	}
	return mib << 20
}

// maxTwDest bounds the per-destination timewait counters.
const maxTwDest = 16384

// Run traces and calls emit with a frame every interval until ctx is done
// or cfg.Count frames were emitted.
func Run(ctx context.Context, cfg Config, emit func(*Frame) error) error {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Rows <= 0 {
		cfg.Rows = DefaultRows
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	// Load the two BPF objects at once: start-up is mostly the kernel
	// verifying and the BTF being read, one CPU each.
	type opened struct {
		inv *inventory.Scanner
		err error
	}
	invc := make(chan opened, 1)
	cache := btf.NewCache() // the kernel's types, decoded once for both
	go func() {
		inv, err := inventory.OpenWithCache(cache)
		invc <- opened{inv, err}
	}()
	tr, terr := tracer.New(tracer.Options{
		RingBufferSize: cmp.Or(cfg.RingSize, DefaultRingSize()),
		KindMask:       cfg.Filter.KindMask(),
		Netns:          cfg.Netns,
		MaxSockets:     cfg.MaxSockets,
		CountConnects:  true,
		Follow:         cfg.Follow != nil,
		BTFCache:       cache,
		Tier:           cfg.Tier,
	})
	o := <-invc
	if terr != nil || o.err != nil {
		if tr != nil {
			tr.Close()
		}
		if o.inv != nil {
			o.inv.Close()
		}
		if terr != nil {
			return terr // the same cause as the scanner's, if both failed
		}
		return o.err
	}
	inv := o.inv
	defer inv.Close()
	defer tr.Close()

	s := &session{
		cfg: cfg, tr: tr, inv: inv,
		table:  aggregate.New(cfg.MaxKeys),
		start:  time.Now(),
		join:   newJoin(cfg.MaxJoin),
		keyIdx: map[aggregate.Key]int32{},
		twDest: map[destKey]uint64{},
		prevTw: map[destKey]uint64{},
		prevNs: map[uint32]inventory.Counters{},
		nsMem:  map[uint32]*inventory.Namespace{},
	}
	s.prev = s.table.Snapshot()
	if err := s.seedAll(); err != nil {
		return err
	}
	// Reading starts before Follow: the command it starts may be quick.
	done := make(chan error, 1)
	go func() { done <- tr.ReadBatches(s.add, func() { s.drains.Add(1) }) }()
	defer func() {
		tr.Stop()
		<-done
	}()
	if cfg.Follow != nil {
		if err := cfg.Follow(tr); err != nil {
			return err
		}
	}
	if cfg.Ready != nil {
		cfg.Ready()
	}

	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for n := 0; cfg.Count == 0 || n < cfg.Count; n++ {
		select {
		case <-ctx.Done():
			if cfg.Drain > 0 {
				return s.drain(cfg.Drain, emit)
			}
			return nil
		case err := <-done:
			done <- err // for the deferred wait
			return fmt.Errorf("reading events: %w", err)
		case <-tick.C:
		}
		f, err := s.frame()
		if err != nil {
			return err
		}
		if err := emit(f); err != nil {
			return err
		}
	}
	return nil
}

// drain waits up to d for every socket closed first to reach its end,
// lets the reader empty the ring twice more (the last records were in it
// before the first of those), and emits the final frame.
func (s *session) drain(d time.Duration, emit func(*Frame) error) error {
	deadline := time.Now().Add(d)
	var open uint64
	for {
		n, err := s.tr.Unfinished()
		if err != nil {
			return err
		}
		open = n
		if n == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.waitDrains(2)
	f, err := s.frame()
	if err != nil {
		return err
	}
	f.Final = true
	f.Losses.StillClosing = open
	return emit(f)
}

// waitDrains waits until the reader has emptied the ring n more times:
// every record in it now has then been added. Bounded: a reader that
// stopped on an error drains no more.
func (s *session) waitDrains(n uint64) {
	for start, t0 := s.drains.Load(), time.Now(); s.drains.Load() < start+n && time.Since(t0) < time.Second; {
		time.Sleep(5 * time.Millisecond)
	}
}

// add takes one event from the tracer.
func (s *session) add(e *event.Event) {
	if !s.cfg.Filter.Match(e) {
		return
	}
	s.table.Add(e)
	if e.Kind != event.KindTimewait {
		return
	}
	k := aggregate.KeyOf(e)
	s.mu.Lock()
	i, ok := s.keyIdx[k]
	if !ok && len(s.keys) < s.cfg.MaxKeys {
		i = int32(len(s.keys))
		s.keys = append(s.keys, k)
		s.keyIdx[k] = i
		ok = true
	}
	t := tuple{netns: e.Netns, saddr: e.Saddr, sport: e.Sport, daddr: e.Daddr, dport: e.Dport}
	if ok {
		s.join.add(&t, i, e.Time)
	}
	if e.Role != event.RoleServer {
		dk := destKey{Netns: e.Netns, Saddr: e.Saddr, Daddr: e.Daddr, Dport: e.Dport}
		if _, seen := s.twDest[dk]; seen || len(s.twDest) < maxTwDest {
			s.twDest[dk]++
		}
	}
	s.mu.Unlock()
}

// readConnects moves the kernel's connect counts into the table.
func (s *session) readConnects() error {
	var e event.Event
	return s.tr.ReadConnects(func(c *tracer.ConnectCount) {
		e = event.Event{Netns: c.Netns, PID: c.PID, Comm: c.Comm, IPv6: c.IPv6, Daddr: c.Daddr, Dport: c.Dport}
		if !s.cfg.Filter.MatchAnyKind(&e) {
			return
		}
		k := aggregate.KeyOf(&e)
		k.Daddr, k.Port = c.Daddr, c.Dport // KeyOf leaves them out for kind 0
		s.table.AddConnects(k, c.N)
	})
}

func (s *session) frame() (*Frame, error) {
	if err := s.readConnects(); err != nil {
		return nil, err
	}
	s.table.SnapshotTo(&s.spare)
	snap := s.spare
	if err := snap.Delta(&s.prev); err != nil {
		return nil, err
	}
	now := snap.Time
	f := &Frame{
		Time: now, IntervalS: round3(snap.Interval.Seconds()), UptimeS: round3(now.Sub(s.start).Seconds()),
		Sort:         s.sort().String(),
		Destinations: []report.LiveDestination{},
		Namespaces:   []report.Namespace{},
	}

	// The inventory, and who holds each timewait socket.
	type scanned struct {
		ns *inventory.Namespace
		r  headroom.Report
	}
	var all []scanned
	s.mu.Lock()
	scan := s.join.beginScan()
	s.mu.Unlock()
	scanStart := time.Now()
	refs, err := inventory.Namespaces()
	if err != nil {
		return nil, err
	}
	seen := make(map[uint32]bool, len(refs))
	for _, ref := range refs {
		if !s.wantNetns(ref.Inode) {
			continue
		}
		seen[ref.Inode] = true
		ns := s.nsMem[ref.Inode]
		if ns == nil {
			ns = &inventory.Namespace{}
			s.nsMem[ref.Inode] = ns
		}
		if err := s.inv.ScanInto(ref, ns); err != nil {
			if !errors.Is(err, inventory.ErrNamespaceGone) {
				f.Errors = append(f.Errors, fmt.Sprintf("netns %d: %v", ref.Inode, err))
			}
			continue
		}
		all = append(all, scanned{ns, headroom.Compute(ns)})
		if err := s.seedListeners(ns); err != nil {
			return nil, err
		}
	}

	for inode := range s.nsMem {
		if !seen[inode] {
			delete(s.nsMem, inode)
			delete(s.prevNs, inode)
		}
	}
	// A socket the scan found in timewait may have its event still in the
	// ring (records wait up to a poll interval): let the reader empty it
	// once more before joining, or the socket would count as unattributed.
	s.waitDrains(1)

	s.mu.Lock()
	twNow := make(map[aggregate.Key]int)
	unattributed := make(map[destKey]int)
	bound := make(map[rowDest]bool)
	for _, sc := range all {
		listening := map[uint16]bool{}
		for i := range sc.ns.Sockets {
			if sk := &sc.ns.Sockets[i]; sk.State == inventory.Listen {
				listening[sk.Sport] = true
			}
		}
		for i := range sc.ns.Sockets {
			sk := &sc.ns.Sockets[i]
			if sk.State != inventory.TimeWait {
				if sk.Bound && !listening[sk.Sport] && sk.Dport != 0 {
					bound[rowDest{sc.ns.Inode, sk.Daddr, sk.Dport}] = true
				}
				continue
			}
			t := tuple{netns: sc.ns.Inode, saddr: sk.Saddr, sport: sk.Sport, daddr: sk.Daddr, dport: sk.Dport}
			if i, ok := s.join.find(&t, scan); ok {
				twNow[s.keys[i]]++
			} else if !listening[sk.Sport] {
				unattributed[destKey{Netns: sc.ns.Inode, Saddr: sk.Saddr, Daddr: sk.Daddr, Dport: sk.Dport}]++
			}
		}
	}
	twRate := make(map[destKey]float64, len(s.twDest))
	for k, n := range s.twDest {
		twRate[k] = snap.PerSecond(n - s.prevTw[k])
		s.prevTw[k] = n
	}
	// A namespace that could not be read would look empty: prune only
	// after complete scans.
	if len(f.Errors) == 0 {
		s.join.prune(scan, scanStart, now)
	}
	refused := s.join.refused
	s.mu.Unlock()

	// Connect attempts per destination over every source address.
	connRate := map[rowDest]float64{}
	for i := range snap.Rows {
		r := &snap.Rows[i]
		if !r.Other && !r.Key.Server {
			connRate[rowDest{r.Key.Netns, r.Key.Daddr, r.Key.Port}] += snap.PerSecond(r.Recent.Connects)
		}
	}

	// Destinations with their forecast; the worst per rowDest for rows.
	type worst struct {
		headroom   float64
		exhaustion *float64
		exhausting bool
		reuse      bool
	}
	worstOf := map[rowDest]*worst{}
	interval := snap.Interval.Seconds()
	for _, sc := range all {
		nsView, dests, _ := report.FromNamespace(sc.ns, &sc.r)
		if p, ok := s.prevNs[sc.ns.Inode]; ok && interval > 0 {
			c := sc.ns.Counters
			tw := round3(float64(c.TW-p.TW) / interval)
			rec := round3(float64(c.TWRecycled-p.TWRecycled) / interval)
			ovf := round3(float64(c.TCPTimeWaitOverflow-p.TCPTimeWaitOverflow) / interval)
			nsView.TWPerS, nsView.RecycledPerS, nsView.OverflowPerS = &tw, &rec, &ovf
		}
		s.prevNs[sc.ns.Inode] = sc.ns.Counters
		f.Namespaces = append(f.Namespaces, nsView)
		for i := range dests {
			d := &sc.r.Destinations[i]
			k := destKey{Netns: d.Netns, Saddr: d.Saddr, Daddr: d.Daddr, Dport: d.Dport}
			rd := rowDest{d.Netns, d.Daddr, d.Dport}
			var ex *float64
			if secs, ok := forecast(d, twRate[k], connRate[rd]); ok {
				ex = &secs
			}
			live := report.Live(dests[i], connRate[rd], twRate[k], unattributed[k], ex)
			f.Destinations = append(f.Destinations, live)
			w := worstOf[rd]
			if w == nil {
				w = &worst{headroom: 101}
				worstOf[rd] = w
			}
			w.headroom = min(w.headroom, dests[i].HeadroomPct)
			if ex != nil && (w.exhaustion == nil || *ex < *w.exhaustion) {
				w.exhaustion = live.ExhaustionInS
			}
			w.exhausting = w.exhausting || ex != nil || d.PortsAvailable == 0
			w.reuse = w.reuse || d.Reuse
		}
	}
	slices.SortStableFunc(f.Destinations, func(a, b report.LiveDestination) int {
		ea, eb := a.ExhaustionInS, b.ExhaustionInS
		switch {
		case ea != nil && eb != nil:
			if c := cmp.Compare(*ea, *eb); c != 0 {
				return c
			}
		case ea != nil:
			return -1
		case eb != nil:
			return 1
		}
		return cmp.Compare(a.HeadroomPct, b.HeadroomPct)
	})

	// Rows, judged, sorted, top K.
	uptime := now.Sub(s.start)
	rows := make([]Row, 0, len(snap.Rows))
	for i := range snap.Rows {
		r := &snap.Rows[i]
		if r.Other {
			continue
		}
		row := Row{
			PID: r.Key.PID, Comm: event.CommString(&r.Key.Comm), commRaw: r.Key.Comm,
			Netns: r.Key.Netns, Daddr: r.Key.Daddr, Dport: r.Key.Port, Role: "client",
			ConnectsPerS:  round3(snap.PerSecond(r.Recent.Connects)),
			TimewaitPerS:  round3(snap.PerSecond(r.Recent.Timewait)),
			TimewaitNow:   twNow[r.Key],
			ConnectErrors: r.ConnectErrors,
			BindErrors:    r.BindErrors,
			Connects:      r.Connects,
			Timewait:      r.Timewait,
			Advice:        []string{},

			TimewaitOverflow: r.TimewaitOverflow,
			TimewaitReused:   r.TimewaitReused,
		}
		if r.Key.Server {
			row.Role = "server"
		}
		ev := verdict.Evidence{
			Window: window(r, now, uptime), Connects: r.Connects,
			ClientTimewait: r.Roles[event.RoleClient], ServerTimewait: r.Roles[event.RoleServer],
			ConnectErrors: r.ConnectErrors, BindErrors: r.BindErrors,
		}
		// A connection closed first with no timewait socket (the table was
		// full) is evidence like one that got one.
		if r.Key.Server {
			ev.ServerTimewait += r.TimewaitOverflow
		} else {
			ev.ClientTimewait += r.TimewaitOverflow
		}
		if d, ok := r.LifetimeQuantile(0.5); ok {
			ms := round3(float64(d) / 1e6)
			row.LifetimeP50Ms = &ms
			ev.LifetimeP50, ev.LifetimeKnown = d, true
		}
		if b, ok := r.Bytes.Quantile(0.5); ok {
			row.BytesP50 = &b
			ev.BytesP50, ev.BytesKnown = b, true
		}
		if !r.Key.Server {
			rd := rowDest{r.Key.Netns, r.Key.Daddr, r.Key.Port}
			if w := worstOf[rd]; w != nil {
				h := w.headroom
				row.HeadroomPct, row.ExhaustionInS = &h, w.exhaustion
				ev.Exhausting, ev.TwReuse = w.exhausting, w.reuse
			}
			ev.BoundPorts = bound[rd]
		}
		res := verdict.Judge(ev)
		row.Verdict, row.Reason = res.Verdict, res.Reason
		if res.Advice != nil {
			row.Advice = res.Advice
		}
		rows = append(rows, row)
	}
	f.Rows = rank(rows, s.sort(), s.cfg.Rows, snap)

	// Losses.
	var errs []error
	get := func(fn func() (uint64, error)) uint64 {
		n, err := fn()
		errs = append(errs, err)
		return n
	}
	f.Tier = s.tr.Tier().Tier.String()
	f.Losses = Losses{
		Records:           get(s.tr.Lost),
		Untracked:         get(s.tr.Untracked),
		Missed:            get(s.tr.Missed),
		UncountedConnects: get(s.tr.UncountedConnects),
		FoldedEvents:      snap.Overflowed,
		JoinRefused:       refused,
	}
	if s.cfg.Follow != nil {
		f.Losses.UnfollowedForks = get(s.tr.UnfollowedForks)
		// Processes gone (reaped, their sockets closed) leave the set.
		_, err := s.tr.SweepFollowed()
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.prev, s.spare = snap, s.prev
	return f, nil
}

// seedAll seeds the listeners of every namespace top looks at.
func (s *session) seedAll() error {
	refs, err := inventory.Namespaces()
	if err != nil {
		return err
	}
	for _, ref := range refs {
		if !s.wantNetns(ref.Inode) {
			continue
		}
		ns, err := s.inv.Scan(ref)
		if err != nil {
			continue // gone, or unreadable: the first frame says which
		}
		if err := s.seedListeners(ns); err != nil {
			return err
		}
	}
	return nil
}

// seedListeners tells the tracer about the listening sockets of ns: a
// listen() made before tracing began was not seen, and the connections
// accepted on it would otherwise be reported with role unknown (one row
// per client port).
func (s *session) seedListeners(ns *inventory.Namespace) error {
	for i := range ns.Sockets {
		if sk := &ns.Sockets[i]; sk.State == inventory.Listen {
			if err := s.tr.SeedListener(ns.Inode, sk.Sport); err != nil {
				return err
			}
		}
	}
	return nil
}

// window is the time over which a row's evidence was gathered: since its
// first event (a process that starts churning an hour into the session is
// judged on its own minute, not diluted by the hour), at least a second,
// at most the session.
func window(r *aggregate.Row, now time.Time, uptime time.Duration) time.Duration {
	if r.First.IsZero() {
		return uptime
	}
	return min(max(now.Sub(r.First), time.Second), uptime)
}

// forecast is when connect() toward d starts failing: at the rate ports
// enter timewait toward it (with tcp_tw_reuse where it applies), or now
// when no port is left while processes still try (failed attempts make no
// timewait, so the timewait rate alone would say "never").
func forecast(d *headroom.Destination, twRate, connRate float64) (float64, bool) {
	f := headroom.Forecast
	if d.Reuse {
		f = headroom.ForecastWithReuse
	}
	if secs, ok := f(d, twRate); ok {
		return secs, true
	}
	free := d.PortsAvailable
	if d.Reuse {
		free = d.PortsAvailableWithReuse
	}
	if free == 0 && connRate > 0 {
		return 0, true
	}
	return 0, false
}

func (s *session) sort() Sort {
	if s.cfg.Sort == nil {
		return ByTimewaitRate
	}
	return s.cfg.Sort()
}

func (s *session) wantNetns(inode uint32) bool {
	if s.cfg.Netns != 0 {
		return inode == s.cfg.Netns
	}
	return s.cfg.Filter.AdmitsNetns(inode)
}

// rank orders rows by, keeps k, and folds the rest (and the table's own
// Other row) into one row flagged Other.
func rank(rows []Row, by Sort, k int, snap aggregate.Snapshot) []Row {
	val := func(r *Row) float64 {
		switch by {
		case ByConnectRate:
			return r.ConnectsPerS
		case ByTimewaitNow:
			return float64(r.TimewaitNow)
		case ByConnectErrors:
			return float64(r.ConnectErrors)
		}
		return r.TimewaitPerS
	}
	slices.SortStableFunc(rows, func(a, b Row) int {
		if c := cmp.Compare(val(&b), val(&a)); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Timewait, a.Timewait); c != 0 {
			return c
		}
		return cmp.Compare(b.Connects, a.Connects)
	})
	var other *Row
	fold := func(r *Row) {
		if other == nil {
			other = &Row{Other: true, Comm: "(other)", Role: "", Advice: []string{}}
		}
		other.ConnectsPerS += r.ConnectsPerS
		other.TimewaitPerS += r.TimewaitPerS
		other.TimewaitNow += r.TimewaitNow
		other.ConnectErrors += r.ConnectErrors
		other.BindErrors += r.BindErrors
		other.Connects += r.Connects
		other.Timewait += r.Timewait
		other.TimewaitOverflow += r.TimewaitOverflow
		other.TimewaitReused += r.TimewaitReused
		other.Folded++
	}
	if len(rows) > k {
		for i := k; i < len(rows); i++ {
			fold(&rows[i])
		}
		rows = rows[:k]
	}
	for i := range snap.Rows {
		if r := &snap.Rows[i]; r.Other {
			fold(&Row{ConnectsPerS: snap.PerSecond(r.Recent.Connects), TimewaitPerS: snap.PerSecond(r.Recent.Timewait),
				ConnectErrors: r.ConnectErrors, BindErrors: r.BindErrors, Connects: r.Connects, Timewait: r.Timewait,
				TimewaitOverflow: r.TimewaitOverflow, TimewaitReused: r.TimewaitReused})
			other.Folded--
		}
	}
	if other != nil {
		other.ConnectsPerS, other.TimewaitPerS = round3(other.ConnectsPerS), round3(other.TimewaitPerS)
		rows = append(rows, *other)
	}
	return rows
}

func round3(x float64) float64 {
	return float64(int64(x*1000+0.5)) / 1000
}
