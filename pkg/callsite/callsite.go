// Package callsite names where in its code a process opened its
// connections. The kernel keeps each distinct connect() stack and names it
// in the records by a hash (tracer.Stack, bpf/stacks.h); when a stack is
// new (event.KindStack), Sites reads it and symbolizes it at once, while
// the process lives, and maps every stack to a canonical one per call
// site: two processes of one program (whose stacks differ by their
// address-space layout) count toward the same site.
package callsite

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/symbol"
	"github.com/twtrace/twtrace/pkg/tracer"
)

// StackReader reads a stack the kernel keeps (tracer.Tracer.Stack).
type StackReader interface {
	Stack(id uint64) (tracer.Stack, error)
}

// Site is a call site: the stack that opened connections, symbolized.
type Site struct {
	// ID is the canonical stack of the site: the first one seen.
	ID uint64
	// Frames is the stack, innermost first, cut where it stops being
	// trustworthy (symbol.Resolver.Resolve); empty when it could not be
	// read.
	Frames []symbol.Frame
	// Frame is the application's frame that asked for the connection,
	// valid when Known.
	Frame symbol.Frame
	Known bool
	// Library is the client library the stack shows ("net/http",
	// "database/sql", "grpc", "libcurl"), or "".
	Library string
	// Note says why there is no call site, when not Known: the stack was
	// unavailable (then naming the executable, when known), or the process
	// was gone before it could be read.
	Note string
	// Executable is the base name of the process's executable, as it was
	// when the stack was read ("" if unknown): the one thing an unavailable
	// stack still says. Not escaped.
	Executable string

	stack *tracer.Stack // as the kernel kept it; nil if unreadable
	tries int           // failed attempts since the process was gone
}

// pair reports whether s is the site of a pair of stacks
// (tracer.Stack.Caller).
func (s *Site) pair() bool { return s.stack != nil && s.stack.Caller != 0 }

// String is the call site's screen form, "function (file:line)", escaped;
// "" when not known.
func (s *Site) String() string {
	if s == nil || !s.Known {
		return ""
	}
	return s.Frame.String()
}

// DefaultMaxStacks is how many stacks Sites remembers.
const DefaultMaxStacks = 16384

// Stats counts what Sites did.
type Stats struct {
	Stacks     int    // stacks known
	Sites      int    // distinct call sites among them
	Unresolved uint64 // stacks whose process was gone, or that could not be read
	Dropped    uint64 // stacks past DefaultMaxStacks, left without a site
	// GoHTTP counts the executables whose net/http callers are reached
	// (their uprobes attached); GoHTTPRefused those where they could not
	// be (too old a Go, no symbol, a refused uprobe: GoHTTPError says the
	// last reason).
	GoHTTP        int
	GoHTTPRefused uint64
	GoHTTPError   string
}

// goHTTPProber reaches the caller of Go net/http's dials
// (tracer.Tracer's AttachGoHTTP, bpf/gohttp.h).
type goHTTPProber interface {
	GoHTTPSupported() error
	AttachGoHTTP(key, path string, queueOff, dialOff uint64) error
}

// Sites maps the kernel's stack ids to call sites. It is safe for
// concurrent use.
type Sites struct {
	tr  StackReader
	res *symbol.Resolver

	mu     sync.Mutex
	held   map[uint32]*os.File // executables opened by Learn, by pid
	byID   map[uint64]*Site
	bySite map[string]*Site
	max    int
	stats  Stats

	goHTTP      goHTTPProber           // nil: net/http callers not reached
	goHTTPTried map[symbol.FileID]bool // executables asked for
}

// New makes Sites that read stacks from tr and symbolize them with res.
func New(tr StackReader, res *symbol.Resolver) *Sites {
	return &Sites{tr: tr, res: res, held: map[uint32]*os.File{}, byID: map[uint64]*Site{},
		bySite: map[string]*Site{}, max: DefaultMaxStacks, goHTTPTried: map[symbol.FileID]bool{}}
}

// ProbeGoHTTP has a net/http dial goroutine's stack, from now on, probe
// its executable (tracer.Tracer.AttachGoHTTP), so that later connections
// name their caller's line: two uprobe hits per new connection of a
// probed program. It says why not when the stack reader cannot (not a
// tracer, a kernel before 5.15, no stacks taken); then nothing changes.
func (s *Sites) ProbeGoHTTP() error {
	p, ok := s.tr.(goHTTPProber)
	if !ok {
		return errors.New("the stacks' reader cannot probe executables")
	}
	if err := p.GoHTTPSupported(); err != nil {
		return err
	}
	s.mu.Lock()
	s.goHTTP = p
	s.mu.Unlock()
	return nil
}

