// Package live is twtrace's live engine: the tracer's events and connect
// counts aggregated per process and destination, joined every interval
// with the live socket inventory of every namespace, the port headroom of
// each destination, its forecast, and the per-request verdict of each
// row. It emits one Frame per interval, at full precision and with every
// row of its table; the views (top's screen and JSON, run's report) rank,
// cut and round what they show.
package live

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/btf"

	"github.com/twtrace/twtrace/pkg/aggregate"
	"github.com/twtrace/twtrace/pkg/callsite"
	"github.com/twtrace/twtrace/pkg/filter"
	"github.com/twtrace/twtrace/pkg/headroom"
	"github.com/twtrace/twtrace/pkg/inventory"
	"github.com/twtrace/twtrace/pkg/report"
	"github.com/twtrace/twtrace/pkg/symbol"
	"github.com/twtrace/twtrace/pkg/tracer"
	"github.com/twtrace/twtrace/pkg/verdict"
	"github.com/twtrace/twtrace/pkg/workload"
)

// Config of a live session.
type Config struct {
	Interval time.Duration // between frames; default 1 s
	Count    int           // frames to produce; 0 = until ctx is done
	Filter   *filter.Filter
	Netns    uint32 // in-kernel namespace filter; 0 = all
	RingSize int    // 0 means DefaultRingSize()
	// MaxSockets sizes the tracer's owner table; MaxKeys the (process,
	// destination) rows kept (further ones are summed into one Other
	// row; 0 means DefaultMaxKeys); MaxJoin the timewait entries
	// remembered for attribution (0 means DefaultJoinEntries).
	MaxSockets, MaxKeys, MaxJoin int
	// Tier picks the tracer's hooks (tracer.Options.Tier).
	Tier tracer.Tier
	// By is how processes fold into rows (workload.ByProgram by default).
	By workload.By
	// Owners tells what owns each row's processes (cgroup, container,
	// pod, unit); nil: nothing is known beyond the processes.
	Owners workload.Resolver
	// Select keeps the rows of some pods and containers only.
	Select workload.Selector
	// PerProcess: frames also carry each process's counts (Frame.Processes),
	// whatever By folds.
	PerProcess bool
	// Ready is called once tracing is live (after Follow).
	Ready func()
	// Follow, when not nil, restricts tracing to the processes it puts
	// in the followed set and to everything they fork from then on
	// (tracer.Options.Follow). It is called once tracing is live, before
	// Ready; it typically follows itself, starts a command and unfollows
	// itself.
	Follow func(Follower) error
	// Expire drops the rows that counted nothing for this long (and the
	// per-destination timewait counters quiet as long), so that a session
	// that runs for days keeps room for the workloads that come after the
	// ones gone; their counts leave the frames with them. 0: rows stay for
	// the session (top, run). At least a minute: a timewait socket lives 60 s
	// and its row must still be there to be joined.
	Expire time.Duration
	// Immediate emits a first frame as soon as tracing is live (its
	// interval is the time since tracing began), then one every Interval.
	Immediate bool
	// InventoryCPU bounds the time reading the sockets of every namespace
	// takes, as a share of one CPU (0: DefaultInventoryCPU; 1 or more:
	// every frame). iter/tcp walks the host's whole established hash for
	// each namespace, ~0.3 µs a socket: a host holding a quarter of a
	// million timewait sockets costs ~75 ms a read. A frame reads the
	// sockets again once the last read's cost is at most this share of
	// the time since; otherwise it keeps the last read's figures (the
	// timewait sockets held, the headroom, with its time in
	// Frame.InventoryTime), while the counts and rates from the tracer's
	// events are the frame's own. The first frame and the final one
	// always read.
	InventoryCPU float64
	// Stacks takes the user stack of connect() calls, to name each row's
	// call sites (tracer.Options.StackSample): 0 none, 1 every connect,
	// N > 1 the first tracer.StackFirst of each process and destination
	// then one in N.
	Stacks int
	// HTTPCallers, with Stacks, names the line that called Go net/http
	// for its dials, from uprobes on the programs seen dialling through
	// it (callsite.Sites.ProbeGoHTTP; Linux 5.15+): two uprobe hits per
	// new connection of such a program.
	HTTPCallers bool
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

// DefaultMaxKeys: each row of the table holds two histograms (~4.4 KiB
// with the row); the engine's two snapshots hold its counts and medians
// (~400 bytes a row).
const DefaultMaxKeys = 1024

// Frame is one interval of a session.
type Frame struct {
	Time     time.Time
	Interval time.Duration // since the previous frame
	Uptime   time.Duration // since tracing began
	// Rows holds every row of the table, in the order their keys first
	// appeared, then the Other row (Row.Other) if any event found the
	// table full.
	Rows []Row
	// By is how the rows fold processes.
	By workload.By
	// Processes is every process's counts, when Config.PerProcess.
	Processes []Process
	// Destinations, soonest exhaustion first, then least headroom.
	Destinations []report.LiveDestination
	Namespaces   []report.Namespace
	Losses       report.Losses
	Tier         tracer.Tier
	Errors       []string // namespaces that could not be read
	// ScanTime is how long the last read of every namespace's sockets
	// took, and InventoryTime when it began: the time of the figures
	// that come from the sockets (Config.InventoryCPU).
	ScanTime      time.Duration
	InventoryTime time.Time
	// Final marks the frame emitted after the drain (Config.Drain).
	Final bool
}

// Row is one (workload, destination) row of a frame.
type Row struct {
	Key aggregate.Key // zero in the Other row
	// Other is the row summing the events whose key found the table
	// full; it has counts and rates only.
	Other            bool
	aggregate.Counts // cumulative
	// Recent is what the row counted over the frame's interval.
	Recent aggregate.Counts
	// Processes is how many distinct PIDs the row folds; PID the first of
	// them, Comm its thread-group leader's comm, PPID its parent and
	// ParentComm the parent's comm when it could be read.
	Processes  int
	PID, PPID  uint32
	Comm       string
	ParentComm string
	// Owner is what owns the row's (first) process: cgroup, container,
	// pod, unit.
	Owner workload.Identity
	// ConnectsPerS and TimewaitPerS are over the frame's interval.
	ConnectsPerS, TimewaitPerS float64
	// TimewaitNow is the timewait sockets held now that the row's
	// connections left (the inventory joined by 4-tuple).
	TimewaitNow int
	// LifetimeP50 and BytesP50 are the medians of the connection
	// lifetime and of bytes sent plus received, when known.
	LifetimeP50   time.Duration
	LifetimeKnown bool
	BytesP50      uint64
	BytesKnown    bool
	// HeadroomPct and ExhaustionInS are the destination's, as in
	// Frame.Destinations: the least headroom of its source addresses and
	// the soonest exhaustion; nil when no socket is toward it now, and
	// when it is not heading for exhaustion. Client rows only.
	HeadroomPct, ExhaustionInS *float64
	Verdict                    verdict.Result
	// CallSites are the row's call sites, by connections they opened
	// (of those whose stack was taken: Config.Stacks), most first;
	// CallSitesOther counts the connections of stacks past the row's
	// slots. Empty without stacks.
	CallSites      []CallSite
	CallSitesOther uint64
	// Library is the client library of the first call site, or the proxy
	// the program is (verdict.Proxy): what the advice was chosen for.
	Library string
}

// CallSite is one of a row's call sites and the connections it opened.
type CallSite struct {
	Site     *callsite.Site // nil: a stack past the bound of known stacks
	Connects uint64
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

	mu     sync.Mutex // guards join, keys, twDest, owners (the reader adds)
	owners map[aggregate.Key]*rowOwner
	// The per-process tally (Config.PerProcess): by PID, in order.
	procs     map[uint32]*Process
	procOrder []uint32
	untallied uint64 // processes it had no room for
	join      *join
	// Scratch of the join's attribution, reused frame after frame.
	perRow  []int
	bases   []uint64
	missed  []int
	keys    []aggregate.Key
	keyIdx  map[aggregate.Key]int32
	twDest  map[destKey]*twCount
	prev    aggregate.Snapshot
	spare   aggregate.Snapshot // memory for the next snapshot
	prevNs  map[uint32]nsCounters
	nsRates map[uint32]nsRates              // the TcpExt rates of the last read
	nsMem   map[uint32]*inventory.Namespace // each namespace's scan, reused
	read    inventoryRead                   // the last read of the sockets
	drains  atomic.Uint64                   // times the reader emptied the ring
	frames  uint64                          // frames made
	expired uint64                          // frames made at the last expiry
	// unresolved counts the events and connect counts whose cgroup had
	// no path (Config.Owners).
	unresolved atomic.Uint64
	// sites names the connect() stacks (Config.Stacks); nil without.
	sites *callsite.Sites
}

// DefaultRingSize is the engine's ring buffer: 1 MiB per CPU, at least 2
// and at most 16 MiB. The engine prints no line per event, so its reader
// drains the ring every 100 ms (or as soon as a quarter is full) whatever
// the load: 2 MiB is 11,400 records (184 bytes each), half a second of the 24k
// connections/s a 2-CPU machine can churn, and the churn a host can reach
// grows with its CPUs. The ring is mapped twice into the process (so that
// a record can wrap around its end), and all of it counts in the RSS.
func DefaultRingSize() int {
	mib := 2
	for mib < runtime.NumCPU() && mib < 16 {
		mib *= 2
	}
	return mib << 20
}

// DefaultInventoryCPU is Config.InventoryCPU's default: 4 % of one CPU,
// so that with its frames and events top stays within 5 % on a host that
// churns little.
const DefaultInventoryCPU = 0.04

// maxTwDest bounds the per-destination timewait counters.
const maxTwDest = 16384

// Run traces and calls emit with a frame every interval until ctx is done
// or cfg.Count frames were emitted.
func Run(ctx context.Context, cfg Config, emit func(*Frame) error) error {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.InventoryCPU <= 0 {
		cfg.InventoryCPU = DefaultInventoryCPU
	}
	tr, inv, err := open(&cfg)
	if err != nil {
		return err
	}
	defer inv.Close()
	defer tr.Close()

	s := &session{
		cfg: cfg, tr: tr, inv: inv,
		table:   aggregate.New(cfg.MaxKeys),
		start:   time.Now(),
		join:    newJoin(cfg.MaxJoin),
		keyIdx:  map[aggregate.Key]int32{},
		owners:  map[aggregate.Key]*rowOwner{},
		procs:   map[uint32]*Process{},
		twDest:  map[destKey]*twCount{},
		prevNs:  map[uint32]nsCounters{},
		nsRates: map[uint32]nsRates{},
		nsMem:   map[uint32]*inventory.Namespace{},
	}
	if cfg.Stacks > 0 {
		s.sites = callsite.New(tr, symbol.NewResolver(symbol.DefaultCacheSize))
		if cfg.HTTPCallers {
			s.sites.ProbeGoHTTP() // where it cannot, net/http's own dial is the site
		}
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
	return s.loop(ctx, done, emit)
}

// open loads the tracer and the inventory scanner at once: start-up is
// mostly the kernel verifying and the BTF being read, one CPU each.
func open(cfg *Config) (*tracer.Tracer, *inventory.Scanner, error) {
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
		StackSample:    cfg.Stacks,
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
			return nil, nil, terr // the same cause as the scanner's, if both failed
		}
		return nil, nil, o.err
	}
	return tr, o.inv, nil
}

