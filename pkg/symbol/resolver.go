package symbol

import (
	"bytes"
	"container/list"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
)

// DefaultCacheSize is how many binaries a Resolver keeps by default.
const DefaultCacheSize = 64

// DefaultCacheBytes bounds the bytes a Resolver's binaries hold, by
// default (Binary.Footprint): a Go binary holds its pclntab, about a
// quarter of its size (13.4 MiB for Debian's 50 MB prometheus); a C or
// C++ one its symbols and DWARF lines. The binary in use is kept whatever
// its size.
const DefaultCacheBytes = 64 << 20

// Resolver turns the addresses of a process's stack into Frames. It keeps
// the binaries it has read in a small LRU cache keyed by file (device,
// inode), and reuses one binary for every file with its build-id. It is
// safe for concurrent use.
type Resolver struct {
	mu       sync.Mutex
	max      int
	maxBytes int64
	bytes    int64      // the cached binaries' footprints
	lru      *list.List // of *cached, most recently used first
	byFile   map[FileID]*list.Element
	byBuild  map[string]*Binary
	holders  map[*Binary]int // cache entries holding each binary
	stats    Stats
}

// Stats counts what a Resolver's cache did.
type Stats struct {
	Hits    uint64 // a mapped file found in the cache
	Loaded  uint64 // files read and parsed
	Shared  uint64 // files whose build-id matched a cached binary
	Evicted uint64 // binaries dropped to stay within the bounds
	Failed  uint64 // files that could not be opened or read as ELF
}

type cached struct {
	id  FileID
	bin *Binary // nil: the file is not a readable ELF (not retried)
}

// NewResolver makes a Resolver keeping up to size binaries (at least 1)
// and DefaultCacheBytes.
func NewResolver(size int) *Resolver {
	return &Resolver{max: max(size, 1), maxBytes: DefaultCacheBytes, lru: list.New(),
		byFile: map[FileID]*list.Element{}, byBuild: map[string]*Binary{},
		holders: map[*Binary]int{}}
}

// SetMaxBytes bounds the cached binaries' footprints to n bytes from the
// next binary read on; the last one read is kept whatever its size.
func (r *Resolver) SetMaxBytes(n int64) {
	r.mu.Lock()
	r.maxBytes = n
	r.mu.Unlock()
}

// CachedBytes is the cached binaries' footprint now.
func (r *Resolver) CachedBytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bytes
}

// Stats returns the cache's counters so far.
func (r *Resolver) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Snapshot is what resolving a process's addresses needs, taken while it
// lived: its executable mappings and, for each, the binary read from the
// mapped file. It holds no file descriptors.
type Snapshot struct {
	PID int
	// Executable is the base name of the process's executable file ("" if
	// it could not be read): what a stack that names nothing else can
	// still say.
	Executable string
	regions    []region // sorted by Start
	// complete: the regions are the process's whole executable map, so an
	// address outside them is not code (see Resolve).
	complete bool
	// code holds the bytes before the addresses Snapshot was asked to
	// check (IsReturnAddress), read from the process's memory first thing.
	code map[uint64][]byte
}

type region struct {
	Mapping
	module string
	bin    *Binary
	// biased: file address = address − bias (a snapshot made from
	// start_code), instead of the translation through Mapping.
	biased bool
	bias   uint64
	// open reopens the mapped file, for the few bytes IsReturnAddress
	// reads; nil when there is no file.
	open func() (*os.File, error)
}

// Snapshot reads /proc/PID/maps and the binary behind each executable
// mapping. Before anything else it reads, from the process's memory, the
// few bytes before each of check (see IsReturnAddress): a process can
// exit while its binaries are parsed, and then its mapped files are out
// of reach. Each file is opened through /proc/PID/map_files, which reaches
// the very file mapped even when it has been deleted or replaced, else
// through /proc/PID/root/<path> (then checked to be the same inode). Files
// not yet cached are parsed now, while the process holds them: 10 ms for a
// 12 MB Go binary, once per binary. A mapping whose file cannot be read
// still names its module in frames.
func (r *Resolver) Snapshot(pid int, check ...uint64) (*Snapshot, error) {
	code := readCode(pid, check)
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, fmt.Errorf("reading maps of pid %d: %w", pid, err)
	}
	maps, err := ParseMaps(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("reading maps of pid %d: %w", pid, err)
	}
	s := &Snapshot{PID: pid, complete: true, code: code, Executable: linkName(fmt.Sprintf("/proc/%d/exe", pid))}
	for _, m := range maps {
		reg := region{Mapping: m, module: m.Module()}
		if m.File != (FileID{}) && !strings.HasPrefix(m.Path, "[") {
			reg.open = func() (*os.File, error) { return openMapped(pid, m) }
			reg.bin = r.binary(m.File, reg.open)
		}
		s.regions = append(s.regions, reg)
	}
	sort.Slice(s.regions, func(i, j int) bool { return s.regions[i].Start < s.regions[j].Start })
	return s, nil
}

