package inventory

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Errors a caller can tell apart (with errors.Is) to explain what is missing.
var (
	ErrPermission   = errors.New("missing privileges: run as root or grant CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_ADMIN")
	ErrNoBTF        = errors.New("kernel BTF not found at /sys/kernel/btf/vmlinux: a kernel built with CONFIG_DEBUG_INFO_BTF=y is needed")
	ErrKernelTooOld = errors.New("kernel too old: needs 5.9 for iter/tcp")
	// ErrNamespaceGone: the namespace to scan no longer exists, or its path
	// now names another one.
	ErrNamespaceGone = errors.New("network namespace is gone")
)

var errClosed = errors.New("inventory scanner is closed")

// ProgramName is the name of the BPF program a Scanner loads, as the
// kernel lists it.
const ProgramName = "inventory_tcp"

// Scanner holds the loaded and attached iterator. Its methods may be called
// from several goroutines; scans run one at a time.
type Scanner struct {
	mu   sync.Mutex
	prog *ebpf.Program
	iter *link.Iter
	buf  []byte // iterator output, reused between scans
	dec  decoder
}

// preflight reports the first reason Open cannot work here, or nil.
func preflight() error {
	if !privileged() {
		return ErrPermission
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return ErrNoBTF
	}
	return nil
}

// Open checks the host, loads the iterator program and attaches it.
func Open() (*Scanner, error) { return OpenWithCache(nil) }

// OpenWithCache is Open reading the kernel's BTF through cache, which a
// caller loading other BPF objects at the same time shares with them: the
// kernel's types are then decoded once (nil: a cache of its own).
func OpenWithCache(cache *btf.Cache) (*Scanner, error) {
	if err := preflight(); err != nil {
		return nil, err
	}
	// Below 5.11 BPF memory is charged to RLIMIT_MEMLOCK; above, a no-op.
	_ = rlimit.RemoveMemlock()

	spec, err := loadInventory()
	if err != nil {
		return nil, fmt.Errorf("reading embedded BPF object: %w", err)
	}
	var progs inventoryPrograms
	if err := spec.LoadAndAssign(&progs, &ebpf.CollectionOptions{Cache: cache}); err != nil {
		return nil, loadError("loading", err)
	}
	it, err := link.AttachIter(link.IterOptions{Program: progs.InventoryTcp})
	if err != nil {
		progs.Close()
		return nil, loadError("attaching", err)
	}
	return &Scanner{prog: progs.InventoryTcp, iter: it, dec: decoder{hz: kernelHZ()}, buf: make([]byte, 0, 64<<10)}, nil
}

// loadError turns a load or attach failure into one of the package's
// errors when it is one, keeping the kernel's words.
func loadError(doing string, err error) error {
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) && len(verr.Log) > 0 {
		// The verifier ran: EACCES here is its refusal, not a privilege.
		if log := strings.Join(verr.Log, "\n"); strings.Contains(log, "unknown func") || strings.Contains(log, "invalid func") {
			return fmt.Errorf("%w (%v)", ErrKernelTooOld, verr)
		}
		return fmt.Errorf("%s the iter/tcp program: the kernel's verifier refused it: %v", doing, verr)
	}
	switch {
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w (%s the iter/tcp program: %v)", ErrPermission, doing, err)
	case errors.Is(err, ebpf.ErrNotSupported):
		// No bpf_iter_tcp in the kernel's BTF, or no BPF links.
		return fmt.Errorf("%w (%v)", ErrKernelTooOld, err)
	}
	return fmt.Errorf("%s the iter/tcp program: %w", doing, err)
}

// privileged: the iterator needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)
// and setns() into a network namespace needs CAP_SYS_ADMIN.
func privileged() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return os.Geteuid() == 0
	}
	return data[unix.CAP_SYS_ADMIN/32].Effective&(1<<(unix.CAP_SYS_ADMIN%32)) != 0
}

// Close detaches and unloads the program. Scans after Close fail.
func (s *Scanner) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.iter == nil {
		return nil
	}
	err := errors.Join(s.iter.Close(), s.prog.Close())
	s.iter, s.prog = nil, nil
	return err
}

// Scan reads the inventory of the namespace ref names: its sockets, its
// sysctls and its TcpExt counters. Our own namespace (ref.Inode) is read
// in place; any other is entered through ref.Path, which must still name
// namespace ref.Inode (when not 0): a path that no longer opens or now
// names another namespace fails with ErrNamespaceGone.
func (s *Scanner) Scan(ref NamespaceRef) (*Namespace, error) {
	ns := &Namespace{}
	if err := s.ScanInto(ref, ns); err != nil {
		return nil, err
	}
	return ns, nil
}

// ScanInto is Scan into ns, reusing the memory of ns's slices: a caller
// that scans the same namespaces over and over keeps one Namespace each
// and stops allocating once they have grown. On error ns is unspecified.
func (s *Scanner) ScanInto(ref NamespaceRef, ns *Namespace) error {
	return s.scanInto(ref, ns, false)
}

// ScanListeners is ScanInto reading only the listening sockets: the walk
// stops at the first socket of the established hash, which iter/tcp walks
// after the listening one. Cheap whatever the namespace holds.
func (s *Scanner) ScanListeners(ref NamespaceRef, ns *Namespace) error {
	return s.scanInto(ref, ns, true)
}

