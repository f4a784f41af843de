package cgroup

import (
	"encoding/binary"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Info is a cgroup's path under its hierarchy's root ("/a/b"), and its Layout.
type Info struct {
	Path string
	Layout
}

// Process discriminates a process for the /proc fallback cache (a reused pid must not inherit
// a dead process's cgroup): its pid plus what the kernel recorded (parent tgid, exe inode).
type Process struct {
	PID, PPID uint32
	ExeIno    uint64
}

// Options configures a Resolver; the zero value suits a host.
type Options struct {
	Root string // cgroup v2 mount; "" = find it in /proc/self/mountinfo
	Proc string // "/proc"
	// MaxCgroups bounds the id table (default 65536 cgroups); a walk
	// that meets it stops, and the ids it did not reach stay unresolved.
	MaxCgroups int
	// MaxProcesses bounds the /proc fallback cache (default 16384
	// processes); beyond it, entries are evicted.
	MaxProcesses int
}

// Stats counts what a Resolver did since it was made.
type Stats struct {
	Resolved   uint64 // lookups answered by the v2 id table
	FromProc   uint64 // lookups answered by /proc/PID/cgroup (read now or cached)
	Unresolved uint64 // lookups that learned nothing
	Walks      uint64 // walks of the v2 hierarchy
	ProcReads  uint64 // reads of /proc/PID/cgroup
	Evictions  uint64 // /proc cache entries dropped to stay within MaxProcesses
	Cgroups    int    // ids in the table now
	Full       bool   // the last walk stopped at MaxCgroups
}

// rewalkEvery rate-limits walks: an id the table does not know triggers
// a walk at most this often, so a stream of foreign ids (a cgroup made
// and removed between two walks) cannot turn into a walk per event.
const rewalkEvery = time.Second

// Resolver maps the cgroup ids on events to cgroup paths and layouts.
type Resolver struct {
	mount      mount
	hasV2      bool
	proc       string
	maxCgroups int
	maxProcs   int
	now        func() time.Time // tests move the clock

	table    atomic.Pointer[table]
	walkMu   sync.Mutex // one walk at a time; guards lastWalk
	lastWalk time.Time

	// The v2 mount, open, and its file handles' type: a cgroup made
	// since the last walk is opened by its id (byHandle).
	mountFD    int
	handleType int32
	extraMu    sync.RWMutex
	extra      map[uint64]Info // cgroups found by handle since the last walk

	procMu    sync.RWMutex
	processes map[Process]Info

	resolved, fromProc, unresolved, walks, procReads, evictions atomic.Uint64
}

// NewResolver finds the cgroup v2 hierarchy (none is not an error: on a
// cgroup v1 host every lookup goes through /proc) and walks it once.
func NewResolver(o Options) (*Resolver, error) {
	r := &Resolver{
		proc:       o.Proc,
		maxCgroups: o.MaxCgroups,
		maxProcs:   o.MaxProcesses,
		now:        time.Now,
		processes:  make(map[Process]Info),
	}
	if r.proc == "" {
		r.proc = "/proc"
	}
	if r.maxCgroups <= 0 {
		r.maxCgroups = 1 << 16
	}
	if r.maxProcs <= 0 {
		r.maxProcs = 1 << 14
	}
	switch {
	case o.Root != "":
		var st unix.Statfs_t
		if err := unix.Statfs(o.Root, &st); err != nil {
			return nil, fmt.Errorf("checking the cgroup v2 mount %s: %w", o.Root, err)
		}
		if st.Type != unix.CGROUP2_SUPER_MAGIC {
			return nil, fmt.Errorf("%s is not a cgroup v2 mount", o.Root)
		}
		r.mount, r.hasV2 = mount{point: o.Root, root: "/"}, true
	default:
		text, err := os.ReadFile(filepath.Join(r.proc, "self/mountinfo"))
		if err != nil {
			return nil, fmt.Errorf("finding the cgroup v2 mount: %w", err)
		}
		r.mount, r.hasV2 = parseMountinfo(string(text))
	}
	t := &table{}
	if r.hasV2 {
		var err error
		if t, err = walk(r.mount, r.maxCgroups); err != nil {
			return nil, err
		}
		if err := r.openMount(); err != nil {
			return nil, err
		}
		r.walks.Add(1)
		r.lastWalk = r.now()
	}
	r.table.Store(t)
	return r, nil
}

// Lookup resolves the cgroup v2 id the kernel stamps events with (bpf_get_current_cgroup_id);
// when the v2 hierarchy says nothing (the id is its root, or no v2 mount: cgroup v1 hosts and
// hybrid hosts whose unified tree is empty), it reads /proc/PID/cgroup while the process lives
// (v2 "0::" line, else v1 name=systemd, else a controller's path) and caches it per Process.
// Safe for concurrent use.
func (r *Resolver) Lookup(id uint64, p Process) Info {
	t := r.table.Load()
	if !r.hasV2 || id == t.rootID || id == 0 {
		return r.fromProcess(p)
	}
	if info, ok := t.ids[id]; ok {
		r.resolved.Add(1)
		return info
	}
	if info, ok := r.byHandle(id); ok {
		r.resolved.Add(1)
		return info
	}
	if info, ok := r.rewalk(id); ok {
		return info
	}
	// Not in the hierarchy as last walked, and no walk allowed yet (or
	// the cgroup is gone): the process, if it still lives, says where
	// it is.
	return r.fromProcess(p)
}

// rewalk looks for an id the table does not hold: a cgroup made since
// the last walk. At most one walk per rewalkEvery; ok is false when the
// id is still unknown.
func (r *Resolver) rewalk(id uint64) (Info, bool) {
	r.walkMu.Lock()
	defer r.walkMu.Unlock()
	// Another lookup may have walked while this one waited.
	if info, ok := r.table.Load().ids[id]; ok {
		r.resolved.Add(1)
		return info, true
	}
	if now := r.now(); now.Sub(r.lastWalk) >= rewalkEvery {
		r.lastWalk = now
		r.walks.Add(1)
		if t, err := walk(r.mount, r.maxCgroups); err == nil {
			r.table.Store(t)
			r.extraMu.Lock()
			clear(r.extra)
			r.extraMu.Unlock()
			if info, ok := t.ids[id]; ok {
				r.resolved.Add(1)
				return info, true
			}
		}
	}
	return Info{}, false
}

// fromProcess answers from the process's /proc/PID/cgroup, once per
// Process: the key holds what the kernel recorded beside the pid, so a
// pid reused by another program, or under another parent, is read anew.
func (r *Resolver) fromProcess(p Process) Info {
	r.procMu.RLock()
	info, ok := r.processes[p]
	r.procMu.RUnlock()
	if !ok {
		info = r.readProcess(p)
		r.procMu.Lock()
		if len(r.processes) >= r.maxProcs {
			// Any entry will do: an entry for a live process is read
			// again on its next miss; most are for processes long gone.
			for k := range r.processes {
				delete(r.processes, k)
				r.evictions.Add(1)
				break
			}
		}
		r.processes[p] = info
		r.procMu.Unlock()
	}
	if info.Path == "" {
		r.unresolved.Add(1)
	} else {
		r.fromProc.Add(1)
	}
	return info
}

// readProcess reads /proc/PID/cgroup, then checks the executable's inode
// against the one the kernel recorded: if the pid now belongs to another
// program, the cgroup just read is not the event's. A process that is
// gone gives Info{}, cached like an answer (its later events would
// only read /proc again to learn the same).
func (r *Resolver) readProcess(p Process) Info {
	dir := filepath.Join(r.proc, strconv.FormatUint(uint64(p.PID), 10))
	r.procReads.Add(1)
	text, err := os.ReadFile(filepath.Join(dir, "cgroup"))
	if err != nil {
		return Info{}
	}
	if p.ExeIno != 0 {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, "exe"), &st); err != nil || st.Ino != p.ExeIno {
			return Info{}
		}
	}
	path := pathFromProcCgroup(string(text))
	if path == "" {
		return Info{}
	}
	return Info{Path: path, Layout: ParseLayout(path)}
}

