package live

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twtrace/twtrace/pkg/aggregate"
	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/headroom"
	"github.com/twtrace/twtrace/pkg/inventory"
	"github.com/twtrace/twtrace/pkg/report"
	"github.com/twtrace/twtrace/pkg/tracer"
)

// add takes one event from the tracer.
func (s *session) add(e *event.Event) {
	if e.Kind == event.KindStack {
		if s.sites != nil {
			s.sites.Learn(e)
		}
		return
	}
	if !s.cfg.Filter.Match(e) {
		return
	}
	if e.Stack != 0 && s.sites != nil {
		e.Stack = s.sites.Canonical(e.Stack, e.OpenerPID)
	}
	p := processOf(e)
	k := s.keyOf(e, e.CgroupID, &p)
	s.table.AddAs(k, e, &p)
	s.tally(&p, k, e, 0)
	if e.Kind != event.KindTimewait {
		return
	}
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
		c := s.twDest[dk]
		if c == nil && len(s.twDest) < maxTwDest {
			c = &twCount{}
			s.twDest[dk] = c
		}
		if c != nil {
			c.n++
		}
	}
	s.mu.Unlock()
}

// frame makes one frame: the counts since the last one, the inventory
// joined to them, the destinations' forecasts, the rows judged, the
// losses.
func (s *session) frame(final bool) (*Frame, error) {
	if err := s.readConnects(); err != nil {
		return nil, err
	}
	s.table.SnapshotTo(&s.spare)
	snap := s.spare
	if err := snap.Delta(&s.prev); err != nil {
		return nil, err
	}
	f := &Frame{
		Time: snap.Time, Interval: snap.Interval, Uptime: snap.Time.Sub(s.start),
		Destinations: []report.LiveDestination{},
		Namespaces:   []report.Namespace{},
		Tier:         s.tr.Tier().Tier,
		By:           s.cfg.By,
	}
	fresh := s.inventoryDue(snap.Time, final)
	if fresh {
		if err := s.readInventory(&snap); err != nil {
			return nil, err
		}
	}
	f.Errors = s.read.errors
	f.ScanTime, f.InventoryTime = s.read.cost, s.read.sc.start
	tw := s.read.tw
	tw.rate = s.timewaitRates(&snap)
	s.mu.Lock()
	tw.refused = s.join.refused // refused as events came, not at the read
	s.mu.Unlock()
	worst := s.destinations(f, s.read.sc, &snap, tw, fresh)
	f.Rows = s.rows(&snap, tw, worst)
	f.Processes = s.processes()
	if err := s.losses(f, &snap, tw.refused); err != nil {
		return nil, err
	}
	s.prev, s.spare = snap, s.prev
	s.frames++
	return f, nil
}

// inventoryRead is the last read of the sockets: what the frames show of
// them until the next.
type inventoryRead struct {
	sc     scan
	tw     joined // without rates: those are each frame's
	errors []string
	cost   time.Duration // of the read, the join and the headroom
	end    time.Time
	done   bool
}

// inventoryDue reports whether the frame at now reads the sockets again:
// the first and the final frame do, and any at which the last read's
// cost is within Config.InventoryCPU of the time since it began.
func (s *session) inventoryDue(now time.Time, final bool) bool {
	r := &s.read
	if !r.done || final || s.cfg.InventoryCPU >= 1 {
		return true
	}
	return float64(r.cost) <= s.cfg.InventoryCPU*float64(now.Sub(r.sc.start))
}

// readInventory reads the sockets of every namespace, joins the timewait
// sockets to the rows and computes the headroom, for this frame and the
// next ones until the next read.
func (s *session) readInventory(snap *aggregate.Snapshot) error {
	t0 := time.Now()
	// The last read's figures go: their memory (the expiries of every
	// destination) may be reused while this one is made.
	s.read.sc, s.read.tw = scan{}, joined{}
	var errs []string
	sc, err := s.scanNamespaces(&errs)
	if err != nil {
		return err
	}
	// A socket the scan found in timewait may have its event still in the
	// ring (records wait up to a poll interval): let the reader empty it
	// once more before joining, or the socket would count as unattributed.
	w0 := time.Now()
	s.waitDrains(1, time.Second)
	sc.drainWait = time.Since(w0)
	s.read = inventoryRead{sc: sc, tw: s.joinTimewait(sc, snap, len(errs) == 0), errors: errs, done: true}
	for _, sd := range sc.all {
		s.namespaceRates(sd.ns)
	}
	s.read.end = time.Now()
	// The wait for the reader is not the read's cost.
	s.read.cost = s.read.end.Sub(t0) - s.read.sc.drainWait
	return nil
}

