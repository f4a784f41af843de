package doctor

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/pkg/inventory"
	"github.com/twtrace/twtrace/pkg/tracer"
)

// ProbeProgramNames are the names of the minimal programs Gather loads to
// probe fentry and kprobes, for tests that check nothing stays loaded.
var ProbeProgramNames = []string{"doctor_fentry", "doctor_kprobe"}

// probeSymbol is the kernel function the fentry and kprobe probes hook:
// where a precise tier would see every TIME_WAIT entry.
const probeSymbol = "tcp_time_wait"

// ErrNoNamespace: the namespace asked for (by inode or by process) is not
// on this host. Errors match it with errors.Is.
var ErrNoNamespace = errors.New("no such network namespace")

// notFound is an ErrNoNamespace that says what was looked for.
type notFound string

func (e notFound) Error() string      { return string(e) }
func (notFound) Is(target error) bool { return target == ErrNoNamespace }

// OwnNamespace is the namespace doctor runs in, named by its lowest PID.
func OwnNamespace() (inventory.NamespaceRef, error) {
	ino, err := netnsInode("/proc/self/ns/net")
	if err != nil {
		return inventory.NamespaceRef{}, fmt.Errorf("reading our own network namespace: %w", err)
	}
	if refs, err := inventory.Namespaces(); err == nil {
		for _, ref := range refs {
			if ref.Inode == ino {
				return ref, nil
			}
		}
	}
	return inventory.NamespaceRef{Inode: ino, Path: "/proc/self/ns/net"}, nil
}

// Target is the namespace to explain: doctor's own when inode and pid
// are 0, else the one with that inode, or process pid's. Without
// CAP_SYS_ADMIN other processes' namespaces may be invisible (ptrace
// access rules), so an inode not found is then returned as is, to be
// reported unreadable, rather than as ErrNoNamespace.
func Target(inode uint32, pid int, caps Caps) (inventory.NamespaceRef, error) {
	switch {
	case inode != 0:
		ref, err := NamespaceByInode(inode)
		if errors.Is(err, ErrNoNamespace) && !caps.CanEnterNamespaces() {
			return inventory.NamespaceRef{Inode: inode}, nil
		}
		return ref, err
	case pid != 0:
		return NamespaceOfPID(pid)
	}
	return OwnNamespace()
}

// NamespaceByInode finds a namespace of the host by its inode, the way
// twtrace snapshot finds them (processes, threads, /run/netns).
func NamespaceByInode(ino uint32) (inventory.NamespaceRef, error) {
	refs, err := inventory.Namespaces()
	if err != nil {
		return inventory.NamespaceRef{}, err
	}
	for _, ref := range refs {
		if ref.Inode == ino {
			return ref, nil
		}
	}
	return inventory.NamespaceRef{}, notFound(fmt.Sprintf("network namespace %d not found: no process, thread or /run/netns bind mount is in it", ino))
}

// NamespaceOfPID is the namespace of process pid.
func NamespaceOfPID(pid int) (inventory.NamespaceRef, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/ns/net"
	ino, err := netnsInode(path)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
		return inventory.NamespaceRef{}, notFound(fmt.Sprintf("process %d not found", pid))
	}
	if err != nil {
		return inventory.NamespaceRef{}, fmt.Errorf("reading the network namespace of process %d: %w", pid, err)
	}
	comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return inventory.NamespaceRef{Inode: ino, Path: path, PID: pid, Comm: strings.TrimSuffix(string(comm), "\n")}, nil
}

func netnsInode(path string) (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return uint32(st.Ino), nil
}

