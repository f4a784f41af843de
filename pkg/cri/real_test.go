package cri

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/containertest"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A real runtime's CRI (containerd from the distribution, started and
// driven as a kubelet would: containertest), with two pods: every pod
// sandbox and every kubelet-labelled container it lists is named by the
// cache exactly as the runtime reports it (asked independently, with a
// client of our own).
func TestRealCRI(t *testing.T) {
	rt := containertest.Containerd(t)
	for i, name := range []string{"checkout-7d9f", "cart-5c4b"} {
		rt.Pod(t, containertest.PodSpec{
			Name: name, Namespace: "payments", UID: fmt.Sprintf("6f1d2c3b-8a9e-4f70-b1c2-d3e4f5a6b7c%d", i),
			Container: "api", Args: []string{"sleep", "600"},
		})
	}
	checkRealCRI(t, rt.Endpoint)
}

// checkRealCRI checks the cache against the CRI at endpoint, which must
// hold at least one ready pod sandbox and one kubelet-labelled container.
func checkRealCRI(t *testing.T, endpoint string) {
	sandboxes, containers := listDirectly(t, endpoint)
	c, log := startCache(t, Options{Endpoint: endpoint})
	waitFor(t, "the first listing", func() bool { return c.Stats().Listings >= 1 })

	pods := 0
	for _, sb := range sandboxes {
		m := sb.GetMetadata()
		want := Names{Pod: m.GetName(), PodNamespace: m.GetNamespace(), PodUID: m.GetUid()}
		if got, ok := c.Lookup(sb.GetId()); got != want || !ok {
			t.Errorf("Lookup(sandbox %s) = %+v, %v; want %+v", sb.GetId(), got, ok, want)
		}
		if sb.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY {
			pods++
			if got, ok := c.PodByUID(want.PodUID); got != want || !ok {
				t.Errorf("PodByUID(%s) = %+v, %v; want %+v", want.PodUID, got, ok, want)
			}
		}
	}
	named := 0
	for _, ctr := range containers {
		l := ctr.GetLabels()
		if l[labelPodName] == "" || l[labelContainerName] == "" {
			continue
		}
		named++
		want := Names{Pod: l[labelPodName], PodNamespace: l[labelPodNamespace], PodUID: l[labelPodUID], Container: l[labelContainerName]}
		if got, ok := c.Lookup(ctr.GetId()); got != want || !ok {
			t.Errorf("Lookup(container %s) = %+v, %v; want %+v", ctr.GetId(), got, ok, want)
		}
	}
	if pods == 0 || named == 0 {
		t.Fatalf("%s lists %d ready pod sandboxes and %d kubelet-labelled containers: want a pod running", endpoint, pods, named)
	}
	if s := c.Stats(); s.State != StateUp || s.Failures != 0 || log.String() != "" {
		t.Errorf("Stats = %+v, log %q; want up, no failure, nothing logged", s, log.String())
	}
	t.Logf("%s: %d ready pods, %d named containers", endpoint, pods, named)
}

// listDirectly asks the CRI with a plain client, not the cache's.
func listDirectly(t *testing.T, endpoint string) ([]*runtimeapi.PodSandbox, []*runtimeapi.Container) {
	t.Helper()
	path, err := socketPath(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sb, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatalf("listing pod sandboxes of %s: %v", endpoint, err)
	}
	ctrs, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		t.Fatalf("listing containers of %s: %v", endpoint, err)
	}
	return sb.GetItems(), ctrs.GetContainers()
}
