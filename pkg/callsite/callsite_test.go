package callsite

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/symbol"
	"github.com/twtrace/twtrace/pkg/tracer"
)

// stacks is a StackReader of stacks this test took itself (the kernel's
// walk is tested in pkg/tracer): what Sites makes of them is tested here.
type stacks map[uint64]tracer.Stack

func (s stacks) Stack(id uint64) (tracer.Stack, error) {
	st, ok := s[id]
	if !ok {
		return tracer.Stack{}, tracer.ErrNoStack
	}
	return st, nil
}

// dialStack is the stack of this goroutine inside callsiteDial, as the
// kernel would walk it: the return addresses, innermost first.
func dialStack() []uint64 {
	pc := make([]uintptr, 32)
	n := runtime.Callers(2, pc) // from dialStack's caller
	out := make([]uint64, n)
	for i := range n {
		out[i] = uint64(pc[i])
	}
	// Frame 0 is where the thread entered the kernel: as the kernel
	// gives it, the address after the syscall instruction, which
	// Resolve looks up one byte earlier like a return address.
	return out
}

//go:noinline
func callsiteDial() []uint64 {
	return dialStack() // the call site
}

func TestSitesNameAndFold(t *testing.T) {
	st := callsiteDial()
	pid := uint32(os.Getpid())
	// The same stack under two ids (as two processes of one program
	// with different layouts would give): one site.
	src := stacks{1: {PID: pid, IPs: st}, 2: {PID: pid, IPs: st}}
	s := New(src, symbol.NewResolver(4))
	e := event.Event{Kind: event.KindStack, PID: pid, Stack: 1}
	s.Learn(&e)
	if got := s.Canonical(1, pid); got != 1 {
		t.Fatalf("canonical of 1 = %d, want 1", got)
	}
	if got := s.Canonical(2, pid); got != 1 {
		t.Errorf("canonical of 2 = %d, want 1 (the same site)", got)
	}
	site := s.Site(1)
	if site == nil || !site.Known || !strings.Contains(site.String(), "callsite.callsiteDial (") {
		t.Fatalf("site %+v: want callsiteDial", site)
	}
	if st := s.Stats(); st.Stacks != 2 || st.Sites != 1 || st.Unresolved != 0 || st.Dropped != 0 {
		t.Errorf("stats %+v, want 2 stacks, 1 site", st)
	}
	if s.Canonical(0, pid) != 0 {
		t.Error("stack 0 is no stack")
	}
}

// A stack the kernel no longer has, and one whose process is gone with
// nothing to place its executable: no site, a note, counted.
func TestSitesUnresolved(t *testing.T) {
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Skip(err)
	}
	gone := uint32(cmd.Process.Pid)
	src := stacks{7: {PID: gone, IPs: []uint64{0x401000, 0x402000}}}
	s := New(src, symbol.NewResolver(4))
	if got := s.Canonical(7, gone); got != 7 {
		t.Fatalf("canonical %d, want 7", got)
	}
	if site := s.Site(7); site.Known || site.Note != "process gone before its stack was read" {
		t.Errorf("site %+v, want the note", site)
	}
	s.Canonical(9, gone)
	if site := s.Site(9); site.Known || site.Note != "stack not kept by the kernel" {
		t.Errorf("site %+v, want the note", site)
	}
	if st := s.Stats(); st.Unresolved != 2 {
		t.Errorf("stats %+v, want 2 unresolved", st)
	}
}

// Past the bound, stacks are counted, not kept.
func TestSitesBound(t *testing.T) {
	pid := uint32(os.Getpid())
	st := callsiteDial()
	s := New(stacks{1: {PID: pid, IPs: st}, 2: {PID: pid, IPs: st}}, symbol.NewResolver(4))
	s.max = 1
	s.Canonical(1, pid)
	if got := s.Canonical(2, pid); got != 2 || s.Site(2) != nil {
		t.Errorf("canonical %d, site %+v: want 2 as it is, no site", got, s.Site(2))
	}
	if st := s.Stats(); st.Dropped != 1 {
		t.Errorf("stats %+v, want 1 dropped", st)
	}
}
