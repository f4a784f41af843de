package live

import (
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/twtrace/twtrace/pkg/aggregate"
	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/tracer"
	"github.com/twtrace/twtrace/pkg/workload"
)

// rowOwner is what the engine learned of a row's workload when it first saw
// it: what owns its process, and its parent's name (read while the parent
// lives: a script's loop outlives its clients).
type rowOwner struct {
	id         workload.Identity
	parentComm string
}

// processOf is what the kernel recorded about e's process.
func processOf(e *event.Event) workload.Process {
	return process(e.PID, &e.Proc, &e.Comm)
}

// connectProcess is what the kernel recorded about the process that
// counted c.
func connectProcess(c *tracer.ConnectCount) workload.Process {
	return process(c.PID, &c.Proc, &c.Comm)
}

// process is pid as the kernel recorded it; comm names it when the
// leader's comm is unknown.
func process(pid uint32, p *event.Proc, comm *[16]byte) workload.Process {
	w := workload.Process{PID: pid, PPID: p.PPID, ExeDev: p.ExeDev, ExeIno: p.ExeIno, Comm: p.Comm}
	if w.Comm[0] == 0 {
		w.Comm = *comm
	}
	return w
}

// connectCgroup is the cgroup c was counted in.
func connectCgroup(c *tracer.ConnectCount) uint64 { return c.CgroupID }

// keyOf is the row e goes to: its workload's group (resolving what owns
// p on the first sight of a group) toward e's destination.
func (s *session) keyOf(e *event.Event, cgroupID uint64, p *workload.Process) aggregate.Key {
	var id workload.Identity
	if s.cfg.Owners != nil {
		if id = s.cfg.Owners.Owner(cgroupID, p); id.Cgroup == "" {
			s.unresolved.Add(1)
		}
	}
	k := aggregate.KeyFor(e, workload.GroupOf(s.cfg.By, p, &id))
	s.mu.Lock()
	if _, ok := s.owners[k]; !ok && len(s.owners) < s.cfg.MaxKeys {
		s.owners[k] = &rowOwner{id: id, parentComm: procComm(p.PPID)}
	}
	s.mu.Unlock()
	return k
}

// procComm is the comm of a live process, "" when it is gone or unknown.
func procComm(pid uint32) string {
	if pid == 0 {
		return ""
	}
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}

// ownerOf is what owns the row with key k, Kubernetes names filled in as
// far as the container runtime has told them.
func (s *session) ownerOf(k aggregate.Key) (workload.Identity, string) {
	s.mu.Lock()
	o := s.owners[k]
	s.mu.Unlock()
	if o == nil {
		return workload.Identity{}, ""
	}
	id := o.id
	if s.cfg.Owners != nil {
		s.cfg.Owners.Name(&id)
	}
	return id, o.parentComm
}

// maxProcesses bounds the per-process tally (Config.PerProcess).
const maxProcesses = 1 << 16

// Process is one process's counts over the session (Config.PerProcess).
type Process struct {
	PID, PPID uint32
	Comm      string // its thread-group leader's
	aggregate.Counts
	// Rows are the keys of the rows it counted in.
	Rows []aggregate.Key
}

// tally counts e (or n connects, with e nil) for process p under row k.
func (s *session) tally(p *workload.Process, k aggregate.Key, e *event.Event, connects uint64) {
	if !s.cfg.PerProcess {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	pr := s.procs[p.PID]
	if pr == nil {
		if len(s.procs) >= maxProcesses {
			s.untallied++
			return
		}
		pr = &Process{PID: p.PID, PPID: p.PPID, Comm: event.CommString(&p.Comm)}
		s.procs[p.PID] = pr
		s.procOrder = append(s.procOrder, p.PID)
	}
	if e != nil {
		pr.Count(e)
	}
	pr.Connects += connects
	if !slices.Contains(pr.Rows, k) {
		pr.Rows = append(pr.Rows, k)
	}
}

// processes copies the tally, in the order the processes first counted.
func (s *session) processes() []Process {
	if !s.cfg.PerProcess {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Process, 0, len(s.procOrder))
	for _, pid := range s.procOrder {
		p := *s.procs[pid]
		p.Rows = slices.Clone(p.Rows)
		out = append(out, p)
	}
	return out
}
