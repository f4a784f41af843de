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
	"sync"

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
	// unavailable, or the process was gone before it could be read.
	Note string
}

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
}

// Sites maps the kernel's stack ids to call sites. It is safe for
// concurrent use.
type Sites struct {
	tr  StackReader
	res *symbol.Resolver

	mu     sync.Mutex
	byID   map[uint64]*Site
	bySite map[string]*Site
	max    int
	stats  Stats
}

// New makes Sites that read stacks from tr and symbolize them with res.
func New(tr StackReader, res *symbol.Resolver) *Sites {
	return &Sites{tr: tr, res: res, byID: map[uint64]*Site{}, bySite: map[string]*Site{}, max: DefaultMaxStacks}
}

// Learn symbolizes the stack a KindStack event announces, by its process
// (e.PID), now.
func (s *Sites) Learn(e *event.Event) {
	s.Canonical(e.Stack, e.PID)
}

// Canonical returns the canonical stack id of id's call site, learning
// the stack first if it is new (pid is the process it was taken in, used
// when the kernel's record does not say). 0 stays 0; an id past the
// bound is returned as it is, with no site.
func (s *Sites) Canonical(id uint64, pid uint32) uint64 {
	if id == 0 {
		return 0
	}
	s.mu.Lock()
	site, ok := s.byID[id]
	full := len(s.byID) >= s.max
	s.mu.Unlock()
	if ok {
		return site.ID
	}
	if full {
		s.mu.Lock()
		s.stats.Dropped++
		s.mu.Unlock()
		return id
	}
	site = s.resolve(id, pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.byID[id]; ok { // learnt meanwhile
		return old.ID
	}
	key := siteKey(site)
	if canon, ok := s.bySite[key]; ok && key != "" {
		site = canon
	} else if key != "" {
		s.bySite[key] = site
	}
	s.byID[id] = site
	return site.ID
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
	if st.PID != 0 {
		pid = st.PID
	}
	snap, err := s.res.Snapshot(int(pid))
	if err != nil {
		site.Note = "process gone before its stack was read"
		s.unresolved()
		return site
	}
	site.Frames = s.res.Resolve(snap, addresses(&st))
	site.Frame, site.Library, site.Known = symbol.CallSite(site.Frames)
	switch {
	case site.Known:
	case !symbol.Available(site.Frames):
		site.Note = "stack unavailable (no frame pointers?)"
	default:
		site.Note = "no frame outside the runtime and libraries"
	}
	return site
}

func (s *Sites) unresolved() {
	s.mu.Lock()
	s.stats.Unresolved++
	s.mu.Unlock()
}

// addresses are the stack's frames as Resolve takes them.
func addresses(st *tracer.Stack) []uint64 {
	return st.IPs
}
