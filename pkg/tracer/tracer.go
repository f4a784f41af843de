// Package tracer loads twtrace's BPF programs, attaches them to the TCP
// state and connect()/bind() tracepoints, and turns ring-buffer records into
// typed events.
package tracer

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/pkg/event"
)

// DefaultRingBufferSize holds ~22k records (184 bytes each with the ring's
// header): about a second of the worst churn we measured (~24k
// connections/s) even if the reader stalls.
const DefaultRingBufferSize = 4 << 20

// Options configure a Tracer.
type Options struct {
	// RingBufferSize in bytes: a power of two and a multiple of the page
	// size. 0 means DefaultRingBufferSize.
	RingBufferSize int
	// KindMask has bit 1<<Kind set for each event kind to report; 0 = all.
	// Without the bind_error bit no syscall hook is attached at all.
	KindMask uint32
	// Netns restricts reports to one network namespace (inode); 0 = all.
	Netns uint32
	// PollInterval is how often Read looks at the ring buffer when the
	// kernel has not woken it; 0 means DefaultPollInterval. It bounds the
	// latency of an event.
	PollInterval time.Duration
	// MaxSockets sizes the kernel's table of socket owners; 0 means
	// DefaultMaxSockets. Sockets beyond it are counted (Untracked).
	MaxSockets int
	// CountConnects makes the kernel count connect() attempts per process
	// and destination (read with ReadConnects), in a table of
	// MaxConnectKeys keys (0 means DefaultMaxConnectKeys).
	CountConnects  bool
	MaxConnectKeys int
	// Follow restricts every record to the processes put in the followed
	// set (Follow) and to everything they fork from then on: the kernel
	// grows the set at each fork, so no child is missed however briefly
	// it lives. MaxFollowed bounds the set (0 means DefaultMaxFollowed);
	// forks with no room are counted (UnfollowedForks).
	Follow      bool
	MaxFollowed int
	// BTFCache, when not nil, is shared with other loads made at the same
	// time, so that the kernel's types are decoded once.
	BTFCache *btf.Cache
	// Tier picks the kernel hooks: TierAuto (the zero value) uses the
	// precise tier where its programs attach; TierPrecise makes New fail
	// (ErrPreciseUnavailable) where they do not.
	Tier Tier
	// MaxTimewait sizes the precise tier's table of live timewait sockets
	// (0 means DefaultMaxTimewait); sockets with no room get no
	// timewait_end and are counted (UntrackedTimewait).
	MaxTimewait int
	// StackSample takes the user stack of connect() calls (their call
	// site, read with Stack): 0 none, 1 every one, N > 1 the first
	// StackFirst of each process and destination on each CPU then one in
	// N (N > 1 needs CountConnects; without it every one is taken).
	// MaxStacks bounds the distinct stacks kept (0 means
	// DefaultMaxStacks); stacks with no room are counted (LostStacks).
	StackSample int
	MaxStacks   int
}

// StackFirst is how many connect() calls of each process and destination
// have their stack taken before sampling starts (Options.StackSample).
const StackFirst = 8

// DefaultMaxStacks is how many distinct connect() stacks the kernel keeps;
// the table is not preallocated (560 bytes a stack).
const DefaultMaxStacks = 16384

// DefaultMaxTimewait is the default tcp_max_tw_buckets of a host with 4 GiB
// or more; the table is not preallocated, so its size costs nothing.
const DefaultMaxTimewait = 262144

// DefaultMaxConnectKeys is how many (process, destination) pairs the
// kernel counts connect() attempts for at once. Keys of exited processes
// are removed by ReadConnects; attempts with no room are counted
// (UncountedConnects).
const DefaultMaxConnectKeys = 16384

// DefaultMaxFollowed is how many processes can be followed at once.
const DefaultMaxFollowed = 65536

// Errors a caller can tell apart (with errors.Is) to explain what is missing.
var (
	ErrPermission    = errors.New("missing privileges: run as root or grant CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on kernels before 5.8)")
	ErrNoBTF         = errors.New("kernel BTF not found at /sys/kernel/btf/vmlinux: a kernel built with CONFIG_DEBUG_INFO_BTF=y is needed")
	ErrKernelTooOld  = errors.New("kernel too old: twtrace needs Linux 5.9 or later (BPF ring buffers, BTF-typed tracepoints, bpf_skc_to_tcp_sock)")
	ErrTracefsAbsent = errors.New("tracefs is not mounted and could not be mounted: run 'mount -t tracefs nodev /sys/kernel/tracing'")
)

