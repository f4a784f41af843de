package tracer

import "errors"

// Losses are the tracer's counts of what it could not report, cumulative
// since it was made: each view picks those it shows. One getter each
// exists too; Losses reads them all at once so that a view does not
// collect them by hand.
type Losses struct {
	Records           uint64 // Lost: records the ring buffer had no room for
	Untracked         uint64 // sockets the owner table had no room for
	Missed            uint64 // transitions the kernel skipped for good
	UncountedConnects uint64 // connect() attempts the count table had no room for
	UnfollowedForks   uint64 // forks the followed set had no room for
	// UntrackedTimewait: timewait sockets the precise tier's table had no
	// room for; their end is not reported.
	UntrackedTimewait uint64
	// UnknownParents: identities made again after the kernel's cache
	// pushed them out, their parent left unknown.
	UnknownParents uint64
	// LostStacks: connect() stacks the kernel's stack table had no room
	// for; their connections carry no call site.
	LostStacks uint64
	// Recovered timewait entries were reported late, not lost: a view
	// that explains its losses says how many were caught up.
	Recovered uint64
}

// Losses reads every loss counter. A counter that cannot be read is left
// 0 and its error joined into the one returned; the others are still
// read.
func (t *Tracer) Losses() (Losses, error) {
	var l Losses
	var errs []error
	read := func(dst *uint64, get func() (uint64, error)) {
		n, err := get()
		*dst = n
		errs = append(errs, err)
	}
	read(&l.Records, t.Lost)
	read(&l.Untracked, t.Untracked)
	read(&l.Missed, t.Missed)
	read(&l.UncountedConnects, t.UncountedConnects)
	read(&l.UnfollowedForks, t.UnfollowedForks)
	read(&l.UntrackedTimewait, t.UntrackedTimewait)
	read(&l.UnknownParents, t.UnknownParents)
	read(&l.LostStacks, t.LostStacks)
	read(&l.Recovered, t.Recovered)
	return l, errors.Join(errs...)
}