// Stats returns the counts so far.
func (r *Resolver) Stats() Stats {
	t := r.table.Load()
	return Stats{
		Resolved:   r.resolved.Load(),
		FromProc:   r.fromProc.Load(),
		Unresolved: r.unresolved.Load(),
		Walks:      r.walks.Load(),
		ProcReads:  r.procReads.Load(),
		Evictions:  r.evictions.Load(),
		Cgroups:    len(t.ids),
		Full:       t.full,
	}
}

// openMount opens the v2 mount for byHandle, and learns the type of its
// file handles (kernfs's).
func (r *Resolver) openMount() error {
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, r.mount.point, 0)
	if err != nil {
		return fmt.Errorf("getting the handle of %s: %w", r.mount.point, err)
	}
	fd, err := unix.Open(r.mount.point, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening the cgroup v2 mount: %w", err)
	}
	r.mountFD, r.handleType = fd, h.Type()
	r.extra = make(map[uint64]Info)
	return nil
}

// byHandle finds a cgroup made since the last walk without walking: its
// id is its kernfs file handle, so open_by_handle_at opens it, and the
// descriptor's link names its path. Remembered until the next walk.
func (r *Resolver) byHandle(id uint64) (Info, bool) {
	r.extraMu.RLock()
	info, ok := r.extra[id]
	r.extraMu.RUnlock()
	if ok {
		return info, true
	}
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], id)
	fd, err := unix.OpenByHandleAt(r.mountFD, unix.NewFileHandle(r.handleType, b[:]), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return Info{}, false // gone, or not a cgroup of this hierarchy
	}
	link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	unix.Close(fd)
	if err != nil {
		return Info{}, false
	}
	rel, err := filepath.Rel(r.mount.point, link)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return Info{}, false
	}
	full := path.Join("/", r.mount.root, rel)
	info = Info{Path: full, Layout: ParseLayout(full)}
	r.extraMu.Lock()
	if len(r.extra) < r.maxCgroups {
		r.extra[id] = info
	}
	r.extraMu.Unlock()
	return info, true
}