// Learn symbolizes the stack a KindStack event announces, by its process
// (e.PID), now. The process may be about to exit: its executable is
// opened first, the quickest hold on it, for when its mappings are gone
// by the time they are read.
func (s *Sites) Learn(e *event.Event) {
	if f, err := os.Open(fmt.Sprintf("/proc/%d/exe", e.PID)); err == nil {
		defer f.Close()
		s.mu.Lock()
		s.held[e.PID] = f
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.held, e.PID)
			s.mu.Unlock()
		}()
	}
	s.Canonical(e.Stack, e.PID)
}

// Canonical returns the canonical stack id of id's call site, learning
// the stack first if it is new (pid is the process it was taken in, used
// when the kernel's record does not say). A stack whose process was gone
// before it could be read is tried again, a few times, with pid: another
// process of the same executable places its frames. 0 stays 0; an id
// past the bound is returned as it is, with no site.
func (s *Sites) Canonical(id uint64, pid uint32) uint64 {
	if id == 0 {
		return 0
	}
	s.mu.Lock()
	site, ok := s.byID[id]
	full := len(s.byID) >= s.max
	if !ok && full {
		s.stats.Dropped++
	}
	s.mu.Unlock()
	switch {
	case ok && (site.Known || site.tries == 0 || site.tries >= maxTries || pid == 0):
		return site.ID
	case !ok && full:
		return id
	}
	var fresh *Site
	if ok {
		fresh = s.retry(site, pid)
	} else {
		fresh = s.resolve(id, pid)
	}
	return s.publish(id, site, fresh)
}

// maxTries bounds the attempts at a stack whose process was gone.
const maxTries = 8

// publish makes fresh the site of id, unless another goroutine has
// replaced old meanwhile, and returns id's canonical id.
func (s *Sites) publish(id uint64, old, fresh *Site) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.byID[id]; cur != old {
		return cur.ID // learnt meanwhile
	}
	if key := siteKey(fresh); key != "" {
		if canon, ok := s.bySite[key]; ok {
			fresh = canon
		} else {
			s.bySite[key] = fresh
		}
	}
	// Read after all. (A pair's tries are its own stack's, counted
	// there.)
	if old != nil && old.tries > 0 && fresh.tries == 0 && !old.pair() {
		s.stats.Unresolved--
	}
	s.byID[id] = fresh
	return fresh.ID
}

// Site returns the site of a canonical stack id, or nil.
func (s *Sites) Site(id uint64) *Site {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byID[id]
}

// Stats returns the counts so far.
func (s *Sites) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Stacks, st.Sites = len(s.byID), len(s.bySite)
	return st
}

// siteKey identifies a known call site (with its library: one line may
// be reached through two); "" for a site not known, which stays its own.
func siteKey(s *Site) string {
	if !s.Known {
		return ""
	}
	f := &s.Frame
	return fmt.Sprintf("%s\x00%s\x00%d\x00%s\x00%s", f.Function, f.File, f.Line, f.Module, s.Library)
}

// resolve reads stack id from the kernel and symbolizes it in its
// process.
func (s *Sites) resolve(id uint64, pid uint32) *Site {
	site := &Site{ID: id}
	st, err := s.tr.Stack(id)
	if err != nil {
		site.Note = "stack not readable"
		if errors.Is(err, tracer.ErrNoStack) {
			site.Note = "stack not kept by the kernel"
		}
		s.unresolved()
		return site
	}
	site.stack = &st
	if st.PID != 0 {
		pid = st.PID
	}
	if st.Caller != 0 {
		return s.resolvePair(id, &st, pid)
	}
	if !s.symbolize(site, pid) {
		s.unresolved()
	}
	return site
}

// retry is another attempt at old, whose process was gone, through pid.
func (s *Sites) retry(old *Site, pid uint32) *Site {
	if old.stack.Caller != 0 {
		return s.resolvePair(old.ID, old.stack, pid)
	}
	site := &Site{ID: old.ID, stack: old.stack, tries: old.tries}
	s.symbolize(site, pid)
	return site
}