// readConnects moves the kernel's connect counts into the table.
func (s *session) readConnects() error {
	var e event.Event
	return s.tr.ReadConnects(func(c *tracer.ConnectCount) {
		e = event.Event{Netns: c.Netns, PID: c.PID, Comm: c.Comm, IPv6: c.IPv6, Daddr: c.Daddr, Dport: c.Dport}
		if !s.cfg.Filter.MatchAnyKind(&e) {
			return
		}
		p := connectProcess(c)
		k := s.keyOf(&e, connectCgroup(c), &p)
		k.Daddr, k.Port = c.Daddr, c.Dport // KeyFor leaves them out for kind 0
		s.table.AddConnects(k, &p, c.N)
		s.tally(&p, k, nil, c.N)
	})
}

// scanned is one namespace's inventory and its headroom.
type scanned struct {
	ns *inventory.Namespace
	r  headroom.Report
}

// scan is one pass over the namespaces, numbered for the join.
type scan struct {
	all       []scanned
	number    uint16
	start     time.Time
	drainWait time.Duration
}

// scanNamespaces reads the inventory of every namespace the session
// looks at (a namespace that cannot be read goes to errs) and seeds the
// listeners found.
func (s *session) scanNamespaces(errs *[]string) (scan, error) {
	var sc scan
	s.mu.Lock()
	sc.number = s.join.beginScan()
	s.mu.Unlock()
	sc.start = time.Now()
	refs, err := inventory.Namespaces()
	if err != nil {
		return sc, err
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
				*errs = append(*errs, fmt.Sprintf("netns %d: %v", ref.Inode, err))
			}
			continue
		}
		sc.all = append(sc.all, scanned{ns, headroom.Compute(ns)})
		if err := s.seedListeners(ns); err != nil {
			return sc, err
		}
	}
	for inode := range s.nsMem {
		if !seen[inode] {
			delete(s.nsMem, inode)
			delete(s.prevNs, inode)
			delete(s.nsRates, inode)
		}
	}
	return sc, nil
}

// joined is who holds the timewait sockets a scan found.
type joined struct {
	now          map[aggregate.Key]int // per row
	unattributed map[destKey]int       // no row: entered timewait before tracing
	bound        map[rowDest]bool      // a bind() port is in use toward it
	rate         map[destKey]float64   // timewait entries per second
	refused      uint64                // the join's, cumulative
}

// timewaitRates are the timewait entries per second toward each
// destination over the frame's interval.
func (s *session) timewaitRates(snap *aggregate.Snapshot) map[destKey]float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	rate := make(map[destKey]float64, len(s.twDest))
	for k, c := range s.twDest {
		rate[k] = snap.PerSecond(c.n - c.prev)
		if c.n != c.prev {
			c.frame = s.frames
		}
		c.prev = c.n
	}
	return rate
}