// loop emits a frame every interval until ctx is done (then drains, if
// asked), cfg.Count frames were emitted, or the reader failed (done).
func (s *session) loop(ctx context.Context, done chan error, emit func(*Frame) error) error {
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	for n := 0; s.cfg.Count == 0 || n < s.cfg.Count; n++ {
		if n == 0 && s.cfg.Immediate {
			if err := s.emitFrame(emit); err != nil {
				return err
			}
			continue
		}
		select {
		case <-ctx.Done():
			if s.cfg.Drain > 0 {
				return s.drain(s.cfg.Drain, emit)
			}
			return nil
		case err := <-done:
			done <- err // for the deferred wait
			return fmt.Errorf("reading events: %w", err)
		case <-tick.C:
		}
		if err := s.emitFrame(emit); err != nil {
			return err
		}
	}
	return nil
}

// emitFrame makes a frame and emits it, then lets rows expire.
func (s *session) emitFrame(emit func(*Frame) error) error {
	f, err := s.frame(false)
	if err != nil {
		return err
	}
	if err := emit(f); err != nil {
		return err
	}
	s.expire()
	return nil
}

// finalDrainWait bounds the final frame's wait for the reader. The reader
// symbolizes each new stack as it reads its announcement, and the first
// stack of a big binary parses it: seconds under emulation (a 1 s bound
// let run's final frame miss the records read after it, seen in a VM).
// A frame on the way waits a second at most.
const finalDrainWait = 10 * time.Second

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
	s.waitDrains(2, finalDrainWait)
	f, err := s.frame(true)
	if err != nil {
		return err
	}
	f.Final = true
	f.Losses.StillClosing = open
	return emit(f)
}

// waitDrains waits until the reader has emptied the ring n more times:
// every record in it now has then been added. Bounded by max: a reader
// that stopped on an error drains no more.
func (s *session) waitDrains(n uint64, max time.Duration) {
	for start, t0 := s.drains.Load(), time.Now(); s.drains.Load() < start+n && time.Since(t0) < max; {
		time.Sleep(5 * time.Millisecond)
	}
}

// seedAll seeds the listeners of every namespace the session looks at,
// reading their listeners only: the first frame reads the rest.
func (s *session) seedAll() error {
	refs, err := inventory.Namespaces()
	if err != nil {
		return err
	}
	var ns inventory.Namespace
	for _, ref := range refs {
		if !s.wantNetns(ref.Inode) {
			continue
		}
		if err := s.inv.ScanListeners(ref, &ns); err != nil {
			continue // gone, or unreadable: the first frame says which
		}
		if err := s.seedListeners(&ns); err != nil {
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

func (s *session) wantNetns(inode uint32) bool {
	if s.cfg.Netns != 0 {
		return inode == s.cfg.Netns
	}
	return s.cfg.Filter.AdmitsNetns(inode)
}