// Tracer is a loaded and attached set of twtrace programs.
type Tracer struct {
	objs   twtraceObjects
	links  []link.Link
	reader *ringbuf.Reader
	clock  event.Clock
	poll   time.Duration
	mask   uint32 // event kinds attached for
	follow bool

	deadline atomic.Int64 // Unix ns of the caller's read deadline; 0 = none

	connMu   sync.Mutex
	connSeen map[twtraceConnectKey]uint64 // connect counts already reported
	connVals []uint64

	tier         TierInfo
	precise      *preciseObjs
	bss          *ebpf.Map
	connectExits *ebpf.Variable
	procsSince   *ebpf.Variable

	// The net/http callers (gohttp.go).
	goHTTP         goHTTP
	goHTTPAttached *ebpf.Variable
	stackSample    int

	closeOnce sync.Once
}

// DefaultPollInterval bounds how long an event waits in the ring buffer:
// the kernel side does not wake the reader per record (a wake-up costs
// microseconds inside the traced connection's path), userspace polls.
const DefaultPollInterval = 100 * time.Millisecond

// DefaultMaxSockets is how many sockets can be between connect() (or their
// first close) and their end at once. Each open socket costs 224 bytes of
// kernel memory; the table is not preallocated.
const DefaultMaxSockets = 131072

// ProgramNames are the names of every BPF program twtrace loads, for tools
// that look them up in the kernel (bpftool, run-time statistics).
var ProgramNames = []string{"tw_state", "tw_state_nest", "tw_reset", "tw_reset_nest",
	"tw_enter_bind", "tw_exit_bind", "tw_fork", "tw_exec",
	// the net/http callers' uprobes, once attached
	"tw_http_queue", "tw_http_dial",
	// the precise tier's
	"tw_alloc", "tw_expire", "tw_kill", "tw_segment", "tw_reuse", "tw_connect4", "tw_connect6"}

type attachment struct {
	name string
	prog *ebpf.Program
	btf  bool   // tp_btf, attached by BTF id
	grp  string // classic tracepoint group
}

// attachments lists the hooks for the event kinds in mask, in attach
// order. bind() failures need syscall tracepoints, which put every
// syscall of every task on the kernel's slow path while attached (~5 %
// of a syscall-heavy host): they are attached only when asked for.
func (o *twtraceObjects) attachments(mask uint32) []attachment {
	a := []attachment{
		// Who each process is (bpf/procs.h), for every process on the
		// host, before anything records it; the fork hook grows the
		// followed set too.
		{name: "sched_process_fork", prog: o.TwFork, btf: true},
		{name: "sched_process_exec", prog: o.TwExec, btf: true},
		// Each primary before its nested twin: the order they run in.
		{name: "inet_sock_set_state", prog: o.TwState, btf: true},
		{name: "inet_sock_set_state", prog: o.TwStateNest, btf: true},
		{name: "tcp_receive_reset", prog: o.TwReset, btf: true},
		{name: "tcp_receive_reset", prog: o.TwResetNest, btf: true},
	}
	if mask&(1<<event.KindBindError) != 0 {
		a = append(a,
			attachment{grp: "syscalls", name: "sys_enter_bind", prog: o.TwEnterBind},
			attachment{grp: "syscalls", name: "sys_exit_bind", prog: o.TwExitBind})
	}
	return a
}

// Preflight reports the first reason twtrace cannot run here, or nil.
func Preflight() error {
	if !privileged() {
		return ErrPermission
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return ErrNoBTF
	}
	// Below 5.11 BPF memory is charged to RLIMIT_MEMLOCK (64 KiB by
	// default, less than one ring buffer); from 5.11 on, to the memory
	// cgroup, and this is a no-op. It must come before the first probe:
	// a second twtrace on a 5.10 host fails that probe with EPERM
	// otherwise.
	memlockErr := rlimit.RemoveMemlock()
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return ErrKernelTooOld
		}
		if errors.Is(err, unix.EPERM) {
			if memlockErr != nil {
				return fmt.Errorf("the kernel charges BPF memory to RLIMIT_MEMLOCK, which could not be raised (%v): grant CAP_SYS_RESOURCE or raise it with 'ulimit -l unlimited'", memlockErr)
			}
			return ErrPermission
		}
		return fmt.Errorf("probing ring buffer support: %w", err)
	}
	return ensureTracefs()
}

