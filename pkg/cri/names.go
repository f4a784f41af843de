package cri

import runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

// Names are the Kubernetes names of a container (from the io.kubernetes.*
// labels the kubelet sets). They are returned raw: pod authors choose them,
// so escaping them is the views' job.
type Names struct{ Pod, PodNamespace, PodUID, Container string }

// The labels the kubelet puts on every sandbox and container it creates.
const (
	labelPodName       = "io.kubernetes.pod.name"
	labelPodNamespace  = "io.kubernetes.pod.namespace"
	labelPodUID        = "io.kubernetes.pod.uid"
	labelContainerName = "io.kubernetes.container.name"
)

// infraContainer is the container name dockershim and cri-dockerd give a
// pod's pause container; its id is the sandbox's, which the sandbox
// listing names already.
const infraContainer = "POD"

// sandboxNames names a pod from its sandbox: the metadata is the CRI's own
// record of the pod (the kubelet fills it from the pod object); the labels
// stand in where a runtime left it empty.
func sandboxNames(s *runtimeapi.PodSandbox) Names {
	n := Names{
		Pod:          s.GetLabels()[labelPodName],
		PodNamespace: s.GetLabels()[labelPodNamespace],
		PodUID:       s.GetLabels()[labelPodUID],
	}
	if m := s.GetMetadata(); m != nil {
		n.Pod = or(m.GetName(), n.Pod)
		n.PodNamespace = or(m.GetNamespace(), n.PodNamespace)
		n.PodUID = or(m.GetUid(), n.PodUID)
	}
	return n
}

// containerNames names a container from its labels, falling back to its
// sandbox's names (pod) and its metadata (container name), so a container
// created without the kubelet's labels still gets what the CRI knows.
// ok is false for an infra container.
func containerNames(c *runtimeapi.Container, pod Names) (Names, bool) {
	l := c.GetLabels()
	n := Names{
		Pod:          or(l[labelPodName], pod.Pod),
		PodNamespace: or(l[labelPodNamespace], pod.PodNamespace),
		PodUID:       or(l[labelPodUID], pod.PodUID),
		Container:    or(l[labelContainerName], c.GetMetadata().GetName()),
	}
	return n, n.Container != infraContainer
}

func or(s, fallback string) string {
	if s != "" {
		return s
	}
	return fallback
}