// Gather takes every reading: it loads and attaches twtrace's tracer and
// socket iterator and the fentry and kprobe probes, unloading each at
// once, and reads namespace ref through the iterator (or, without it and
// for our own namespace only, through /proc). It may mount tracefs, as
// every twtrace command does. Capabilities are those of the calling
// thread.
func Gather(ref inventory.NamespaceRef) *Readings {
	r := &Readings{Time: time.Now(), Caps: ReadCaps()}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		r.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		r.BTF = err
	}
	r.Tracefs.MountedAt, r.Tracefs.Unreadable = findTracefs()
	r.Namespace.Ref = ref
	// The sysctl exists or not kernel-wide; only its value is per namespace.
	_, err := os.Stat("/proc/sys/net/ipv4/tcp_tw_recycle")
	r.Namespace.TwRecyclePresent = err == nil
	own, _ := netnsInode("/proc/self/ns/net")

	if !r.Caps.CanLoad() {
		why := "needs CAP_BPF and CAP_PERFMON, or root"
		r.RingBuf.Skipped, r.Tracepoints.Skipped, r.Iterator.Skipped = why, why, why
		r.FEntry.Skipped, r.Kprobe.Skipped, r.HTTPCallers.Skipped = why, why, why
		if r.Tracefs.MountedAt == "" && r.Tracefs.Unreadable == "" {
			r.Tracefs.NotTried = "mounting it needs CAP_SYS_ADMIN"
		}
		readWithoutScan(&r.Namespace, own, "the socket iterator "+why)
		return r
	}
	// Below 5.11 BPF memory is charged to RLIMIT_MEMLOCK; above, a no-op.
	_ = rlimit.RemoveMemlock()
	r.RingBuf.Err = features.HaveMapType(ebpf.RingBuf)
	if r.Tracefs.MountedAt == "" {
		r.Tracefs.Unreadable = ""
		mountTracefs(&r.Tracefs, r.Caps)
	}

	cache := btf.NewCache() // the kernel's types, decoded once for every load
	// Loaded as top loads it, stacks taken: the call sites' programs too.
	if t, err := tracer.New(tracer.Options{BTFCache: cache, StackSample: 64}); err != nil {
		r.Tracepoints.Err = err
		r.HTTPCallers.Skipped = "the tracer did not load"
	} else {
		r.Tier = t.Tier()
		r.HTTPCallers.Err = t.GoHTTPSupported()
		if err := t.Close(); err != nil {
			r.Tracepoints.Err = fmt.Errorf("unloading: %w", err)
		}
	}

	sc, err := inventory.OpenWithCache(cache)
	r.Iterator.Err = err
	if err != nil {
		readWithoutScan(&r.Namespace, own, "the socket iterator could not be opened")
	} else {
		ns, err := sc.Scan(ref)
		switch {
		case err == nil:
			r.Namespace.NS, r.Namespace.Scanned = ns, true
		case ref.Inode == own:
			readWithoutScan(&r.Namespace, own, "the scan failed: "+oneLine(err))
		default:
			r.Namespace.Err = err
		}
		if err := sc.Close(); err != nil && r.Iterator.Err == nil {
			r.Iterator.Err = fmt.Errorf("unloading: %w", err)
		}
	}

	r.FEntry = probeHook(&ebpf.ProgramSpec{Name: ProbeProgramNames[0], Type: ebpf.Tracing,
		AttachType: ebpf.AttachTraceFEntry, AttachTo: probeSymbol},
		func(p *ebpf.Program) (link.Link, error) { return link.AttachTracing(link.TracingOptions{Program: p}) })
	r.Kprobe = probeHook(&ebpf.ProgramSpec{Name: ProbeProgramNames[1], Type: ebpf.Kprobe},
		func(p *ebpf.Program) (link.Link, error) { return link.Kprobe(probeSymbol, p, nil) })
	r.Kprobe.KprobePMU = exists("/sys/bus/event_source/devices/kprobe/type")
	tracefs := r.Tracefs.MountedAt
	if tracefs == "" {
		tracefs = "/sys/kernel/tracing"
	}
	r.Kprobe.KprobeEvents = exists(tracefs + "/kprobe_events")
	return r
}

// tracefsDirs are where tracefs is looked for, as pkg/tracer looks.
var tracefsDirs = []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}

// findTracefs is the directory holding the tracepoint twtrace reads ids
// from, "" when none does; unreadable names one we may not look into.
func findTracefs() (dir, unreadable string) {
	for _, d := range tracefsDirs {
		_, err := os.Stat(d + "/events/sock/inet_sock_set_state/id")
		if err == nil {
			return d, ""
		}
		if errors.Is(err, os.ErrPermission) && unreadable == "" {
			unreadable = d
		}
	}
	return "", unreadable
}

// mountTracefs mounts tracefs where the kernel expects it, as twtrace's
// tracer does before it attaches.
func mountTracefs(t *Tracefs, caps Caps) {
	if !caps.CanEnterNamespaces() {
		t.NotTried = "mounting it needs CAP_SYS_ADMIN"
		return
	}
	if err := unix.Mount("nodev", tracefsDirs[0], "tracefs", 0, ""); err != nil {
		t.MountErr = fmt.Errorf("%w (%v)", tracer.ErrTracefsAbsent, err)
		return
	}
	if t.MountedAt, _ = findTracefs(); t.MountedAt == "" {
		t.MountErr = errors.New("tracefs has no sock:inet_sock_set_state tracepoint: kernel too old or built without it")
		return
	}
	t.Mounted = true
}

// probeHook loads spec as the smallest valid program (return 0) and
// attaches it with attach, then unloads both.
func probeHook(spec *ebpf.ProgramSpec, attach func(*ebpf.Program) (link.Link, error)) HookProbe {
	spec.License = "GPL"
	spec.Instructions = asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	var p HookProbe
	prog, err := ebpf.NewProgram(spec)
	if err != nil {
		p.Err = err
		return p
	}
	defer prog.Close()
	l, err := attach(prog)
	if err != nil {
		p.Err, p.AtAttach = err, true
		return p
	}
	if err := l.Close(); err != nil {
		p.Err, p.AtAttach = fmt.Errorf("detaching: %w", err), true
	}
	return p
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// readWithoutScan reads the namespace's sysctls and counters from /proc
// when the socket iterator cannot: only our own namespace's are there.
func readWithoutScan(nr *NamespaceReading, own uint32, why string) {
	nr.NoScan = why
	if nr.Ref.Inode != own {
		nr.Err = fmt.Errorf("another namespace is read by entering it with the socket iterator, and %s", why)
		return
	}
	nr.NS, nr.Err = readProcNamespace()
	if nr.NS != nil {
		nr.NS.NamespaceRef = nr.Ref
	}
}

// readProcNamespace reads our own namespace's sysctls and TcpExt counters
// from /proc, as inventory's scan does, but without BPF: for a doctor run
// without privileges.
func readProcNamespace() (*inventory.Namespace, error) {
	ns := &inventory.Namespace{Time: time.Now()}
	var err error
	if ns.Sysctls, err = inventory.ReadSysctls(); err != nil {
		return nil, err
	}
	if ns.Counters, err = inventory.ReadCounters(); err != nil {
		return nil, err
	}
	return ns, nil
}