// Mapped reports whether the snapshot holds any executable mapping: a
// process that has exited (a zombie not yet reaped) has none left.
func (s *Snapshot) Mapped() bool { return len(s.regions) > 0 }

// ExeSnapshot is the fallback for a process already gone: only its
// executable's code, placed by the start_code and end_code the kernel
// recorded (mm->start_code, mm->end_code). The binary comes from the cache
// by exe, else from path, which must still be that file (same device and
// inode); path may be /proc/self/fd/N for a descriptor the caller opened
// at exec, which reaches the file even once deleted. Library addresses
// keep just their address.
func (r *Resolver) ExeSnapshot(pid int, exe FileID, path string, startCode, endCode uint64) (*Snapshot, error) {
	bin := r.binary(exe, func() (*os.File, error) { return openChecked(path, exe) })
	if bin == nil {
		return nil, fmt.Errorf("reading executable %s of pid %d: not a readable ELF file of that inode", path, pid)
	}
	bias, ok := bin.BiasFromStartCode(startCode)
	if !ok || endCode <= startCode {
		return nil, fmt.Errorf("placing executable %s of pid %d: no executable segment", path, pid)
	}
	name, module := linkName(path), filepath.Base(path)
	if name != "" {
		module = name
	}
	reg := region{Mapping: Mapping{Start: startCode, End: endCode, File: exe, Path: path},
		module: module, bin: bin, biased: true, bias: bias,
		open: func() (*os.File, error) { return openChecked(path, exe) }}
	return &Snapshot{PID: pid, Executable: name, regions: []region{reg}}, nil
}

// linkName is the base name of the file path leads to: for a link of
// /proc (/proc/PID/exe, /proc/self/fd/N) the file's own name, without the
// " (deleted)" the kernel adds; else path's base name. "" for a /proc
// link that cannot be read.
func linkName(path string) string {
	target, err := os.Readlink(path)
	if err != nil {
		if strings.HasPrefix(path, "/proc/") {
			return ""
		}
		return filepath.Base(path)
	}
	if !strings.HasPrefix(path, "/proc/") || !strings.HasPrefix(target, "/") {
		return filepath.Base(path) // an ordinary symlink: named as given
	}
	return filepath.Base(strings.TrimSuffix(target, " (deleted)"))
}

func openMapped(pid int, m Mapping) (*os.File, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End))
	if err == nil {
		return f, nil
	}
	if m.Deleted {
		return nil, err
	}
	return openChecked(fmt.Sprintf("/proc/%d/root%s", pid, m.Path), m.File)
}

// openChecked opens path and makes sure it is the file id names.
func openChecked(path string, id FileID) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); !ok || sys.Ino != id.Inode || sys.Dev != id.Dev {
		f.Close()
		return nil, fmt.Errorf("%s is no longer the mapped file", path)
	}
	return f, nil
}

// binary returns the cached binary of id, or opens, reads and caches it.
// nil when the file cannot be opened or read.
func (r *Resolver) binary(id FileID, open func() (*os.File, error)) *Binary {
	r.mu.Lock()
	if e, ok := r.byFile[id]; ok {
		r.lru.MoveToFront(e)
		r.stats.Hits++
		bin := e.Value.(*cached).bin
		r.mu.Unlock()
		return bin
	}
	r.mu.Unlock()

	f, err := open()
	if err != nil {
		r.count(func(s *Stats) { s.Failed++ })
		return nil // not cached: the process may be gone for a moment only
	}
	defer f.Close()
	if bin := r.sharedBinary(f); bin != nil {
		r.remember(id, bin, func(s *Stats) { s.Shared++ })
		return bin
	}
	bin, err := OpenBinary(f)
	if err != nil {
		r.remember(id, nil, func(s *Stats) { s.Failed++ })
		return nil
	}
	r.remember(id, bin, func(s *Stats) { s.Loaded++ })
	return bin
}