// New checks the host, loads the programs and attaches every one of them.
// When it returns without error, tracing is live.
func New(opts Options) (*Tracer, error) {
	if err := Preflight(); err != nil { // raises RLIMIT_MEMLOCK too
		return nil, err
	}
	spec, err := loadTwtrace()
	if err != nil {
		return nil, fmt.Errorf("reading embedded BPF objects: %w", err)
	}
	if err := configure(spec, &opts); err != nil {
		return nil, err
	}

	t := &Tracer{poll: opts.PollInterval, mask: opts.KindMask, follow: opts.Follow, connSeen: map[twtraceConnectKey]uint64{}}
	if t.mask == 0 {
		t.mask = ^uint32(0)
	}
	if t.poll <= 0 {
		t.poll = DefaultPollInterval
	}
	ld, err := loadObjects(spec, &t.objs, opts.BTFCache, opts.Tier != TierTracepoint, opts.StackSample > 0)
	t.bss, t.connectExits, t.procsSince = ld.bss, ld.connectExits, ld.procsSince
	t.goHTTPAttached, t.stackSample = ld.goHTTPAttached, opts.StackSample
	if err != nil {
		return nil, loadError(err)
	}
	if err := t.attach(); err != nil {
		t.Close()
		return nil, err
	}
	if err := t.startPrecise(opts.Tier, ld.pre, ld.preErr); err != nil {
		t.Close()
		return nil, err
	}
	// The kernel's types, decoded to load the programs (several MiB),
	// are garbage now: hand them back before the ring buffer is mapped,
	// or the process's peak RSS holds both.
	debug.FreeOSMemory()
	t.reader, err = ringbuf.NewReader(t.objs.Events)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("opening ring buffer: %w", err)
	}
	t.clock, err = monotonicClock()
	if err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// configure sizes spec's maps and sets its settings from opts, before
// the load: a map a feature does not use is made as small as it gets.
func configure(spec *ebpf.CollectionSpec, opts *Options) error {
	size := opts.RingBufferSize
	if size == 0 {
		size = DefaultRingBufferSize
	}
	if size < os.Getpagesize() || size&(size-1) != 0 {
		return fmt.Errorf("ring buffer size %d: must be a power of two of at least %d bytes", size, os.Getpagesize())
	}
	spec.Maps["events"].MaxEntries = uint32(size)
	if err := sizeMap(spec, "owners", "max sockets", opts.MaxSockets, DefaultMaxSockets, 1<<24); err != nil {
		return err
	}
	// Wake the reader early once a quarter of the ring is used: a burst
	// then cannot fill it between two polls.
	if err := spec.Variables["wakeup_bytes"].Set(uint64(size / 4)); err != nil {
		return fmt.Errorf("setting wake-up threshold: %w", err)
	}
	if opts.KindMask != 0 {
		if err := spec.Variables["events_mask"].Set(opts.KindMask); err != nil {
			return fmt.Errorf("setting event mask: %w", err)
		}
	}
	spec.Maps["connects"].MaxEntries = 1 // unused: as small as it gets
	if opts.CountConnects {
		if err := sizeMap(spec, "connects", "max connect keys", opts.MaxConnectKeys, DefaultMaxConnectKeys, 1<<20); err != nil {
			return err
		}
		if err := spec.Variables["count_connects"].Set(uint32(1)); err != nil {
			return fmt.Errorf("enabling connect counts: %w", err)
		}
	}
	if opts.Netns != 0 {
		if err := spec.Variables["target_netns"].Set(opts.Netns); err != nil {
			return fmt.Errorf("setting netns filter: %w", err)
		}
	}
	if opts.KindMask != 0 && opts.KindMask&(1<<event.KindBindError) == 0 {
		spec.Maps["binds"].MaxEntries = 1 // no bind() hook attached: unused
	}
	spec.Maps["followed"].MaxEntries = 1 // unused: as small as it gets
	if opts.Follow {
		if err := sizeMap(spec, "followed", "max followed", opts.MaxFollowed, DefaultMaxFollowed, 1<<22); err != nil {
			return err
		}
		if err := spec.Variables["follow"].Set(uint32(1)); err != nil {
			return fmt.Errorf("enabling follow: %w", err)
		}
	}
	if err := sizeMap(spec, "tw_socks", "max timewait", opts.MaxTimewait, DefaultMaxTimewait, 1<<24); err != nil {
		return err
	}
	if err := configureStacks(spec, opts); err != nil {
		return err
	}
	if opts.Tier > TierPrecise {
		return fmt.Errorf("unknown tier %d", opts.Tier)
	}
	return nil
}