// symbolize fills site from a snapshot of pid's mappings or, when pid is
// gone, from its executable placed where the kernel saw its code
// (start_code), opened through pid (or the cache): false when neither
// could be had.
func (s *Sites) symbolize(site *Site, pid uint32) bool {
	st := site.stack
	var frames []symbol.Frame
	withRet := false // st.Ret put back as frame 1
	// Ret's code is read first: the process may be exiting.
	snap, err := s.res.Snapshot(int(pid), st.Ret)
	if err == nil && snap.Mapped() {
		frames, withRet = s.resolveWithReturn(snap, st)
	}
	// Gone, or gone between reading its mappings and their files: place
	// the executable where the kernel saw it.
	if !named(frames) && !alive(pid) && st.ExeIno != 0 && st.StartCode != 0 {
		if exeSnap := s.placeExe(st, pid); exeSnap != nil {
			snap = exeSnap
			frames, withRet = s.resolveWithReturn(snap, st)
		}
	}
	// A walk that did not leave the syscall wrapper is unavailable
	// whatever the process's mappings would say: no need to retry.
	walkCut := len(st.IPs) < 2
	if !named(frames) && !alive(pid) && !walkCut {
		site.tries++
		site.Note = "process gone before its stack was read"
		return false
	}
	site.tries = 0
	site.Frames = frames
	if snap != nil {
		site.Executable = snap.Executable
	}
	if site.Executable == "" {
		site.Executable = s.heldName(pid)
	}
	site.Frame, site.Library, site.Known = symbol.CallSite(frames)
	if site.Library == "net/http" && symbol.GoHTTPDialer(frames) {
		s.probeGoHTTP(st, pid)
	}
	switch {
	case site.Known && !withRet && callerOfHidden(frames, site.Frame):
		site.Known, site.Frame = false, symbol.Frame{}
		site.Note = "the caller of connect() is hidden by libc's frameless wrapper"
	case site.Known:
	case !symbol.Available(frames):
		site.Note = "stack unavailable (no frame pointers?)"
		if site.Executable != "" {
			site.Note += " in executable " + symbol.Escape(site.Executable)
		}
	default:
		site.Note = "no frame outside the runtime and libraries"
	}
	return true
}

// placeExe is a snapshot of st's executable alone, placed by the
// start_code the kernel recorded: the binary from the resolver's cache,
// else from the descriptor Learn held, else from any process running the
// same executable now (a worker of the same pool, the next run of a
// loop). nil when none of them can be had.
func (s *Sites) placeExe(st *tracer.Stack, pid uint32) *symbol.Snapshot {
	exe := symbol.FileID{Dev: symbol.KernelDev(st.ExeDev), Inode: st.ExeIno}
	path := fmt.Sprintf("/proc/%d/exe", pid)
	s.mu.Lock()
	if f := s.held[pid]; f != nil {
		path = fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	}
	s.mu.Unlock()
	if snap, err := s.res.ExeSnapshot(int(pid), exe, path, st.StartCode, st.EndCode); err == nil {
		return snap
	}
	if other := runningExe(exe); other != 0 {
		path = fmt.Sprintf("/proc/%d/exe", other)
		if snap, err := s.res.ExeSnapshot(int(pid), exe, path, st.StartCode, st.EndCode); err == nil {
			return snap
		}
	}
	return nil
}

// runningExe is a process running the executable exe now, or 0: a scan
// of /proc, made only for a stack whose process was gone.
func runningExe(exe symbol.FileID) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/exe", &st) == nil && st.Ino == exe.Inode && st.Dev == exe.Dev {
			return pid
		}
	}
	return 0
}

// resolveWithReturn resolves st's frames with the frame a frameless
// syscall wrapper hides (glibc's connect(), Go's Syscall6) put back as
// frame 1: st.Ret, the return address the wrapper's caller left at the
// stack pointer (arm64: in the link register). It is put back only into
// a stack the frame-pointer walk made available (symbol.Available), when
// it is not already frame 1, lies in an executable mapping and follows a
// call instruction (Snapshot.IsReturnAddress). A walk that never left the
// wrapper means code without frame pointers, and then nothing vouches for
// the word at the stack pointer: in a wrapper that made room on the stack
// (glibc's connect() when the process has threads) it is a saved
// argument, and in any function with a frame a slot that may hold a stale
// return address, which passes the call check. Such a stack stays
// unavailable: only the executable is named.
func (s *Sites) resolveWithReturn(snap *symbol.Snapshot, st *tracer.Stack) (frames []symbol.Frame, withRet bool) {
	resolve := s.res.Resolve
	if st.Entry {
		resolve = s.res.ResolveFromEntry // a uprobe's stack (gohttp.h)
	}
	frames = resolve(snap, st.IPs)
	if st.Ret == 0 || len(st.IPs) < 2 || st.Ret == st.IPs[1] || !symbol.Available(frames) ||
		!snap.IsReturnAddress(st.Ret) {
		return frames, false
	}
	addrs := make([]uint64, 0, len(st.IPs)+1)
	addrs = append(addrs, st.IPs[0], st.Ret)
	addrs = append(addrs, st.IPs[1:]...)
	return resolve(snap, addrs), true
}

