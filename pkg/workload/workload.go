// Package workload folds processes into the workloads people act on: a
// program (a script's short-lived clients, a pre-fork server's workers),
// a container, a pod, a systemd unit. It decides which row of the
// engine's table a process's events go to (Group), names a row for a
// person (Name), and carries what owns a process (Identity), resolved in
// userspace from what the kernel recorded with the event: the cgroup id,
// the parent tgid, the executable and the thread-group leader's comm.
package workload

import (
	"fmt"
	"strings"
)

// By is how the views fold processes into rows (--by).
type By uint8

const (
	// ByProgram (the default): processes with the same comm and
	// executable under the same parent process, or in the same container.
	ByProgram By = iota
	// ByPID: one row per process, as before workloads.
	ByPID
	// ByContainer: one row per container; processes in none fold by
	// program.
	ByContainer
	// ByPod: one row per Kubernetes pod; processes in none fold by
	// program.
	ByPod
	// ByUnit: one row per systemd unit; processes in none fold by
	// program.
	ByUnit
)

var byNames = [...]string{ByProgram: "program", ByPID: "pid", ByContainer: "container", ByPod: "pod", ByUnit: "unit"}

func (b By) String() string {
	if int(b) < len(byNames) {
		return byNames[b]
	}
	return "unknown"
}

// ParseBy is the inverse of By.String.
func ParseBy(s string) (By, error) {
	for b, name := range byNames {
		if s == name {
			return By(b), nil
		}
	}
	return 0, fmt.Errorf("--by %q: want one of %s", s, strings.Join(byNames[:], ", "))
}

// Identity is what owns a process, beyond the process itself. Every field
// is "" when not known: never a guess. Values come from cgroup paths and
// the container runtime, both chosen by whoever runs the workload:
// escape them before printing.
type Identity struct {
	Cgroup           string `json:"cgroup"` // path under the cgroup hierarchy's root
	ContainerID      string `json:"container_id"`
	ContainerRuntime string `json:"container_runtime"` // containerd, cri-o, docker, podman
	PodUID           string `json:"pod_uid"`
	Pod              string `json:"pod"`           // Kubernetes names, from the CRI
	PodNamespace     string `json:"pod_namespace"` //
	Container        string `json:"container"`     //
	Unit             string `json:"unit"`          // systemd unit, e.g. cron.service
}

// Process is what the kernel recorded about the process responsible for
// an event.
type Process struct {
	PID    uint32
	PPID   uint32 // its parent as of its fork; 0 unknown
	ExeDev uint32 // its executable's device (kernel encoding) and inode; 0 unknown
	ExeIno uint64
	Comm   [16]byte // its thread-group leader's comm
}

// Group is the part of a row's key that says which processes it folds:
// comparable, and cheap to hash.
type Group struct {
	PID    uint32 // ByPID only
	PPID   uint32 // programs outside a container
	ExeDev uint32 // programs
	ExeIno uint64
	Comm   [16]byte // programs and processes; zero for a container, pod or unit
	// Owner is the container id, pod uid or unit a row folds by (prefixed
	// with what it is), and a program's container.
	Owner string
}

// GroupOf is the group p's events go to when folding by b, given what
// owns p.
func GroupOf(b By, p *Process, id *Identity) Group {
	switch b {
	case ByPID:
		return Group{PID: p.PID, Comm: p.Comm}
	case ByContainer:
		if id.ContainerID != "" {
			return Group{Owner: "container:" + id.ContainerID}
		}
	case ByPod:
		if id.PodUID != "" {
			return Group{Owner: "pod:" + id.PodUID}
		}
	case ByUnit:
		if id.Unit != "" {
			return Group{Owner: "unit:" + id.Unit}
		}
	}
	// A program: in a container, its processes whatever their parent.
	g := Group{Comm: p.Comm, ExeDev: p.ExeDev, ExeIno: p.ExeIno}
	if id.ContainerID != "" {
		g.Owner = "container:" + id.ContainerID
	} else {
		g.PPID = p.PPID
	}
	return g
}

// Folded reports whether g names a container, pod or unit rather than a
// program or a process.
func (g *Group) Folded() bool {
	return g.Owner != "" && g.Comm == [16]byte{}
}

// Resolver tells what owns a process. The engine asks Owner when it first
// sees a row (the process may be gone a moment later: a curl in a loop),
// and Name at every frame (names from the container runtime arrive
// asynchronously).
type Resolver interface {
	// Owner is what p's cgroup (the kernel's cgroup v2 id, recorded with
	// the event) says: synchronous, cached.
	Owner(cgroupID uint64, p *Process) Identity
	// Name fills id's Kubernetes names where the container runtime has
	// told them; it never blocks.
	Name(id *Identity)
}

// Selector keeps the rows and events of some pods and containers
// (--pod, --pod-namespace, --container). Values of one option are
// alternatives; options all apply. The zero Selector keeps everything.
type Selector struct {
	Pods, PodNamespaces, Containers []string
}

// Empty reports whether s keeps everything.
func (s *Selector) Empty() bool {
	return s == nil || len(s.Pods)+len(s.PodNamespaces)+len(s.Containers) == 0
}

// Match reports whether s keeps what id owns. --container matches a
// Kubernetes container name, or a container id or a prefix of one (four
// characters at least, as the container CLIs accept).
func (s *Selector) Match(id *Identity) bool {
	if s.Empty() {
		return true
	}
	return anyOf(s.Pods, func(v string) bool { return v == id.Pod }) &&
		anyOf(s.PodNamespaces, func(v string) bool { return v == id.PodNamespace }) &&
		anyOf(s.Containers, func(v string) bool {
			return v == id.Container || len(v) >= 4 && id.ContainerID != "" && strings.HasPrefix(id.ContainerID, v)
		})
}

// anyOf: no values keep everything; else any value must match.
func anyOf(values []string, match func(string) bool) bool {
	if len(values) == 0 {
		return true
	}
	for _, v := range values {
		if match(v) {
			return true
		}
	}
	return false
}

// Name is a row's display name (the JSON "workload", no count in it):
// the comm of a process or program; for a container its Kubernetes
// namespace/pod/container when known, else its runtime and short id; for
// a pod namespace/pod, else its uid; for a unit its name.
func Name(g *Group, comm string, id *Identity) string {
	if !g.Folded() {
		return comm
	}
	kind, _, _ := strings.Cut(g.Owner, ":")
	switch kind {
	case "container":
		if id.Pod != "" {
			return id.PodNamespace + "/" + id.Pod + "/" + id.Container
		}
		return strings.TrimSpace(id.ContainerRuntime + " " + ShortID(id.ContainerID))
	case "pod":
		if id.Pod != "" {
			return id.PodNamespace + "/" + id.Pod
		}
		return "pod " + id.PodUID
	}
	return id.Unit
}

// ShortID is a container id as the container CLIs show it: 12 characters.
func ShortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
