package report

import (
	"cmp"
	"strconv"
	"strings"

	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/workload"
)

// Label is the row's name for a table, escaped: its workload, and how
// many processes it folds when more than one ("curl ×300").
func (r *Row) Label() string {
	if r.Other {
		return r.Comm
	}
	name := event.Escape(cmp.Or(r.Workload, r.Comm))
	if r.ProcessCount > 1 {
		name += " ×" + strconv.Itoa(r.ProcessCount)
	}
	return name
}

// Whose says, escaped, where a folded row's processes come from: the
// parent of a program's processes ("← loop.sh 4242"), and what owns them
// (a container, pod or unit) when the row is not named after it. "" when
// there is nothing to add.
func (r *Row) Whose() string {
	if r.Other {
		return ""
	}
	var parts []string
	if r.ProcessCount > 1 && r.Workload == r.Comm && r.PPID != 0 {
		parent := strconv.FormatUint(uint64(r.PPID), 10)
		if r.ParentComm != "" {
			parent = event.Escape(r.ParentComm) + " " + parent
		}
		parts = append(parts, "← "+parent)
	}
	if r.Workload == r.Comm {
		if o := Owner(&r.Identity); o != "" {
			parts = append(parts, "in "+o)
		}
	}
	return strings.Join(parts, " ")
}

// Owner names, escaped, what owns a process: its pod and container, its
// container, or its systemd unit; "" for none.
func Owner(id *workload.Identity) string {
	switch {
	case id.Pod != "" && id.Container == "":
		return event.Escape(id.PodNamespace + "/" + id.Pod)
	case id.Pod != "":
		return event.Escape(id.PodNamespace + "/" + id.Pod + "/" + id.Container)
	case id.ContainerID != "":
		return event.Escape(strings.TrimSpace(id.ContainerRuntime + " " + workload.ShortID(id.ContainerID)))
	case id.PodUID != "":
		return "pod " + event.Escape(id.PodUID)
	case id.Unit != "":
		return event.Escape(id.Unit)
	}
	return ""
}

// OwnerOf is what owns process pid when a container or pod does (nil
// otherwise, and without owners): how a namespace is named for a person.
func OwnerOf(owners workload.Resolver, pid int) *workload.Identity {
	if owners == nil || pid <= 0 {
		return nil
	}
	id := owners.Owner(0, &workload.Process{PID: uint32(pid)})
	if id.ContainerID == "" && id.PodUID == "" {
		return nil
	}
	owners.Name(&id)
	return &id
}