// sizeMap gives map name n entries: def when n is 0, and an error naming
// what (an option) when n is not between 1 and limit.
func sizeMap(spec *ebpf.CollectionSpec, name, what string, n, def, limit int) error {
	switch {
	case n == 0:
		n = def
	case n < 0 || n > limit:
		return fmt.Errorf("%s %d: must be between 1 and %d", what, n, limit)
	}
	spec.Maps[name].MaxEntries = uint32(n)
	return nil
}

// loadError says why the kernel refused to load the programs.
func loadError(err error) error {
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%w (loading BPF programs: %v)", ErrPermission, err)
	}
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		// A helper the kernel does not know: older than our floor.
		if strings.Contains(verr.Error(), "unknown func") {
			return fmt.Errorf("%w (%v)", ErrKernelTooOld, verr)
		}
		return fmt.Errorf("loading BPF programs: the kernel's verifier refused them: %v", verr)
	}
	return fmt.Errorf("loading BPF programs: %w", err)
}

// attach attaches the programs the kinds asked for (and following) need.
func (t *Tracer) attach() error {
	// Every fork from (about) now on is seen: a process started later
	// whose identity is not cached has its parent unknown, not guessed.
	// Set before the fork hook is attached, so that a fork in between
	// counts as unknown too.
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
		return fmt.Errorf("reading CLOCK_MONOTONIC: %w", err)
	}
	if err := t.procsSince.Set(uint64(now.Nano())); err != nil {
		return fmt.Errorf("setting the time forks are seen from: %w", err)
	}
	for _, a := range t.objs.attachments(t.mask) {
		var l link.Link
		var err error
		if a.btf {
			l, err = link.AttachTracing(link.TracingOptions{Program: a.prog})
		} else {
			l, err = link.Tracepoint(a.grp, a.name, a.prog, nil)
		}
		if err != nil {
			if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
				return fmt.Errorf("%w (attaching %s: %v)", ErrPermission, a.name, err)
			}
			return fmt.Errorf("attaching to tracepoint %s: %w", a.name, err)
		}
		t.links = append(t.links, l)
	}
	return nil
}

// Read delivers every event to fn until Stop or Close is called. The
// *Event is reused between calls: copy it to keep it. A record that cannot
// be decoded is an error (it would mean the BPF and Go sides disagree).
//
// The kernel side submits without waking the reader (unless a quarter of
// the ring is full), so Read drains the ring every poll interval: a
// burst is read in one go, and no wake-up is paid per connection.
func (t *Tracer) Read(fn func(*event.Event)) error {
	return t.ReadBatches(fn, nil)
}

// ReadBatches is Read, calling drained (if not nil) each time the ring
// buffer has been emptied, and before returning: the moment to flush
// buffered output, at most one poll interval after an event arrived.
func (t *Tracer) ReadBatches(fn func(*event.Event), drained func()) error {
	if drained == nil {
		drained = func() {}
	}
	defer drained()
	var rec ringbuf.Record
	var ev event.Event
	for {
		next := time.Now().Add(t.poll)
		user := t.deadline.Load()
		if user != 0 && user < next.UnixNano() {
			next = time.Unix(0, user)
		}
		t.reader.SetDeadline(next)
		for {
			err := t.reader.ReadInto(&rec)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, ringbuf.ErrFlushed) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("reading ring buffer: %w", err)
			}
			if err := event.Decode(rec.RawSample, t.clock, &ev); err != nil {
				return fmt.Errorf("decoding event record: %w", err)
			}
			fn(&ev)
		}
		drained()
		if user := t.deadline.Load(); user != 0 && time.Now().UnixNano() >= user {
			return os.ErrDeadlineExceeded
		}
	}
}

// Stop detaches every program and makes Read return once it has delivered
// the records already in the ring buffer: nothing accepted is dropped.
// Safe to call while Read blocks; call Close afterwards.
func (t *Tracer) Stop() error {
	derr := t.Detach()
	return errors.Join(derr, t.reader.Flush())
}

