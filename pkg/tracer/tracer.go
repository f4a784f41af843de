// Package tracer loads twtrace's BPF programs, attaches them to the TCP
// state and connect()/bind() tracepoints, and turns ring-buffer records into
// typed events.
package tracer

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/pkg/event"
)

// DefaultRingBufferSize holds ~29k records: several seconds of the worst
// churn we measured even if the reader stalls.
const DefaultRingBufferSize = 4 << 20

// Options configure a Tracer.
type Options struct {
	// RingBufferSize in bytes: a power of two and a multiple of the page
	// size. 0 means DefaultRingBufferSize.
	RingBufferSize int
	// KindMask has bit 1<<Kind set for each event kind to report; 0 = all.
	KindMask uint32
	// Netns restricts reports to one network namespace (inode); 0 = all.
	Netns uint32
}

// Errors a caller can tell apart (with errors.Is) to explain what is missing.
var (
	ErrPermission    = errors.New("missing privileges: run as root or grant CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on kernels before 5.8)")
	ErrNoBTF         = errors.New("kernel BTF not found at /sys/kernel/btf/vmlinux: a kernel built with CONFIG_DEBUG_INFO_BTF=y is needed")
	ErrKernelTooOld  = errors.New("kernel too old: BPF ring buffers need Linux 5.8 or later")
	ErrTracefsAbsent = errors.New("tracefs is not mounted and could not be mounted: run 'mount -t tracefs nodev /sys/kernel/tracing'")
)

// Tracer is a loaded and attached set of twtrace programs.
type Tracer struct {
	objs   twtraceObjects
	links  []link.Link
	reader *ringbuf.Reader
	clock  event.Clock

	closeOnce sync.Once
}

// attachments lists every tracepoint twtrace uses, in attach order.
func (o *twtraceObjects) attachments() []struct {
	group, name string
	prog        *ebpf.Program
} {
	return []struct {
		group, name string
		prog        *ebpf.Program
	}{
		{"sock", "inet_sock_set_state", o.OnSetState},
		{"tcp", "tcp_receive_reset", o.OnReceiveReset},
		{"syscalls", "sys_enter_connect", o.OnEnterConnect},
		{"syscalls", "sys_exit_connect", o.OnExitConnect},
		{"syscalls", "sys_enter_bind", o.OnEnterBind},
		{"syscalls", "sys_exit_bind", o.OnExitBind},
	}
}

// Preflight reports the first reason twtrace cannot run here, or nil.
func Preflight() error {
	if !privileged() {
		return ErrPermission
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return ErrNoBTF
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return ErrKernelTooOld
		}
		if errors.Is(err, unix.EPERM) {
			return ErrPermission
		}
		return fmt.Errorf("probing ring buffer support: %w", err)
	}
	return ensureTracefs()
}

// New checks the host, loads the programs and attaches every one of them.
// When it returns without error, tracing is live.
func New(opts Options) (*Tracer, error) {
	if err := Preflight(); err != nil {
		return nil, err
	}
	// Below 5.11 BPF memory is charged to RLIMIT_MEMLOCK; above, to memcg
	// and this is a no-op. Failure only matters if loading then fails.
	_ = rlimit.RemoveMemlock()

	spec, err := loadTwtrace()
	if err != nil {
		return nil, fmt.Errorf("reading embedded BPF objects: %w", err)
	}
	size := opts.RingBufferSize
	if size == 0 {
		size = DefaultRingBufferSize
	}
	if size < os.Getpagesize() || size&(size-1) != 0 {
		return nil, fmt.Errorf("ring buffer size %d: must be a power of two of at least %d bytes", size, os.Getpagesize())
	}
	spec.Maps["events"].MaxEntries = uint32(size)
	if opts.KindMask != 0 {
		if err := spec.Variables["events_mask"].Set(opts.KindMask); err != nil {
			return nil, fmt.Errorf("setting event mask: %w", err)
		}
	}
	if opts.Netns != 0 {
		if err := spec.Variables["target_netns"].Set(opts.Netns); err != nil {
			return nil, fmt.Errorf("setting netns filter: %w", err)
		}
	}

	t := &Tracer{}
	if err := spec.LoadAndAssign(&t.objs, nil); err != nil {
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("%w (loading BPF programs: %v)", ErrPermission, err)
		}
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("loading BPF programs: the kernel's verifier refused them: %v", verr)
		}
		return nil, fmt.Errorf("loading BPF programs: %w", err)
	}
	for _, a := range t.objs.attachments() {
		l, err := link.Tracepoint(a.group, a.name, a.prog, nil)
		if err != nil {
			t.Close()
			if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
				return nil, fmt.Errorf("%w (attaching %s:%s: %v)", ErrPermission, a.group, a.name, err)
			}
			return nil, fmt.Errorf("attaching tracepoint %s:%s: %w", a.group, a.name, err)
		}
		t.links = append(t.links, l)
	}
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

// Read delivers every event to fn until Close is called. The *Event is
// reused between calls: copy it to keep it. A record that cannot be
// decoded is an error (it would mean the BPF and Go sides disagree).
func (t *Tracer) Read(fn func(*event.Event)) error {
	var rec ringbuf.Record
	var ev event.Event
	for {
		if err := t.reader.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, ringbuf.ErrFlushed) {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return err
			}
			return fmt.Errorf("reading ring buffer: %w", err)
		}
		if err := event.Decode(rec.RawSample, t.clock, &ev); err != nil {
			return fmt.Errorf("decoding event record: %w", err)
		}
		fn(&ev)
	}
}

// Stop detaches every program and makes Read return once it has delivered
// the records already in the ring buffer: nothing accepted is dropped.
// Safe to call while Read blocks; call Close afterwards.
func (t *Tracer) Stop() error {
	derr := t.Detach()
	return errors.Join(derr, t.reader.Flush())
}

// SetDeadline makes Read return os.ErrDeadlineExceeded once d passes and
// the ring buffer is empty; the zero time means wait for ever. It waits for
// a Read in progress to return: use Stop to end one.
func (t *Tracer) SetDeadline(d time.Time) {
	t.reader.SetDeadline(d)
}

// Detach stops the kernel side from producing events; records already in
// the ring buffer can still be read (set a deadline to drain them).
func (t *Tracer) Detach() error {
	var errs []error
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
func (t *Tracer) Lost() (uint64, error) {
	var perCPU []uint64
	if err := t.objs.Lost.Lookup(uint32(0), &perCPU); err != nil {
		return 0, fmt.Errorf("reading lost-record counter: %w", err)
	}
	var sum uint64
	for _, n := range perCPU {
		sum += n
	}
	return sum, nil
}

// Missed is the number of program runs the kernel skipped because another
// BPF program was already running on that CPU (recursion_misses, Linux
// 5.12+; 0 before). A skipped state change can cost one event: report it.
func (t *Tracer) Missed() (uint64, error) {
	var sum uint64
	for _, a := range t.objs.attachments() {
		st, err := a.prog.Stats()
		if err != nil {
			return 0, fmt.Errorf("reading program stats: %w", err)
		}
		sum += st.RecursionMisses
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
