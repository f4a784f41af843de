package top

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/internal/containertest"
	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/live"
	"github.com/twtrace/twtrace/pkg/owner"
	"github.com/twtrace/twtrace/pkg/workload"
)

// ncLoop is a shell loop of n busybox nc clients toward dest (each sends
// nothing and closes first: the client keeps the timewait), then the
// shell commands in then.
func ncLoop(dest string, n int, then string) []string {
	host, port, _ := net.SplitHostPort(dest)
	return []string{"sh", "-c", fmt.Sprintf(`i=0; while [ $i -lt %d ]; do nc %s %s </dev/null || exit 1; i=$((i+1)); done; %s`, n, host, port, then)}
}

// startTopHost is startTop over this process's own network namespace.
func startTopHost(t *testing.T, set func(*live.Config)) *topRun {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return startTopIn(t, uint32(st.Ino), set)
}

func containerID(t *testing.T) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// hostOwners is what owns processes on this host, without a CRI or with
// the one at endpoint.
func hostOwners(t *testing.T, endpoint string) *owner.Host {
	h, err := owner.New(owner.Options{Endpoint: endpoint})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// A container run by runc with Docker's layout (system.slice/docker-<id>.scope)
// whose shell loop makes 20 one-shot connections is one row under
// --by container, named by its runtime and short id, with every owner
// field exact, 20 processes folded and the per-request verdict.
func TestTopNamesContainer(t *testing.T) {
	requireBPF(t)
	testnet.RequireHost(t, "runc")
	ns, servers := testnet.NewSmallRange(t, 1)
	id := containerID(t)
	cgroup := "/system.slice/docker-" + id + ".scope"
	bundle := containertest.Bundle(t, ncLoop(servers[0].Dest(false), 20, "true"),
		containertest.BundleOptions{CgroupsPath: cgroup, NetnsPath: ns.Path()})
	owners := hostOwners(t, owner.NoCRI)
	run := startTopWith(t, ns, func(c *live.Config) { c.By, c.Owners = workload.ByContainer, owners })
	if err := containertest.RunC(t, "twt-"+id[:12], bundle).Wait(t); err != nil {
		t.Fatalf("container: %v", err)
	}
	f := run.frameWhere(t, settled(20))
	if len(f.Rows) != 1 {
		t.Fatalf("%d rows, want the container's: %+v", len(f.Rows), f.Rows)
	}
	r := f.Rows[0]
	want := workload.Identity{Cgroup: cgroup, ContainerID: id, ContainerRuntime: "docker"}
	if r.Identity != want || r.Workload != "docker "+id[:12] || r.Comm != "nc" || r.ProcessCount != 20 {
		t.Errorf("row: workload %q, comm %q, %d processes, owner %+v; want %q, nc, 20, %+v",
			r.Workload, r.Comm, r.ProcessCount, r.Identity, "docker "+id[:12], want)
	}
	if r.Connects != 20 || r.Timewait != 20 || r.Verdict != "per-request" {
		t.Errorf("row: %d connects, %d timewait, verdict %q (%s); want 20, 20, per-request", r.Connects, r.Timewait, r.Verdict, r.Reason)
	}
}

// A pod run by containerd through its CRI, as a kubelet would (cgroupfs
// driver, host network): its container's nc loop is one row by program,
// named by the CRI (pod, namespace, container), selected by --pod, and
// judged per-request.
func TestTopNamesPod(t *testing.T) {
	requireBPF(t)
	rt := containertest.Containerd(t)
	dest := testnet.LoopbackServer(t)
	uid := "6f1d2c3b-8a9e-4f70-b1c2-d3e4f5a6b7c8"
	owners := hostOwners(t, rt.Endpoint)
	run := startTopHost(t, func(c *live.Config) {
		c.Owners, c.Select = owners, workload.Selector{Pods: []string{"checkout-7d9f"}, PodNamespaces: []string{"payments"}}
	})
	pod := rt.Pod(t, containertest.PodSpec{Name: "checkout-7d9f", Namespace: "payments", UID: uid, Container: "api",
		Args: ncLoop(dest, 20, "sleep 600")})
	f := run.frameWhere(t, func(fr *Frame) bool {
		for _, r := range fr.Rows {
			if r.Comm == "nc" && r.Timewait >= 20 && r.Pod != "" {
				return true
			}
		}
		return false
	})
	if len(f.Rows) != 1 {
		t.Fatalf("%d rows, want the pod's: %+v", len(f.Rows), f.Rows)
	}
	r := f.Rows[0]
	want := workload.Identity{Cgroup: "/kubepods/besteffort/pod" + uid + "/" + pod.ContainerID, ContainerID: pod.ContainerID,
		PodUID: uid, Pod: "checkout-7d9f", PodNamespace: "payments", Container: "api"}
	if r.Identity != want || r.Workload != "nc" || r.ProcessCount != 20 || r.Connects != 20 || r.Timewait != 20 {
		t.Errorf("row: workload %q, %d processes, %d connects, %d timewait, owner %+v; want nc, 20, 20, 20, %+v",
			r.Workload, r.ProcessCount, r.Connects, r.Timewait, r.Identity, want)
	}
	if r.Verdict != "per-request" {
		t.Errorf("verdict %q (%s), want per-request", r.Verdict, r.Reason)
	}
}
