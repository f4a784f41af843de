package owner

import (
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/containertest"
	"github.com/twtrace/twtrace/pkg/report"
	"github.com/twtrace/twtrace/pkg/workload"
)

func newHost(t *testing.T, endpoint string) *Host {
	h, err := New(Options{Endpoint: endpoint})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// A process of a container runc runs with Podman's layout is owned by
// that container, named by its runtime: how snapshot, top and doctor name
// a namespace whose process it is. A process in no container is not.
func TestOwnerOfRuncContainer(t *testing.T) {
	b := make([]byte, 32)
	rand.Read(b)
	id := hex.EncodeToString(b)
	cgroup := "/machine.slice/libpod-" + id + ".scope"
	bundle := containertest.Bundle(t, []string{"sleep", "60"}, containertest.BundleOptions{CgroupsPath: cgroup})
	c := containertest.RunC(t, "twt-"+id[:12], bundle)
	h := newHost(t, NoCRI)
	got := report.OwnerOf(h, c.PID)
	want := workload.Identity{Cgroup: cgroup, ContainerID: id, ContainerRuntime: "podman"}
	if got == nil || *got != want {
		t.Fatalf("OwnerOf(container's pid) = %+v, want %+v", got, want)
	}
	if o := report.Owner(got); o != "podman "+id[:12] {
		t.Errorf("named %q, want %q", o, "podman "+id[:12])
	}
	if got := report.OwnerOf(h, 1); got != nil {
		t.Errorf("OwnerOf(1) = %+v, want none", got)
	}
}

// A pod run by containerd's CRI as a kubelet would: its container's
// process is named by the CRI (pod, namespace, container) on top of what
// its cgroup path says (kubelet's cgroupfs layout: no runtime in it), and
// its sandbox's (the pause process, which holds a pod's network
// namespace) names the pod alone.
func TestOwnerNamesPod(t *testing.T) {
	rt := containertest.Containerd(t)
	uid := "0b6e8f4a-2c1d-4e3f-9a8b-7c6d5e4f3a2b"
	pod := rt.Pod(t, containertest.PodSpec{Name: "cart-5c4b", Namespace: "shop", UID: uid, Container: "web", Args: []string{"sleep", "600"}})
	h := newHost(t, rt.Endpoint)
	h.WaitNames(5 * time.Second)
	got := report.OwnerOf(h, pod.PID)
	want := workload.Identity{Cgroup: "/kubepods/besteffort/pod" + uid + "/" + pod.ContainerID, ContainerID: pod.ContainerID,
		PodUID: uid, Pod: "cart-5c4b", PodNamespace: "shop", Container: "web"}
	if got == nil || *got != want {
		t.Errorf("the container's process: %+v, want %+v", got, want)
	}
	sb := report.OwnerOf(h, pod.SandboxPID)
	if sb == nil || sb.Pod != "cart-5c4b" || sb.PodNamespace != "shop" || sb.Container != "" || sb.ContainerID != pod.SandboxID {
		t.Errorf("the sandbox's process: %+v, want pod shop/cart-5c4b, container id %s, no container name", sb, pod.SandboxID)
	}
	if o := report.Owner(sb); o != "shop/cart-5c4b" {
		t.Errorf("the sandbox named %q, want shop/cart-5c4b", o)
	}
}