func (s *Scanner) scanInto(ref NamespaceRef, ns *Namespace, listeners bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.iter == nil {
		return errClosed
	}
	*ns = Namespace{NamespaceRef: ref, Sockets: ns.Sockets[:0], Groups: ns.Groups[:0], Conns: ns.Conns[:0]}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := s.scanOnThread(ref, ns, listeners)
		if home {
			runtime.UnlockOSThread()
		}
		// Otherwise the thread, maybe still in the foreign namespace, ends
		// with this goroutine.
		done <- err
	}()
	if err := <-done; err != nil {
		return fmt.Errorf("scanning network namespace %d (%s): %w", ref.Inode, ref.Path, err)
	}
	return nil
}

// scanOnThread runs on a locked OS thread. home reports that the thread is
// back in the namespace it started in and may be handed back to the Go
// scheduler.
func (s *Scanner) scanOnThread(ref NamespaceRef, ns *Namespace, listeners bool) (home bool, err error) {
	origFD, origIno, err := openNetns("/proc/thread-self/ns/net")
	if err != nil {
		return true, fmt.Errorf("opening our own network namespace: %w", err)
	}
	defer unix.Close(origFD)
	if ref.Inode != origIno {
		if ref.Path == "" {
			return true, errors.New("no path to open the namespace by")
		}
		fd, ino, err := openRef(&ref)
		if err != nil {
			return true, err
		}
		ns.Inode = ino
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			return true, fmt.Errorf("setns(%s): %w", ref.Path, err)
		}
		defer func() {
			if berr := unix.Setns(origFD, unix.CLONE_NEWNET); berr != nil {
				home, err = false, fmt.Errorf("returning to our own network namespace: %w", berr)
			}
		}()
	}
	return true, s.read(ns, listeners)
}

// read fills ns from the namespace the calling thread is in (its
// listeners only, if listeners).
func (s *Scanner) read(ns *Namespace, listeners bool) error {
	ns.Time = time.Now()
	// The iterator walks the whole host's established hash whatever
	// namespace it reads: a namespace whose hash tables hold no TCP socket
	// at all (sockstat) is not walked.
	if inuse, tw, err := readSockstat(); err != nil || inuse+tw > 0 {
		if err := s.walk(ns, listeners); err != nil {
			return err
		}
	}
	var err error
	if ns.Sysctls, err = ReadSysctls(); err != nil {
		return err
	}
	ns.Counters, err = ReadCounters()
	return err
}

// walk reads the iterator into ns. The iterator takes the namespace of
// the thread that opens it.
func (s *Scanner) walk(ns *Namespace, listeners bool) error {
	r, err := s.iter.Open()
	if err != nil {
		return fmt.Errorf("opening the TCP socket iterator: %w", err)
	}
	err = s.decodeAll(r, ns, listeners)
	r.Close()
	if err != nil {
		return fmt.Errorf("reading the TCP socket iterator: %w", err)
	}
	return nil
}

// decodeAll decodes everything r has, a chunk at a time, into ns: memory
// for the iterator's output is one chunk, however many sockets the
// namespace holds. A read may end inside a record; the rest of it comes
// with the next read. With listeners, it stops at the first chunk that
// holds another socket and keeps the listeners only.
func (s *Scanner) decodeAll(r io.Reader, ns *Namespace, listeners bool) error {
	s.dec.reset(ns)
	if listeners {
		defer keepListeners(ns)
	}
	have := 0 // bytes of an unfinished record at the start of s.buf
	buf := s.buf[:cap(s.buf)]
	for {
		n, err := r.Read(buf[have:])
		have += n
		whole := have - have%recordSize
		if derr := s.dec.records(buf[:whole]); derr != nil {
			return derr
		}
		have = copy(buf, buf[whole:have])
		if listeners && (len(ns.Conns) > 0 || !allListening(ns.Sockets)) {
			return nil
		}
		if err == io.EOF {
			if have != 0 {
				return fmt.Errorf("iterator output ends inside a %d-byte record", recordSize)
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// keepListeners drops every socket of ns but the listeners.
func keepListeners(ns *Namespace) {
	ns.Sockets = slices.DeleteFunc(ns.Sockets, func(s Socket) bool { return s.State != Listen })
	ns.Groups, ns.Conns = ns.Groups[:0], ns.Conns[:0]
}

func allListening(socks []Socket) bool {
	return !slices.ContainsFunc(socks, func(s Socket) bool { return s.State != Listen })
}

// openNetns opens a network namespace file and returns its inode.
func openNetns(path string) (int, uint32, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, 0, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	return fd, uint32(st.Ino), nil
}

// openRef opens ref's namespace by its Path or, when that is gone, by
// one of its alternatives; ErrNamespaceGone when none leads to it.
func openRef(ref *NamespaceRef) (fd int, ino uint32, err error) {
	for _, path := range append([]string{ref.Path}, ref.alts...) {
		fd, ino, err = openNetns(path)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
			err = fmt.Errorf("%w: %v", ErrNamespaceGone, err)
			continue
		}
		if err != nil {
			return -1, 0, err
		}
		if ref.Inode != 0 && ino != ref.Inode {
			unix.Close(fd)
			err = fmt.Errorf("%w: %s is now namespace %d", ErrNamespaceGone, path, ino)
			continue
		}
		return fd, ino, nil
	}
	return -1, 0, err
}

// ScanAll scans every namespace Namespaces finds. A namespace that cannot
// be scanned (one that disappeared meanwhile: ErrNamespaceGone) is reported
// in errs and left out; the others are still scanned.
func (s *Scanner) ScanAll() (namespaces []*Namespace, errs []error) {
	refs, err := Namespaces()
	if err != nil {
		return nil, []error{err}
	}
	return s.scanEach(refs)
}

func (s *Scanner) scanEach(refs []NamespaceRef) (namespaces []*Namespace, errs []error) {
	for _, ref := range refs {
		ns, err := s.Scan(ref)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		namespaces = append(namespaces, ns)
	}
	return namespaces, errs
}
