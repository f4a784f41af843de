package cgroup

import (
	"strings"
	"testing"
)

const (
	ctr   = "3f0d5c9e2b7a41c8a6d1e0f9b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5" // a container
	node  = "9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5d6c7b8a9" // a kind/k3d node container
	uid   = "5e7a1c2b-3d4f-4a6b-8c9d-0e1f2a3b4c5d"
	uidU  = "5e7a1c2b_3d4f_4a6b_8c9d_0e1f2a3b4c5d" // the systemd driver's spelling
	hash  = "0123456789abcdef0123456789abcdef"     // a static pod's UID
	pod   = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/"
	kind  = "/system.slice/docker-" + node + ".scope/kubelet.slice/kubelet-kubepods.slice/"
	crioT = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/"
)

// layoutCases are the layouts of issue 15, one per runtime and driver,
// with the exact Layout each must give; they also seed FuzzParseLayout.
var layoutCases = []struct {
	name, path string
	want       Layout
}{
	// kubelet, systemd cgroup driver
	{"kubelet systemd containerd", "/" + pod + "cri-containerd-" + ctr + ".scope",
		Layout{Runtime: "containerd", ContainerID: ctr, PodUID: uid}},
	{"kubelet systemd cri-o", crioT + "crio-" + ctr + ".scope",
		Layout{Runtime: "cri-o", ContainerID: ctr, PodUID: uid}},
	{"kubelet systemd cri-dockerd", "/" + pod + "docker-" + ctr + ".scope",
		Layout{Runtime: "docker", ContainerID: ctr, PodUID: uid}},
	{"kubelet systemd guaranteed (no qos slice)", "/kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + ctr + ".scope",
		Layout{Runtime: "containerd", ContainerID: ctr, PodUID: uid}},
	{"kubelet systemd static pod", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + hash + ".slice/cri-containerd-" + ctr + ".scope",
		Layout{Runtime: "containerd", ContainerID: ctr, PodUID: hash}},
	{"kubelet systemd pod slice only", "/" + pod,
		Layout{PodUID: uid}},
	{"kubelet systemd qos slice", "/kubepods.slice/kubepods-burstable.slice", Layout{}},
	{"cri-o conmon is not the container", crioT + "crio-conmon-" + ctr + ".scope",
		Layout{PodUID: uid, Unit: "crio-conmon-" + ctr + ".scope"}},
	// kubelet, cgroupfs driver: the path does not name the runtime
	{"kubelet cgroupfs", "/kubepods/burstable/pod" + uid + "/" + ctr,
		Layout{ContainerID: ctr, PodUID: uid}},
	{"kubelet cgroupfs guaranteed", "/kubepods/pod" + uid + "/" + ctr,
		Layout{ContainerID: ctr, PodUID: uid}},
	{"kubelet cgroupfs pod only", "/kubepods/besteffort/pod" + uid, Layout{PodUID: uid}},
	// containerd's systemd driver when containerd is not systemd's child
	{"containerd colon form", "/system.slice/containerd.service/kubepods-burstable-pod" + uidU + ".slice:cri-containerd:" + ctr,
		Layout{Runtime: "containerd", ContainerID: ctr, PodUID: uid}},
	{"containerd colon form guaranteed", "/system.slice/containerd.service/kubepods-pod" + uidU + ".slice:cri-containerd:" + ctr,
		Layout{Runtime: "containerd", ContainerID: ctr, PodUID: uid}},
	{"containerd colon form, no pod", "/system.slice/containerd.service/system.slice:cri-containerd:" + ctr,
		Layout{Runtime: "containerd", ContainerID: ctr}},
	// Docker
	{"docker cgroupfs", "/docker/" + ctr, Layout{Runtime: "docker", ContainerID: ctr}},
	{"docker systemd", "/system.slice/docker-" + ctr + ".scope", Layout{Runtime: "docker", ContainerID: ctr}},
	{"docker daemon", "/system.slice/docker.service", Layout{Unit: "docker.service"}},
	// Podman
	{"podman rootful", "/machine.slice/libpod-" + ctr + ".scope", Layout{Runtime: "podman", ContainerID: ctr}},
	{"podman split cgroup", "/machine.slice/libpod-" + ctr + ".scope/container", Layout{Runtime: "podman", ContainerID: ctr}},
	{"podman rootless", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + ctr + ".scope",
		Layout{Runtime: "podman", ContainerID: ctr}},
	{"podman cgroupfs", "/libpod_parent/libpod-" + ctr, Layout{Runtime: "podman", ContainerID: ctr}},
	{"podman conmon is not the container", "/machine.slice/libpod-conmon-" + ctr + ".scope",
		Layout{Unit: "libpod-conmon-" + ctr + ".scope"}},
	// Nested: a Kubernetes node that is a container; the innermost wins
	{"kind pod container", kind + "kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + ctr + ".scope",
		Layout{Runtime: "containerd", ContainerID: ctr, PodUID: uid}},
	{"kind guaranteed pod container", kind + "kubelet-kubepods-pod" + uidU + ".slice/cri-containerd-" + ctr + ".scope",
		Layout{Runtime: "containerd", ContainerID: ctr, PodUID: uid}},
	{"kind pod slice is not the node's container", kind + "kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uidU + ".slice",
		Layout{PodUID: uid}},
	{"kind node's own services", "/system.slice/docker-" + node + ".scope/system.slice/containerd.service",
		Layout{Runtime: "docker", ContainerID: node}},
	{"k3d pod container", "/docker/" + node + "/kubepods/besteffort/pod" + uid + "/" + ctr,
		Layout{ContainerID: ctr, PodUID: uid}},
	{"k3s systemd", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + ctr + ".scope",
		Layout{Runtime: "containerd", ContainerID: ctr, PodUID: uid}},
	{"k3s cgroupfs", "/kubepods/besteffort/pod" + uid + "/" + ctr, Layout{ContainerID: ctr, PodUID: uid}},
	// systemd units
	{"service", "/system.slice/cron.service", Layout{Unit: "cron.service"}},
	{"session scope", "/user.slice/user-0.slice/session-3.scope", Layout{Unit: "session-3.scope"}},
	{"user manager's app", "/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-1.scope",
		Layout{Unit: "vte-spawn-1.scope"}},
	{"service subgroup", "/system.slice/containerd.service/sub", Layout{Unit: "containerd.service"}},
	{"slice", "/system.slice", Layout{}},
	{"root", "/", Layout{}},
	{"empty", "", Layout{}},
	// What a path does not say stays ""
	{"short id", "/docker/" + ctr[:63], Layout{}},
	{"upper-case id", "/docker/" + strings.ToUpper(ctr), Layout{}},
	{"non-hex id", "/system.slice/docker-" + strings.Repeat("g", 64) + ".scope", Layout{Unit: "docker-" + strings.Repeat("g", 64) + ".scope"}},
	{"bare id under an unknown parent", "/mystery/" + ctr, Layout{}},
	{"pod outside kubepods", "/pods/pod" + uid + "/" + ctr, Layout{}},
	{"bad pod uid", "/kubepods/burstable/pod1234/" + ctr, Layout{}},
	{"docker scope without .scope", "/system.slice/docker-" + ctr, Layout{}},
	{"unknown colon runtime", "/x/kubepods-pod" + uidU + ".slice:runc:" + ctr, Layout{}},
	{"unknown layout", "/twtrace/build/step-1", Layout{}},
	{"empty components", "//docker//" + ctr + "/", Layout{Runtime: "docker", ContainerID: ctr}},
	{"dot-dot", "/docker/../" + ctr, Layout{}},
	{"control characters kept raw", "/system.slice/evil\x1b[2J\n.service", Layout{Unit: "evil\x1b[2J\n.service"}},
	{"escape sequence kept raw", "/system.slice/evil\x1b[31m\t.service", Layout{Unit: "evil\x1b[31m\t.service"}},
}