// callerOfHidden reports whether site, picked from frames to which no
// return address was put back, is the walk's first frame past libc's
// connect(): then it is the caller of the function that called connect(),
// which glibc's frameless wrapper hid (a kernel before 5.15 records no
// return address; in a process with threads glibc's connect() moves the
// stack pointer before the system call, so the word there is not one).
// Naming it would name the wrong function. Go's own wrapper hides a
// runtime frame only, and frame 0 of Go is not in libc.
func callerOfHidden(frames []symbol.Frame, site symbol.Frame) bool {
	if len(frames) < 2 || !symbol.SystemFrame(frames[0]) {
		return false
	}
	for _, f := range frames[1:] {
		if f.Address != frames[0].Address {
			return f.Address == site.Address
		}
	}
	return false
}

// heldName is the base name of pid's executable held open by Learn, or
// "".
func (s *Sites) heldName(pid uint32) string {
	s.mu.Lock()
	f := s.held[pid]
	s.mu.Unlock()
	if f == nil {
		return ""
	}
	target, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		return ""
	}
	return filepath.Base(strings.TrimSuffix(target, " (deleted)"))
}

// named reports whether any frame has a function name.
func named(frames []symbol.Frame) bool {
	for i := range frames {
		if frames[i].Function != "" {
			return true
		}
	}
	return false
}

// alive reports whether pid still has its executable mapped (a zombie
// has not).
func alive(pid uint32) bool {
	_, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return err == nil
}

func (s *Sites) unresolved() {
	s.mu.Lock()
	s.stats.Unresolved++
	s.mu.Unlock()
}

// resolvePair names the site of a pair (tracer.Stack.Caller): the frame
// of the goroutine that queued the dial, when the connect() stack is
// net/http's dial goroutine (a goroutine whose g was recycled cannot lend
// a stale caller to another connect()); else the connect() stack's own
// site. Its frames are the caller's.
func (s *Sites) resolvePair(id uint64, st *tracer.Stack, pid uint32) *Site {
	own := s.Site(s.Canonical(st.Own, pid))
	site := &Site{ID: id, stack: st}
	if own == nil {
		site.Note = "stack not kept by the kernel"
		return site
	}
	site.Frames, site.Frame, site.Known, site.Library = own.Frames, own.Frame, own.Known, own.Library
	site.Note, site.Executable, site.tries = own.Note, own.Executable, own.tries
	if own.Library != "net/http" || !symbol.GoHTTPDialer(own.Frames) {
		return site
	}
	caller := s.Site(s.Canonical(st.Caller, pid))
	if caller == nil {
		return site
	}
	if f, ok := symbol.GoHTTPCaller(caller.Frames); ok {
		site.Frames, site.Frame, site.Known, site.Note = caller.Frames, f, true, ""
	}
	return site
}

// goMinor is the least Go release whose register ABI gohttp.h reads
// (arguments and the goroutine in registers): go1.18.
const goMinor = 18

// probeGoHTTP has the executable of st (a net/http dial goroutine's
// stack, in pid) probed for its dials' callers, once per executable.
func (s *Sites) probeGoHTTP(st *tracer.Stack, pid uint32) {
	exe := symbol.FileID{Dev: symbol.KernelDev(st.ExeDev), Inode: st.ExeIno}
	s.mu.Lock()
	if s.goHTTP == nil || st.ExeIno == 0 {
		s.mu.Unlock()
		return
	}
	path := fmt.Sprintf("/proc/%d/exe", pid)
	f := s.held[pid]
	if f != nil {
		path = fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	}
	tried := s.goHTTPTried[exe]
	// A process gone with no descriptor held leaves nothing to probe:
	// the next process of the executable will.
	if tried || f == nil && !alive(pid) {
		s.mu.Unlock()
		return
	}
	s.goHTTPTried[exe] = true
	s.mu.Unlock()
	err := s.attachGoHTTP(exe, path)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.stats.GoHTTPRefused++
		s.stats.GoHTTPError = err.Error()
		return
	}
	s.stats.GoHTTP++
}

func (s *Sites) attachGoHTTP(exe symbol.FileID, path string) error {
	bin := s.res.Binary(exe, path)
	if bin == nil {
		return fmt.Errorf("%s: not readable", path)
	}
	var minor int
	if _, err := fmt.Sscanf(bin.GoVersion, "go1.%d", &minor); err != nil || minor < goMinor {
		return fmt.Errorf("%s: built by %q, not Go 1.%d or later", path, bin.GoVersion, goMinor)
	}
	queue, ok := bin.GoFuncOffset(tracer.GoHTTPQueue)
	dial, ok2 := bin.GoFuncOffset(tracer.GoHTTPDial)
	if !ok || !ok2 {
		return fmt.Errorf("%s: no %s or %s", path, tracer.GoHTTPQueue, tracer.GoHTTPDial)
	}
	s.mu.Lock()
	p := s.goHTTP
	s.mu.Unlock()
	return p.AttachGoHTTP(fmt.Sprint(exe), path, queue, dial)
}
