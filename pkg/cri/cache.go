// Package cri names containers and pods from the node's Container Runtime
// Interface (containerd, CRI-O, cri-dockerd): it lists the runtime's pod
// sandboxes and containers in the background and answers lookups by id
// from an immutable snapshot, so a CRI that is absent, slow or gone never
// stalls the event stream: names fall back to ids.
package cri

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
)

// Options configure a Cache.
type Options struct {
	Endpoint string        // "unix:///path" or a path
	Timeout  time.Duration // per call; default 2 s
	Refresh  time.Duration // least time between two listings; default 1 s
	Log      io.Writer     // one line per problem (unavailable, back), never per lookup; default os.Stderr
}

const (
	defaultTimeout = 2 * time.Second
	defaultRefresh = time.Second

	// A container's records keep arriving after it is removed: those of
	// its last connections at once, its TIME_WAIT expiries up to 60 s
	// later. Removed ids keep their names this long, at most maxGone of
	// them (and as many pods): with names of a few hundred bytes, about
	// 1 MiB at worst.
	retainGone = 5 * time.Minute
	maxGone    = 4096

	// An id a listing after its miss did not hold is no container of this
	// runtime (another runtime's, or not a container at all): asking again
	// within this time would list the node once per Refresh for nothing.
	unknownFor = 30 * time.Second
	maxUnknown = 4096
	maxAsked   = 1024

	// A node with many pods lists more than gRPC's default 4 MiB (the
	// kubelet allows 16 MiB too).
	maxMessage = 16 << 20
)

// Cache holds the names of the containers and pods the CRI listed last.
type Cache struct {
	opts Options
	snap atomic.Pointer[snapshot]
	wake chan struct{} // a miss asks Run for a listing; capacity 1

	mu    sync.Mutex
	asked map[askKey]struct{} // misses since the last listing began

	listings, failures, answered, misses atomic.Uint64
	state                                atomic.Uint32

	conn *grpc.ClientConn // Run's alone
	now  func() time.Time // tests move time
}

type askKey struct {
	pod bool // a pod uid, not a container or sandbox id
	id  string
}

// New returns a Cache that knows no names yet. It does not dial: Run does.
func New(o Options) *Cache {
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.Refresh <= 0 {
		o.Refresh = defaultRefresh
	}
	if o.Log == nil {
		o.Log = os.Stderr
	}
	c := &Cache{
		opts:  o,
		wake:  make(chan struct{}, 1),
		asked: map[askKey]struct{}{},
		now:   time.Now,
	}
	c.snap.Store(&snapshot{})
	return c
}

// Lookup returns the names of a container id or of a pod sandbox id (then
// Container is ""); ok is false when the id is not (yet) known, and the
// miss asks Run for a new listing. It never waits for the CRI.
func (c *Cache) Lookup(id string) (Names, bool) {
	return c.lookup(askKey{id: id})
}

// PodByUID returns the names of a pod from its uid, for a cgroup path that
// names the pod and no container (Container is "").
func (c *Cache) PodByUID(uid string) (Names, bool) {
	return c.lookup(askKey{pod: true, id: uid})
}

func (c *Cache) lookup(k askKey) (Names, bool) {
	s := c.snap.Load()
	names := s.ids
	if k.pod {
		names = s.pods
	}
	if r, ok := names[k.id]; ok {
		c.answered.Add(1)
		return r.names, true
	}
	c.misses.Add(1)
	if until, ok := s.unknown[k]; ok && c.now().Before(until) {
		return Names{}, false
	}
	// mu is never held across a CRI call: Run holds it only to swap maps.
	c.mu.Lock()
	if len(c.asked) < maxAsked {
		c.asked[k] = struct{}{}
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // a listing is asked for already
	}
	return Names{}, false
}

// Run lists at once, then again on a miss (Refresh after the last listing
// at the soonest) until ctx ends. Failures are counted and logged once per
// outage. Call it once.
func (c *Cache) Run(ctx context.Context) {
	path, err := socketPath(c.opts.Endpoint)
	if err != nil {
		c.state.Store(uint32(StateDown))
		fmt.Fprintf(c.opts.Log, "twtrace: CRI endpoint %q: %v; pod names fall back to ids\n", c.opts.Endpoint, err)
		c.failures.Add(1)
		return
	}
	defer c.hangUp()
	for {
		c.refresh(ctx, path)
		// Refresh counts from the end of a listing, so a CRI that answers
		// slowly is not asked again at once.
		ended := c.now()
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		}
		if wait := c.opts.Refresh - c.now().Sub(ended); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// refresh lists the CRI and publishes a new snapshot built from it, or
// records the failure and keeps serving the old one.
func (c *Cache) refresh(ctx context.Context, path string) {
	c.mu.Lock()
	asked := c.asked
	c.asked = map[askKey]struct{}{}
	c.mu.Unlock()

	l, err := c.list(ctx, path)
	if ctx.Err() != nil {
		return // shutting down: not the CRI's failure
	}
	// The counters move last: a reader that sees them move sees the
	// snapshot and the log line that go with them.
	if err != nil {
		if State(c.state.Swap(uint32(StateDown))) != StateDown {
			msg := strings.ReplaceAll(err.Error(), "\n", " ")
			fmt.Fprintf(c.opts.Log, "twtrace: CRI %s unavailable: %s; pod names fall back to ids\n", c.opts.Endpoint, msg)
		}
		c.failures.Add(1)
		return
	}
	next := c.snap.Load().next(l, asked, c.now())
	if State(c.state.Swap(uint32(StateUp))) == StateDown {
		fmt.Fprintf(c.opts.Log, "twtrace: CRI %s is back; pods are named again\n", c.opts.Endpoint)
	}
	// The snapshot goes out after the line: a lookup that finds a new name
	// comes after the line that says the CRI is back.
	c.snap.Store(next)
	c.listings.Add(1)
}

// State is the CRI as the last listing found it.
type State uint32

const (
	StateNever State = iota // no listing has ended yet
	StateUp                 // the last listing succeeded
	StateDown               // the last listing failed
)

func (s State) String() string {
	switch s {
	case StateUp:
		return "up"
	case StateDown:
		return "down"
	}
	return "never"
}

// Stats count the Cache's work since New.
type Stats struct {
	State              State
	Listings, Failures uint64 // listings that succeeded, that failed
	Answered, Misses   uint64 // lookups answered, not answered
	IDs, Pods          int    // container and sandbox ids, pod uids known (removed ones kept included)
}

func (c *Cache) Stats() Stats {
	s := c.snap.Load()
	return Stats{
		State:    State(c.state.Load()),
		Listings: c.listings.Load(),
		Failures: c.failures.Load(),
		Answered: c.answered.Load(),
		Misses:   c.misses.Load(),
		IDs:      len(s.ids),
		Pods:     len(s.pods),
	}
}