// sharedBinary reads only f's build-id note and returns the cached binary
// with that id, if any.
func (r *Resolver) sharedBinary(f *os.File) *Binary {
	st, err := f.Stat()
	if err != nil {
		return nil
	}
	id, err := func() (id string, err error) {
		defer func() {
			if recover() != nil {
				err = errors.New("corrupt ELF")
			}
		}()
		ef, err := elf.NewFile(f)
		if err != nil {
			return "", err
		}
		return buildID(ef, st.Size()), nil
	}()
	if err != nil || id == "" {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byBuild[id]
}

func (r *Resolver) count(add func(*Stats)) {
	r.mu.Lock()
	add(&r.stats)
	r.mu.Unlock()
}

func (r *Resolver) remember(id FileID, bin *Binary, add func(*Stats)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	add(&r.stats)
	if e, ok := r.byFile[id]; ok { // read twice concurrently: keep the first
		r.lru.MoveToFront(e)
		return
	}
	r.byFile[id] = r.lru.PushFront(&cached{id: id, bin: bin})
	if bin != nil {
		if r.holders[bin]++; r.holders[bin] == 1 {
			r.bytes += bin.Footprint()
		}
		if bin.BuildID != "" {
			r.byBuild[bin.BuildID] = bin
		}
	}
	for r.lru.Len() > r.max || (r.bytes > r.maxBytes && r.lru.Len() > 1) {
		old := r.lru.Remove(r.lru.Back()).(*cached)
		delete(r.byFile, old.id)
		r.stats.Evicted++
		if old.bin == nil {
			continue
		}
		if r.holders[old.bin]--; r.holders[old.bin] == 0 {
			delete(r.holders, old.bin)
			r.bytes -= old.bin.Footprint()
			if r.byBuild[old.bin.BuildID] == old.bin {
				delete(r.byBuild, old.bin.BuildID)
			}
		}
	}
}

// find returns the region holding addr, or nil.
func (s *Snapshot) find(addr uint64) *region {
	i := sort.Search(len(s.regions), func(i int) bool { return s.regions[i].Start > addr }) - 1
	if i < 0 || addr >= s.regions[i].End {
		return nil
	}
	return &s.regions[i]
}

// Resolve symbolizes a stack, frame 0 innermost. Every address is taken
// as a return address (or the address a syscall resumes at) and looked up
// one byte earlier, inside the call instruction, so a frame names the line
// of the call; Frame.Address and FileAddress stay the address as given.
//
// The stack stops at the first address outside every executable mapping
// of a complete snapshot: the frame-pointer walk that produced it followed
// a pointer that was not a frame, and nothing after it can be trusted. An
// ExeSnapshot knows only the executable, so there an unknown address is
// kept as a bare address and the walk goes on.
//
// An address in Go code where calls were inlined gives one frame per
// inlined call, innermost first, all with the same Address: so there can
// be more frames than addresses.
func (r *Resolver) Resolve(s *Snapshot, addrs []uint64) []Frame {
	return r.resolve(s, addrs, false)
}

// ResolveFromEntry is Resolve for a stack taken at a function's entry (a
// uprobe's): addrs[0] is that entry itself, looked up as it is.
func (r *Resolver) ResolveFromEntry(s *Snapshot, addrs []uint64) []Frame {
	return r.resolve(s, addrs, true)
}

func (r *Resolver) resolve(s *Snapshot, addrs []uint64, entry bool) []Frame {
	frames := make([]Frame, 0, len(addrs))
	for i, addr := range addrs {
		back := uint64(1) // inside the call instruction
		if entry && i == 0 {
			back = 0
		}
		reg := s.find(addr)
		if reg == nil {
			if s.complete {
				break
			}
			frames = append(frames, Frame{Address: addr})
			continue
		}
		f := Frame{Address: addr, Module: reg.module}
		var locs []Location
		if reg.bin != nil && addr >= reg.Start+back {
			vaddr, ok := addr-back-reg.bias, true
			if !reg.biased {
				vaddr, ok = reg.bin.FileAddress(reg.Mapping, addr-back)
			}
			if ok {
				f.FileAddress = vaddr + back
				locs = reg.bin.Lookup(vaddr)
			}
		}
		if len(locs) == 0 {
			frames = append(frames, f)
		}
		for _, loc := range locs {
			f.Function, f.File, f.Line = loc.Function, loc.File, loc.Line
			frames = append(frames, f)
		}
	}
	return frames
}

// Binary returns the binary of the file id, reading it from path (which
// must still be that file) unless cached; nil when it cannot be read.
func (r *Resolver) Binary(id FileID, path string) *Binary {
	return r.binary(id, func() (*os.File, error) { return openChecked(path, id) })
}