// SetDeadline makes Read return os.ErrDeadlineExceeded once d has passed
// and the ring buffer is empty; the zero time removes the deadline. Safe
// to call while Read runs; it takes effect within one poll interval.
func (t *Tracer) SetDeadline(d time.Time) {
	if d.IsZero() {
		t.deadline.Store(0)
		return
	}
	t.deadline.Store(max(d.UnixNano(), 1))
}

// Programs returns the loaded programs by name, for run-time statistics.
func (t *Tracer) Programs() map[string]*ebpf.Program {
	out := map[string]*ebpf.Program{}
	for _, a := range t.objs.attachments(t.mask) {
		if info, err := a.prog.Info(); err == nil {
			out[info.Name] = a.prog
		}
	}
	if t.precise != nil {
		for name, p := range t.precise.progs {
			out[name] = p
		}
	}
	if t.GoHTTPExecutables() > 0 {
		out["tw_http_queue"], out["tw_http_dial"] = t.objs.TwHttpQueue, t.objs.TwHttpDial
	}
	return out
}

// Detach stops the kernel side from producing events; records already in
// the ring buffer can still be read (set a deadline to drain them).
func (t *Tracer) Detach() error {
	errs := []error{t.goHTTP.detach()}
	for i := len(t.links) - 1; i >= 0; i-- {
		if err := t.links[i].Close(); err != nil {
			errs = append(errs, err)
		}
	}
	t.links = nil
	return errors.Join(errs...)
}

// Lost is the number of records the kernel could not put into the ring
// buffer because it was full, summed over CPUs.
func (t *Tracer) Lost() (uint64, error) { return t.lostCount(twtraceLostSlotLOST_RECORDS) }

// Untracked is the number of sockets whose owner could not be recorded
// because the owner table (Options.MaxSockets) was full: a timewait entry
// of such a socket goes unreported.
func (t *Tracer) Untracked() (uint64, error) { return t.lostCount(twtraceLostSlotLOST_OWNERS) }

// lostCount sums one slot of the kernel's per-CPU loss counters.
func (t *Tracer) lostCount(slot twtraceLostSlot) (uint64, error) {
	var perCPU []uint64
	if err := t.objs.Lost.Lookup(slot, &perCPU); err != nil {
		return 0, fmt.Errorf("reading lost-record counters: %w", err)
	}
	var sum uint64
	for _, n := range perCPU {
		sum += n
	}
	return sum, nil
}

// Missed is the number of transitions the kernel skipped for good: runs
// of a program it did not start because that program (or, for classic
// tracepoints, any BPF program) was already running on the CPU
// (recursion_misses, Linux 5.12+; 0 before). The state hooks have nested
// twins that handle what their primary misses (see the BPF source), so
// their misses count only when the twin did not make up for them. The
// precise tier's fentry/fexit programs count too: a skipped run of one is
// an overflow reported as a timewait entry, or a timewait_end, reuse or
// connect error missing.
func (t *Tracer) Missed() (uint64, error) {
	misses := func(p *ebpf.Program) (uint64, error) {
		st, err := p.Stats()
		if err != nil {
			return 0, fmt.Errorf("reading program stats: %w", err)
		}
		return st.RecursionMisses, nil
	}
	var sum, primaries uint64
	// The fork and exec hooks run in process context, where no run of
	// the same program can interrupt them: counted should that change.
	progs := []*ebpf.Program{t.objs.TwEnterBind, t.objs.TwExitBind, t.objs.TwFork, t.objs.TwExec}
	if t.precise != nil {
		for _, p := range t.precise.progs {
			progs = append(progs, p)
		}
	}
	for _, p := range progs {
		n, err := misses(p)
		if err != nil {
			return 0, err
		}
		sum += n
	}
	for _, p := range []*ebpf.Program{t.objs.TwState, t.objs.TwReset} {
		n, err := misses(p)
		if err != nil {
			return 0, err
		}
		primaries += n
	}
	rescued, err := t.Rescued()
	if err != nil {
		return 0, err
	}
	if primaries > rescued {
		sum += primaries - rescued
	}
	return sum, nil
}

// Recovered is the number of timewait entries reported late (Event.Recovered):
// the kernel ran none of the programs at their end, and the socket's
// record was found afterwards.
func (t *Tracer) Recovered() (uint64, error) {
	return t.lostCount(twtraceLostSlotRECOVERED_ENDS)
}

