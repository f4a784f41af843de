package cri

import (
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Labels and metadata are the pod author's: any bytes come back exactly
// as given, never trimmed or escaped here, and never panic. A missing
// label falls back to the sandbox and the metadata, and only the infra
// container ("POD") is dropped.
func FuzzNames(f *testing.F) {
	f.Add("checkout-7d9f", "payments", podUID, "api", "sidecar", "pod-from-sandbox")
	f.Add("", "", "", "", "", "")
	f.Add("x", "y", "z", "POD", "", "")
	f.Add("a\x1b[31m", "\x00", "\xff\xfe", "", "POD", "b\nc")
	f.Fuzz(func(t *testing.T, pod, namespace, uid, container, metaName, sandboxPod string) {
		labels := map[string]string{}
		for k, v := range map[string]string{labelPodName: pod, labelPodNamespace: namespace, labelPodUID: uid, labelContainerName: container} {
			if v != "" {
				labels[k] = v
			}
		}
		sb := &runtimeapi.PodSandbox{Id: "s", Metadata: &runtimeapi.PodSandboxMetadata{Name: sandboxPod}}
		pn := sandboxNames(sb)
		if pn.Pod != sandboxPod || pn.Container != "" {
			t.Fatalf("sandboxNames = %+v; want pod %q", pn, sandboxPod)
		}
		got, ok := containerNames(&runtimeapi.Container{Id: "c", Labels: labels, Metadata: &runtimeapi.ContainerMetadata{Name: metaName}}, pn)
		want := Names{Pod: or(pod, sandboxPod), PodNamespace: namespace, PodUID: uid, Container: or(container, metaName)}
		if got != want || ok != (want.Container != "POD") {
			t.Fatalf("containerNames = %+v, %v; want %+v", got, ok, want)
		}
	})
}
