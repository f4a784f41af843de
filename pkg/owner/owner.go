// Package owner tells what owns a process on this host: its cgroup (from
// the cgroup v2 id the kernel recorded, or /proc/PID/cgroup), what the
// runtimes' layouts say of that cgroup (container, pod uid, systemd unit,
// package cgroup), and the Kubernetes names the node's CRI gives them
// (package cri). It is the workload.Resolver the engine and watch use.
package owner

import (
	"context"
	"io"
	"time"

	"github.com/twtrace/twtrace/pkg/cgroup"
	"github.com/twtrace/twtrace/pkg/cri"
	"github.com/twtrace/twtrace/pkg/workload"
)

// NoCRI as Options.Endpoint asks no CRI for names.
const NoCRI = "none"

// Options of a Host.
type Options struct {
	// Endpoint is the CRI socket ("unix:///…" or a path); "" finds the
	// usual ones (cri.FindEndpoint); NoCRI asks none.
	Endpoint string
	// Log gets one line per CRI problem (and recovery); os.Stderr when nil.
	Log io.Writer
	// CgroupRoot is the host's cgroup v2 mount ("": found in
	// /proc/self/mountinfo); a container sees the host's where it is
	// mounted in.
	CgroupRoot string
}

// Host resolves what owns the processes of this host.
type Host struct {
	cgroups *cgroup.Resolver
	names   *cri.Cache // nil: no CRI
	stop    context.CancelFunc
}

// New starts a Host: the cgroup hierarchy is walked now, the CRI (if
// any) is listed in the background until Close.
func New(o Options) (*Host, error) {
	cg, err := cgroup.NewResolver(cgroup.Options{Root: o.CgroupRoot})
	if err != nil {
		return nil, err
	}
	h := &Host{cgroups: cg, stop: func() {}}
	endpoint := o.Endpoint
	if endpoint == "" {
		endpoint = cri.FindEndpoint()
	}
	if endpoint != "" && endpoint != NoCRI {
		h.names = cri.New(cri.Options{Endpoint: endpoint, Log: o.Log})
		ctx, stop := context.WithCancel(context.Background())
		h.stop = stop
		go h.names.Run(ctx)
	}
	return h, nil
}

// Close stops asking the CRI.
func (h *Host) Close() { h.stop() }

// WaitNames waits up to d for the CRI's first answer (a listing or a
// failure): a one-shot command (snapshot) names pods from the start.
func (h *Host) WaitNames(d time.Duration) {
	if h.names == nil {
		return
	}
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if st := h.names.Stats(); st.Listings > 0 || st.Failures > 0 {
			return
		}
	}
}

// Owner is what p's cgroup says (workload.Resolver).
func (h *Host) Owner(cgroupID uint64, p *workload.Process) workload.Identity {
	info := h.cgroups.Lookup(cgroupID, cgroup.Process{PID: p.PID, PPID: p.PPID, ExeIno: p.ExeIno})
	return workload.Identity{
		Cgroup: info.Path, ContainerID: info.ContainerID, ContainerRuntime: info.Runtime,
		PodUID: info.PodUID, Unit: info.Unit,
	}
}

// Name fills id's Kubernetes names from what the CRI has said; it never
// blocks (workload.Resolver).
func (h *Host) Name(id *workload.Identity) {
	if h.names == nil {
		return
	}
	var n cri.Names
	var ok bool
	switch {
	case id.ContainerID != "":
		n, ok = h.names.Lookup(id.ContainerID)
	case id.PodUID != "":
		n, ok = h.names.PodByUID(id.PodUID)
	}
	if !ok {
		return
	}
	id.Pod, id.PodNamespace, id.Container = n.Pod, n.PodNamespace, n.Container
	if id.PodUID == "" {
		id.PodUID = n.PodUID
	}
}

// CRIFailures counts the CRI listings that failed (the CRI absent, slow or
// gone): names fell back to ids meanwhile.
func (h *Host) CRIFailures() uint64 {
	if h.names == nil {
		return 0
	}
	return h.names.Stats().Failures
}