// Unfinished counts the sockets the owner table still holds as closed:
// a process closed them first, but their move to CLOSE (the timewait
// entry, or the RST that ends them) has not been seen. Called after the
// traced load is over, each is a socket whose end every program missed
// (or one still closing). It walks the table: call it once, at the end.
func (t *Tracer) Unfinished() (uint64, error) {
	var key uint64
	var owner twtraceSockOwner
	var n uint64
	it := t.objs.Owners.Iterate()
	for it.Next(&key, &owner) {
		if owner.Closed != 0 {
			n++
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("reading the owner table: %w", err)
	}
	return n, nil
}

// SeedListener tells the kernel side that a socket listens on port in
// namespace netns: listen() calls made before tracing began were not seen,
// and without this the connections accepted on that port that the server
// closes first would be reported with role unknown. The listening process
// stays unknown (opener pid 0). A listener already known is kept.
func (t *Tracer) SeedListener(netns uint32, port uint16) error {
	k := twtraceListenKey{Netns: netns, Port: port}
	err := t.objs.Listeners.Update(&k, &twtraceListener{}, ebpf.UpdateNoExist)
	if err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return fmt.Errorf("seeding a listener: %w", err)
	}
	return nil
}

// UncountedConnects is the number of connect() attempts the kernel could
// not count because its table (Options.MaxConnectKeys) was full.
func (t *Tracer) UncountedConnects() (uint64, error) {
	return t.lostCount(twtraceLostSlotLOST_CONNECTS)
}

// UnfollowedForks is the number of processes forked by followed ones that
// the followed set (Options.MaxFollowed) had no room for: their sockets
// go unreported.
func (t *Tracer) UnfollowedForks() (uint64, error) {
	return t.lostCount(twtraceLostSlotLOST_FOLLOW)
}

// Follow adds process pid (a thread group id, as the host's pid namespace
// numbers it) to the followed set; what it forks from now on follows.
// The tracer must have been made with Options.Follow.
func (t *Tracer) Follow(pid uint32) error {
	if !t.follow {
		return errors.New("tracer made without Options.Follow")
	}
	if err := t.objs.Followed.Update(pid, uint8(1), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("following pid %d: %w", pid, err)
	}
	return nil
}

// Unfollow removes pid from the followed set (its later forks are not
// followed; children already forked stay).
func (t *Tracer) Unfollow(pid uint32) error {
	if err := t.objs.Followed.Delete(pid); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unfollowing pid %d: %w", pid, err)
	}
	return nil
}

// SweepFollowed removes the processes that are gone (reaped: their
// sockets were closed at their exit, before that) from the followed set,
// and returns how many are left.
func (t *Tracer) SweepFollowed() (int, error) {
	var pid uint32
	var v uint8
	var gone []uint32
	left := 0
	it := t.objs.Followed.Iterate()
	for it.Next(&pid, &v) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			gone = append(gone, pid)
		} else {
			left++
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("reading the followed set: %w", err)
	}
	for _, p := range gone {
		if err := t.Unfollow(p); err != nil {
			return 0, err
		}
	}
	return left, nil
}

// ConnectCount is a number of connect() attempts by one process toward
// one destination.
type ConnectCount struct {
	Netns uint32
	PID   uint32
	Comm  [16]byte // NUL-padded, chosen by the process: escape it
	// Proc is who the opener was inside connect(), and CgroupID its
	// cgroup v2: part of the kernel's key, so an exec or a move to
	// another cgroup starts a count of its own.
	Proc     event.Proc
	CgroupID uint64
	IPv6     bool // family; v4-mapped destinations are reported as IPv4
	Daddr    netip.Addr
	Dport    uint16
	N        uint64
}

