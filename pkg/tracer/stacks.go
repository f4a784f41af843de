package tracer

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// Stack is a connect() call's user stack as the kernel walked it
// (bpf/stacks.h): IPs[0] is where the thread entered the kernel, then the
// return addresses found through frame pointers. Ret is the candidate
// return address into the caller of a syscall wrapper that sets up no
// frame (the word at the user stack pointer on x86-64, the link register
// on arm64), 0 where the kernel cannot give it (before 5.15): trust it
// only where the code before it is a call. PID is the process the stack
// was first seen in, ExeDev and ExeIno its executable (ExeDev in the
// kernel's encoding, major<<20 | minor), StartCode and EndCode where its
// code was mapped: they place the executable's frames once the process
// is gone.
//
// A pair (Caller != 0) is no walk but two stacks of one connection, by
// id: Own, the connect() of a Go net/http dial goroutine, and Caller, the
// goroutine that queued the dial (bpf/gohttp.h, an Entry stack); IPs is
// empty.
type Stack struct {
	PID                uint32
	Ret                uint64
	ExeDev             uint32
	ExeIno             uint64
	StartCode, EndCode uint64
	IPs                []uint64
	// Entry: IPs[0] is a function's entry (a uprobe's stack), not an
	// address to resume at.
	Entry       bool
	Own, Caller uint64
}

// struct user_stack's kinds (STACK_ENTRY, STACK_PAIR).
const (
	stackEntry = 2
	stackPair  = 1
)

// ErrNoStack means the kernel's stack table has no stack of that id.
var ErrNoStack = errors.New("no such stack")

// configureStacks sets the stack sampling and sizes the stack table: as
// small as it gets when no stack is taken.
func configureStacks(spec *ebpf.CollectionSpec, opts *Options) error {
	if opts.StackSample < 0 {
		return fmt.Errorf("stack sample %d: must be 0 (none), 1 (every connect) or more", opts.StackSample)
	}
	if opts.StackSample == 0 {
		for _, m := range []string{"stacks", "go_http_callers", "go_http_dials", "go_http_queued"} {
			spec.Maps[m].MaxEntries = 1 // unused: as small as they get
		}
		return nil
	}
	if err := sizeMap(spec, "stacks", "max stacks", opts.MaxStacks, DefaultMaxStacks, 1<<20); err != nil {
		return err
	}
	if err := spec.Variables["stack_sample"].Set(uint32(opts.StackSample)); err != nil {
		return fmt.Errorf("setting stack sampling: %w", err)
	}
	return nil
}

// Stack reads the stack an event names (event.Event.Stack). Stacks stay
// in the kernel's table while the tracer runs.
func (t *Tracer) Stack(id uint64) (Stack, error) {
	var s twtraceUserStack
	if err := t.objs.Stacks.Lookup(id, &s); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Stack{}, ErrNoStack
		}
		return Stack{}, fmt.Errorf("reading stack %#x: %w", id, err)
	}
	if s.Kind == stackPair {
		return Stack{PID: s.Pid, ExeDev: s.ExeDev, ExeIno: s.ExeIno, StartCode: s.StartCode, EndCode: s.EndCode,
			Own: s.Ip[0], Caller: s.Ip[1]}, nil
	}
	n := min(int(s.Nr), len(s.Ip))
	return Stack{Entry: s.Kind == stackEntry, PID: s.Pid, Ret: s.Ret, ExeDev: s.ExeDev, ExeIno: s.ExeIno,
		StartCode: s.StartCode, EndCode: s.EndCode, IPs: append([]uint64(nil), s.Ip[:n]...)}, nil
}

// LostStacks is how many connect() stacks the kernel's table had no room
// for: their connections carry no stack.
func (t *Tracer) LostStacks() (uint64, error) {
	return t.lostCount(twtraceLostSlotLOST_STACKS)
}
