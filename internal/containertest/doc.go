// Package containertest gives tests real containers: OCI bundles run by
// runc, and pods run by containerd's CRI plugin the way a kubelet drives
// it. Every fixture declares its host components (testnet.RequireHost),
// cleans up in t.Cleanup and fails naming the step that did not work.
//
// # Where a container's processes land (runc 1.1, cgroupfs driver)
//
// Measured on a hybrid host (v1 controllers at /sys/fs/cgroup/<ctrl>, the
// named v1 hierarchy name=systemd, and a controller-less cgroup v2 tree at
// /sys/fs/cgroup/unified) with CgroupsPath
// "/system.slice/docker-<64hex>.scope" and
// "/kubepods/besteffort/pod<uid>/<64hex>": runc creates the path in every
// v1 hierarchy (cpu, cpuacct, cpuset, memory, devices, freezer, blkio,
// pids, name=systemd) and in the unified tree, and moves the process into
// all of them. Every line of /proc/PID/cgroup, the v2 "0::" line
// included, shows exactly CgroupsPath, so the cgroup id the kernel's
// bpf_get_current_cgroup_id returns is the inode of
// /sys/fs/cgroup/unified<CgroupsPath>. The spec's cgroup namespace is not
// used, so the paths are the host's. runc removes the container's own
// directory on delete but not the parents it made; RunC removes those.
//
// The systemd driver ("system.slice:docker:<id>", runc --systemd-cgroup)
// does not work without systemd as pid 1: runc refuses with "systemd not
// running on this host, cannot use systemd cgroups manager". Tests needing
// the systemd layout's names use the cgroupfs driver with the path the
// systemd driver would make (/system.slice/docker-<id>.scope).
//
// # containerd 1.6's CRI plugin
//
// With CgroupParent "/kubepods/besteffort/pod<uid>" (the kubelet's
// cgroupfs driver) a pod's container lands in
// /kubepods/besteffort/pod<uid>/<container id> and its sandbox's pause
// process in /kubepods/besteffort/pod<uid>/<sandbox id>: the same path in
// every v1 hierarchy and in the unified tree, as with runc alone. The ids
// are the CRI's 64-hex ones; ListContainers returns the labels the caller
// set. Host-network pods need no CNI: the plugin logs that it found no
// network config and runs them.
//
// This host lacks CAP_SYS_RESOURCE, so the CRI's oom_score_adj of -998 for
// a sandbox fails; Containerd sets restrict_oom_score_adj (see there).
package containertest
