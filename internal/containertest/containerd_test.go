package containertest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Scenario: containerd's CRI runs a host-network pod whose container
// fetches a page in a loop from the test's server → requests arrive,
// ListContainers shows the kubelet's labels, and the container's process
// sits in /kubepods/besteffort/pod<uid>/<container id> in every hierarchy,
// the pause process in /kubepods/besteffort/pod<uid>/<sandbox id>.
func TestContainerdPodReachesHostServer(t *testing.T) {
	var requests atomic.Int64
	ln := listenHost(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		fmt.Fprint(w, greeting)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })

	cri := Containerd(t)
	spec := PodSpec{
		Name: "checkout-7d9f", Namespace: "payments", UID: "6f1d2c3b-8a9e-4f70-b1c2-d3e4f5a6b7c8",
		Container: "api",
		Args:      []string{"sh", "-c", fmt.Sprintf("while :; do wget -q -O- http://%s/ >/dev/null; sleep 0.1; done", ln.Addr())},
	}
	pod := cri.Pod(t, spec)

	deadline := time.Now().Add(10 * time.Second)
	for requests.Load() < 3 {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(pod.LogPath)
			t.Fatalf("%d requests from the pod in 10 s; its log:\n%s", requests.Load(), log)
		}
		time.Sleep(20 * time.Millisecond)
	}

	list, err := cri.Runtime.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{
		Filter: &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"io.kubernetes.pod.namespace": "payments"}},
	})
	if err != nil {
		t.Fatalf("ListContainers: %v", err)
	}
	if len(list.Containers) != 1 || list.Containers[0].Id != pod.ContainerID {
		t.Fatalf("ListContainers: %v, want container %s alone", list.Containers, pod.ContainerID)
	}
	labels := list.Containers[0].Labels
	for k, want := range map[string]string{
		"io.kubernetes.pod.name": spec.Name, "io.kubernetes.pod.namespace": spec.Namespace,
		"io.kubernetes.pod.uid": spec.UID, "io.kubernetes.container.name": spec.Container,
	} {
		if labels[k] != want {
			t.Errorf("label %s = %q, want %q", k, labels[k], want)
		}
	}

	lines, err := ReadProcCgroup(pod.PID)
	if err != nil {
		t.Fatalf("reading the pod's process's cgroups: %v", err)
	}
	want := pod.CgroupParent + "/" + pod.ContainerID
	var report []string
	for _, l := range lines {
		report = append(report, fmt.Sprintf("%d:%s:%s", l.ID, l.Controllers, l.Path))
		if l.Path != want {
			t.Errorf("%d:%s:%s, want path %s", l.ID, l.Controllers, l.Path, want)
		}
	}
	t.Logf("/proc/%d/cgroup of the pod's container:\n%s", pod.PID, strings.Join(report, "\n"))

	pause, err := ReadProcCgroup(pod.SandboxPID)
	if err != nil {
		t.Fatalf("reading the pause process's cgroups: %v", err)
	}
	for _, l := range pause {
		if want := pod.CgroupParent + "/" + pod.SandboxID; l.Path != want {
			t.Errorf("pause: %d:%s:%s, want path %s", l.ID, l.Controllers, l.Path, want)
		}
	}
}