// joinTimewait attributes each timewait socket of the scan to the row
// whose event reported it, and takes the timewait rates per destination.
// After a complete scan (no namespace unreadable), the join drops the
// entries of sockets that are gone; after any, those too old to be alive.
func (s *session) joinTimewait(sc scan, snap *aggregate.Snapshot, complete bool) joined {
	j := joined{
		now:          make(map[aggregate.Key]int),
		unattributed: make(map[destKey]int),
		bound:        make(map[rowDest]bool),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	buckets := 0
	for _, sd := range sc.all {
		s.attribute(sd.ns, sc.number, &j)
		buckets += sd.ns.Sysctls.MaxTwBuckets
	}
	// The kernel holds at most tcp_max_tw_buckets timewait sockets per
	// namespace: so may the join.
	s.join.setMax(buckets)
	// A namespace that could not be read would look empty: only a
	// complete scan tells which sockets are gone.
	number := sc.number
	if !complete {
		number = 0
	}
	s.join.prune(number, sc.start, snap.Time)
	j.refused = s.join.refused
	return j
}

// attribute joins the timewait sockets of one namespace; s.mu is held.
func (s *session) attribute(ns *inventory.Namespace, number uint16, j *joined) {
	listening := map[uint16]bool{}
	for i := range ns.Sockets {
		if sk := &ns.Sockets[i]; sk.State == inventory.Listen {
			listening[sk.Sport] = true
		}
	}
	perRow := slices.Grow(s.perRow[:0], len(s.keys))[:len(s.keys)]
	clear(perRow)
	for i := range ns.Sockets {
		sk := &ns.Sockets[i]
		if sk.State != inventory.TimeWait {
			if sk.Bound && !listening[sk.Sport] && sk.Dport != 0 {
				j.bound[rowDest{ns.Inode, sk.Daddr, sk.Dport}] = true
			}
			continue
		}
		t := tuple{netns: ns.Inode, saddr: sk.Saddr, sport: sk.Sport, daddr: sk.Daddr, dport: sk.Dport}
		if i, ok := s.join.find(&t, number); ok {
			perRow[i]++
		} else if !listening[sk.Sport] {
			j.unattributed[destKey{Netns: ns.Inode, Saddr: sk.Saddr, Daddr: sk.Daddr, Dport: sk.Dport}]++
		}
	}
	s.attributeConns(ns, number, perRow, j)
	for i, n := range perRow {
		if n > 0 {
			j.now[s.keys[i]] += n
		}
	}
	s.perRow = perRow
}

// attributeConns joins the timewait sockets of ns's groups, counting them
// per row in perRow; a group's addresses are hashed once.
func (s *session) attributeConns(ns *inventory.Namespace, number uint16, perRow []int, j *joined) {
	bases := slices.Grow(s.bases[:0], len(ns.Groups))[:len(ns.Groups)]
	missed := slices.Grow(s.missed[:0], len(ns.Groups))[:len(ns.Groups)]
	for i := range ns.Groups {
		g := &ns.Groups[i]
		bases[i], missed[i] = s.join.base(ns.Inode, g.Saddr, g.Daddr), 0
	}
	for k := range ns.Conns {
		c := &ns.Conns[k]
		if c.State != inventory.TimeWait {
			continue
		}
		g := &ns.Groups[c.Group]
		sport, dport := c.Port, g.Port
		if g.Server {
			sport, dport = g.Port, c.Port
		}
		if i, ok := s.join.findKey(key(bases[c.Group], sport, dport), number); ok {
			perRow[i]++
		} else {
			missed[c.Group]++
		}
	}
	for i, n := range missed {
		// An accepted connection's timewait holds no ephemeral port.
		if g := &ns.Groups[i]; n > 0 && !g.Server {
			j.unattributed[destKey{Netns: ns.Inode, Saddr: g.Saddr, Daddr: g.Daddr, Dport: g.Port}] += n
		}
	}
	s.bases, s.missed = bases, missed
}

// losses sets f's losses: the tracer's, the rows folded, the join's
// refusals. Following, it also lets the followed set forget processes
// that are gone (reaped, their sockets closed).
func (s *session) losses(f *Frame, snap *aggregate.Snapshot, refused uint64) error {
	l, err := s.tr.Losses()
	errs := []error{err}
	f.Losses = report.Losses{
		Records:           l.Records,
		Untracked:         l.Untracked,
		Missed:            l.Missed,
		UncountedConnects: l.UncountedConnects,
		FoldedEvents:      snap.Overflowed,
		JoinRefused:       refused,
		UnknownParents:    l.UnknownParents,
	}
	s.mu.Lock()
	f.Losses.UncountedProcesses = snap.UncountedProcesses + s.untallied
	s.mu.Unlock()
	f.Losses.UnresolvedOwners = s.unresolved.Load()
	f.Losses.LostStacks = l.LostStacks
	if s.sites != nil {
		st := s.sites.Stats()
		f.Losses.LostStacks += st.Dropped
		f.Losses.UnresolvedStacks = st.Unresolved
		f.Losses.UnprobedHTTPCallers = st.GoHTTPRefused
	}
	if o, ok := s.cfg.Owners.(interface{ CRIFailures() uint64 }); ok {
		f.Losses.CRIFailures = o.CRIFailures()
	}
	if s.cfg.Follow != nil {
		f.Losses.UnfollowedForks = l.UnfollowedForks
		_, err := s.tr.SweepFollowed()
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