func TestParseLayout(t *testing.T) {
	for _, c := range layoutCases {
		t.Run(c.name, func(t *testing.T) {
			if got := ParseLayout(c.path); got != c.want {
				t.Errorf("ParseLayout(%q)\n got %+v\nwant %+v", c.path, got, c.want)
			}
		})
	}
}

func TestParseLayoutLongPath(t *testing.T) {
	long := "/" + strings.Repeat("a/", 2048) + "docker/" + ctr
	if got := ParseLayout(long); got != (Layout{Runtime: "docker", ContainerID: ctr}) {
		t.Errorf("4 KiB path: got %+v", got)
	}
	name := "/system.slice/" + strings.Repeat("x", 4096) + ".service"
	if got := ParseLayout(name); got.Unit != strings.Repeat("x", 4096)+".service" {
		t.Errorf("4 KiB unit: got %d bytes", len(got.Unit))
	}
}

// FuzzParseLayout: any path parses without panicking, and whatever it
// names is a substring of the path in the form the rules promise.
func FuzzParseLayout(f *testing.F) {
	for _, c := range layoutCases {
		f.Add(c.path)
	}
	f.Fuzz(func(t *testing.T, path string) {
		l := ParseLayout(path)
		if l.ContainerID != "" && (!isContainerID(l.ContainerID) || !strings.Contains(path, l.ContainerID)) {
			t.Fatalf("container id %q from %q", l.ContainerID, path)
		}
		if l.ContainerID == "" && l.Runtime != "" {
			t.Fatalf("runtime %q without a container from %q", l.Runtime, path)
		}
		if l.ContainerID != "" && l.Unit != "" {
			t.Fatalf("unit %q beside container %q", l.Unit, l.ContainerID)
		}
		if l.PodUID != "" && !isPodUID(l.PodUID) {
			t.Fatalf("pod uid %q from %q", l.PodUID, path)
		}
		if l.Unit != "" && (!strings.Contains(path, l.Unit) || strings.Contains(l.Unit, "/")) {
			t.Fatalf("unit %q from %q", l.Unit, path)
		}
	})
}