// ReadConnects calls fn, for each process and destination, with the
// connect() attempts counted since the previous call (all of them on the
// first call); needs Options.CountConnects. The counted cover every
// attempt that set SYN_SENT: successful, refused and failed ones alike.
// Keys of processes that have exited are deleted from the kernel's table
// once their final count is read, so it holds live processes only. The
// *ConnectCount is reused between calls.
func (t *Tracer) ReadConnects(fn func(*ConnectCount)) error {
	t.connMu.Lock()
	defer t.connMu.Unlock()
	var (
		k    twtraceConnectKey
		c    ConnectCount
		idle []twtraceConnectKey
	)
	report := func(k *twtraceConnectKey, total uint64) {
		seen := t.connSeen[*k]
		if total <= seen {
			return
		}
		t.connSeen[*k] = total
		c = ConnectCount{Netns: k.Netns, PID: k.Pid, CgroupID: k.CgroupId, Dport: k.Dport, N: total - seen}
		for i, b := range k.Comm {
			c.Comm[i] = byte(b)
		}
		c.Proc = procOf(&k.Proc)
		if k.Family == afInet6 {
			c.Daddr = netip.AddrFrom16(k.Daddr).Unmap()
			c.IPv6 = !c.Daddr.Is4()
		} else {
			c.Daddr = netip.AddrFrom4([4]byte(k.Daddr[:4]))
		}
		fn(&c)
	}
	sum := func() (n uint64) {
		for _, v := range t.connVals {
			n += v
		}
		return n
	}
	it := t.objs.Connects.Iterate()
	for it.Next(&k, &t.connVals) {
		total := sum()
		if total == t.connSeen[k] {
			idle = append(idle, k)
		}
		report(&k, total)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading connect counts: %w", err)
	}
	// A process that has exited counts no more: read its final count and
	// free its key. (Nothing can race with the delete: only the process
	// itself adds to its key.)
	for i := range idle {
		k := &idle[i]
		if err := unix.Kill(int(k.Pid), 0); !errors.Is(err, unix.ESRCH) {
			continue
		}
		if err := t.objs.Connects.Lookup(k, &t.connVals); err != nil {
			continue // gone already
		}
		report(k, sum())
		if err := t.objs.Connects.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("deleting a connect count: %w", err)
		}
		delete(t.connSeen, *k)
	}
	return nil
}

const afInet6 = 10

// procOf converts the kernel's struct proc_id.
func procOf(k *twtraceProcId) event.Proc {
	p := event.Proc{PPID: k.Ppid, ExeDev: k.ExeDev, ExeIno: k.ExeIno}
	for i, b := range k.Comm {
		p.Comm[i] = byte(b)
	}
	return p
}

// UnknownParents is the number of times a process's identity was made
// again after the kernel's cache had pushed it out, with its parent left
// unknown (Proc.PPID 0) rather than guessed: it may have been reparented.
func (t *Tracer) UnknownParents() (uint64, error) {
	return t.lostCount(twtraceLostSlotLOST_PARENTS)
}

// Rescued is the number of transitions handled by a nested twin because
// the kernel skipped the primary program (a softirq interrupted it).
func (t *Tracer) Rescued() (uint64, error) {
	var sum uint64
	for slot := uint32(0); slot < 2; slot++ {
		var perCPU []twtraceGuard
		if err := t.objs.Guards.Lookup(slot, &perCPU); err != nil {
			return 0, fmt.Errorf("reading rescued-run counter: %w", err)
		}
		for _, g := range perCPU {
			sum += g.Rescued
		}
	}
	return sum, nil
}

// Close detaches and unloads everything; Read returns.
func (t *Tracer) Close() error {
	var errs []error
	t.closeOnce.Do(func() {
		if err := t.Detach(); err != nil {
			errs = append(errs, err)
		}
		if t.reader != nil {
			if err := t.reader.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if err := t.objs.Close(); err != nil {
			errs = append(errs, err)
		}
		t.precise.close()
		if t.bss != nil {
			t.bss.Close()
		}
	})
	return errors.Join(errs...)
}

func monotonicClock() (event.Clock, error) {
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return event.Clock{}, fmt.Errorf("reading CLOCK_MONOTONIC: %w", err)
	}
	return event.Clock{BootWall: now.Add(-time.Duration(ts.Nano()))}, nil
}

// privileged: root, or the capabilities that load tracing programs.
func privileged() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return os.Geteuid() == 0
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(unix.CAP_SYS_ADMIN) {
		return true
	}
	return has(unix.CAP_BPF) && has(unix.CAP_PERFMON)
}

// ensureTracefs mounts tracefs where the kernel expects it when no one has:
// tracepoint ids are read from it.
func ensureTracefs() error {
	for _, dir := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		if _, err := os.Stat(dir + "/events/sock/inet_sock_set_state/id"); err == nil {
			return nil
		}
	}
	if err := unix.Mount("nodev", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		return fmt.Errorf("%w (%v)", ErrTracefsAbsent, err)
	}
	if _, err := os.Stat("/sys/kernel/tracing/events/sock/inet_sock_set_state/id"); err != nil {
		return fmt.Errorf("tracefs has no sock:inet_sock_set_state tracepoint: kernel too old or built without it")
	}
	return nil
}
