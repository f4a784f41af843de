package tracer

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
)

// The functions of Go's net/http the uprobes of bpf/gohttp.h go on: the
// caller's goroutine queues a dial, the dial goroutine makes it.
const (
	GoHTTPQueue = "net/http.(*Transport).queueForDial"
	GoHTTPDial  = "net/http.(*Transport).dialConnFor"
)

// DefaultMaxGoHTTPExecutables bounds how many executables get the net/http
// uprobes: each costs two uprobes (a few hundred bytes of kernel memory
// per process mapping it).
const DefaultMaxGoHTTPExecutables = 64

// ErrGoHTTPFull means the bound on executables with the net/http uprobes
// is reached.
var ErrGoHTTPFull = errors.New("too many executables with net/http uprobes")

// goHTTP is the state of the net/http uprobes: attached per executable,
// on demand, for the tracer's life.
type goHTTP struct {
	mu       sync.Mutex
	links    []link.Link
	attached map[string]bool // executables, by the caller's key
	closed   bool
}

// GoHTTPSupported says why the caller of a net/http dial cannot be
// reached here, or nil: stacks must be taken, and the kernel must let BPF
// read a task's user registers (bpf_task_pt_regs, Linux 5.15), for the
// dialling goroutine at connect().
func (t *Tracer) GoHTTPSupported() error {
	if t.objs.TwHttpQueue == nil || t.stackSample == 0 {
		return errors.New("no stacks are taken")
	}
	if err := features.HaveProgramHelper(ebpf.Kprobe, asm.FnTaskPtRegs); err != nil {
		return fmt.Errorf("the kernel cannot read a thread's user registers (bpf_task_pt_regs, Linux 5.15): %w", err)
	}
	return nil
}

// AttachGoHTTP puts the uprobes of bpf/gohttp.h on the executable at path
// (a Go 1.18+ program; /proc/PID/exe reaches even a deleted one), at the
// file offsets of GoHTTPQueue and GoHTTPDial, once per key (the
// executable's identity). From then on a connect() of its net/http dial
// goroutines carries its caller's stack (Stack.Caller).
func (t *Tracer) AttachGoHTTP(key, path string, queueOff, dialOff uint64) error {
	g := &t.goHTTP
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.closed:
		return errors.New("tracer detached")
	case g.attached[key]:
		return nil
	case len(g.attached) >= DefaultMaxGoHTTPExecutables:
		return ErrGoHTTPFull
	}
	ex, err := link.OpenExecutable(path)
	if err != nil {
		return fmt.Errorf("net/http uprobes on %s: %w", path, err)
	}
	q, err := ex.Uprobe(GoHTTPQueue, t.objs.TwHttpQueue, &link.UprobeOptions{Address: queueOff})
	if err != nil {
		return fmt.Errorf("uprobe on %s in %s: %w", GoHTTPQueue, path, err)
	}
	d, err := ex.Uprobe(GoHTTPDial, t.objs.TwHttpDial, &link.UprobeOptions{Address: dialOff})
	if err != nil {
		q.Close()
		return fmt.Errorf("uprobe on %s in %s: %w", GoHTTPDial, path, err)
	}
	if g.attached == nil {
		g.attached = map[string]bool{}
	}
	g.attached[key] = true
	g.links = append(g.links, q, d)
	if err := t.goHTTPAttached.Set(uint32(1)); err != nil {
		return fmt.Errorf("enabling the net/http callers: %w", err)
	}
	return nil
}

// GoHTTPExecutables is how many executables have the net/http uprobes.
func (t *Tracer) GoHTTPExecutables() int {
	t.goHTTP.mu.Lock()
	defer t.goHTTP.mu.Unlock()
	return len(t.goHTTP.attached)
}

// detach closes the uprobes; none are attached afterwards.
func (g *goHTTP) detach() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	var errs []error
	for _, l := range g.links {
		if err := l.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	g.links = nil
	return errors.Join(errs...)
}
