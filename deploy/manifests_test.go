package deploy

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const manifests = "kubernetes"

// The port the spec gives the agent: outside Prometheus's crowded
// 9100-9999 and outside the ephemeral range.
const agentPort = 7470

// manifest is one file of deploy/kubernetes and the API type it must
// decode into.
type manifest struct {
	file, apiVersion, kind string
	into                   func() any
}

var coreManifests = []manifest{
	{"namespace.yaml", "v1", "Namespace", func() any { return &corev1.Namespace{} }},
	{"serviceaccount.yaml", "v1", "ServiceAccount", func() any { return &corev1.ServiceAccount{} }},
	{"daemonset.yaml", "apps/v1", "DaemonSet", func() any { return &appsv1.DaemonSet{} }},
	{"service.yaml", "v1", "Service", func() any { return &corev1.Service{} }},
	{"podmonitor.yaml", "monitoring.coreos.com/v1", "PodMonitor", func() any { return &monitoringv1.PodMonitor{} }},
	{"prometheusrule.yaml", "monitoring.coreos.com/v1", "PrometheusRule", func() any { return &monitoringv1.PrometheusRule{} }},
}

func TestManifestsDecodeStrictly(t *testing.T) {
	for _, m := range coreManifests {
		t.Run(m.file, func(t *testing.T) {
			var meta metav1.TypeMeta
			data, err := os.ReadFile(filepath.Join(manifests, m.file))
			if err != nil {
				t.Fatal(err)
			}
			if err := decodeStrict(data, m.into()); err != nil {
				t.Fatalf("%s: %v", m.file, err)
			}
			// The TypeMeta again, alone and loosely: which type the
			// object claims to be.
			if err := yamlTypeMeta(data, &meta); err != nil {
				t.Fatal(err)
			}
			if meta.APIVersion != m.apiVersion || meta.Kind != m.kind {
				t.Errorf("%s is %s %s, want %s %s", m.file, meta.APIVersion, meta.Kind, m.apiVersion, m.kind)
			}
		})
	}
}

// A misspelt field fails the decoding: the strict check is real.
func TestManifestStrictnessRejectsMisspelling(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(manifests, "daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ good, bad string }{
		{"readOnlyRootFilesystem: true", "readOnlyRootFilesytem: true"},
		// A wrong case is unknown too, as to the API server.
		{"hostPID: true", "hostPid: true"},
		{"mountPath: /sys/kernel/tracing", "mountpath: /sys/kernel/tracing"},
	} {
		bad := strings.Replace(string(data), c.good, c.bad, 1)
		if bad == string(data) {
			t.Fatalf("daemonset.yaml has no %q to misspell", c.good)
		}
		if err := decodeStrict([]byte(bad), &appsv1.DaemonSet{}); err == nil {
			t.Errorf("%q decoded without error", c.bad)
		}
	}
	// A duplicated key too (YAML allows the parser to keep either).
	dup := strings.Replace(string(data), "hostPID: true", "hostPID: true\n      hostPID: false", 1)
	if err := decodeStrict([]byte(dup), &appsv1.DaemonSet{}); err == nil {
		t.Error("a duplicated hostPID decoded without error")
	}
	// And the PodMonitor, through prometheus-operator's types.
	pm, err := os.ReadFile(filepath.Join(manifests, "podmonitor.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(pm), "targetLabel: node", "targetLabels: node", 1)
	if err := decodeStrict([]byte(bad), &monitoringv1.PodMonitor{}); err == nil {
		t.Error("targetLabels decoded without error")
	}
}

func daemonSet(t *testing.T) (*appsv1.DaemonSet, *corev1.Container) {
	t.Helper()
	var ds appsv1.DaemonSet
	mustDecode(t, filepath.Join(manifests, "daemonset.yaml"), &ds)
	if n := len(ds.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("%d containers, want 1", n)
	}
	return &ds, &ds.Spec.Template.Spec.Containers[0]
}

func TestDaemonSetPrivileges(t *testing.T) {
	ds, c := daemonSet(t)
	pod := ds.Spec.Template.Spec
	if !pod.HostPID {
		t.Error("hostPID is false: the programs report host pids, /proc must be the host's")
	}
	if pod.HostNetwork {
		t.Error("hostNetwork is true: the port would be open on the node's addresses")
	}
	if pod.HostIPC {
		t.Error("hostIPC is true")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the pod mounts a service account token: the agent uses no API")
	}
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("no container securityContext with capabilities")
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("drop = %v, want [ALL]", sc.Capabilities.Drop)
	}
	want := []corev1.Capability{"BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE", "SYS_RESOURCE"}
	if !slices.Equal(sc.Capabilities.Add, want) {
		t.Errorf("add = %v, want %v", sc.Capabilities.Add, want)
	}
	if sc.Privileged == nil || *sc.Privileged {
		t.Error("privileged is not false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	// Added capabilities are effective only for root.
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Error("runAsUser is not 0")
	}
	psc := pod.SecurityContext
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeUnconfined {
		t.Error("the pod's seccomp profile is not Unconfined")
	}
	if psc == nil || psc.AppArmorProfile == nil || psc.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined {
		t.Error("the pod's AppArmor profile is not Unconfined")
	}
	var ns corev1.Namespace
	mustDecode(t, filepath.Join(manifests, "namespace.yaml"), &ns)
	if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "privileged" {
		t.Errorf("namespace enforces %q, want privileged", got)
	}
	if ns.Name != ds.Namespace {
		t.Errorf("the DaemonSet is in %q, the namespace is %q", ds.Namespace, ns.Name)
	}
}

func TestDaemonSetScheduling(t *testing.T) {
	ds, c := daemonSet(t)
	pod := ds.Spec.Template.Spec
	if len(pod.Tolerations) != 1 || pod.Tolerations[0].Operator != corev1.TolerationOpExists || pod.Tolerations[0].Key != "" {
		t.Errorf("tolerations = %+v, want one {operator: Exists}", pod.Tolerations)
	}
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName = %q", pod.PriorityClassName)
	}
	if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds != 30 {
		t.Error("terminationGracePeriodSeconds is not 30")
	}
	u := ds.Spec.UpdateStrategy
	if u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil ||
		u.RollingUpdate.MaxUnavailable == nil || *u.RollingUpdate.MaxUnavailable != intstr.FromString("10%") {
		t.Errorf("updateStrategy = %+v, want RollingUpdate, maxUnavailable 10%%", u)
	}
	r := c.Resources
	for name, want := range map[corev1.ResourceName]string{corev1.ResourceCPU: "50m", corev1.ResourceMemory: "64Mi"} {
		if q, ok := r.Requests[name]; !ok || q.Cmp(resource.MustParse(want)) != 0 {
			t.Errorf("requests %s = %v, want %s", name, r.Requests[name], want)
		}
	}
	if q, ok := r.Limits[corev1.ResourceMemory]; !ok || q.Cmp(resource.MustParse("512Mi")) != 0 {
		t.Errorf("limits memory = %v, want 512Mi", r.Limits[corev1.ResourceMemory])
	}
	// CFS throttling would stall the ring buffer's reader.
	if _, ok := r.Limits[corev1.ResourceCPU]; ok {
		t.Error("a CPU limit is set")
	}
	var node bool
	for _, e := range c.Env {
		if e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
			node = true
		}
	}
	if !node {
		t.Error("no NODE_NAME from spec.nodeName")
	}
	wantArgs := []string{"agent", "--listen=:7470", "--cgroup-root=/host/sys/fs/cgroup", "--log-format=json"}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("args = %q, want %q", c.Args, wantArgs)
	}
}

// The mounts the agent needs and no more, each backed by a volume.
func TestDaemonSetMounts(t *testing.T) {
	ds, c := daemonSet(t)
	volumes := map[string]corev1.Volume{}
	for _, v := range ds.Spec.Template.Spec.Volumes {
		volumes[v.Name] = v
	}
	type mount struct {
		hostPath string
		readOnly bool
	}
	got := map[string]mount{}
	for _, m := range c.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok {
			t.Errorf("mount %s (%s) has no volume", m.Name, m.MountPath)
			continue
		}
		if v.HostPath == nil {
			t.Errorf("volume %s is not a hostPath", m.Name)
			continue
		}
		got[m.MountPath] = mount{v.HostPath.Path, m.ReadOnly}
		delete(volumes, m.Name)
	}
	for name := range volumes {
		t.Errorf("volume %s is mounted nowhere", name)
	}
	want := map[string]mount{
		"/sys/kernel/tracing": {"/sys/kernel/tracing", true},
		"/host/sys/fs/cgroup": {"/sys/fs/cgroup", true},
		"/run/containerd":     {"/run/containerd", true},
	}
	if len(got) != len(want) {
		t.Errorf("mounts %v, want %v", got, want)
	}
	for path, w := range want {
		if got[path] != w {
			t.Errorf("mount at %s = %+v, want %+v", path, got[path], w)
		}
	}
	// The agent's flag and the mount agree.
	if !slices.Contains(c.Args, "--cgroup-root=/host/sys/fs/cgroup") {
		t.Error("--cgroup-root is not the host cgroup mount")
	}
}

// One port, 7470, everywhere it is named: the listen flag, the container,
// the probes, the Service, the scrape annotation and the PodMonitor.
func TestAgentPortAgrees(t *testing.T) {
	ds, c := daemonSet(t)
	var listen string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--listen="); ok {
			listen = v
		}
	}
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatalf("--listen=%q: %v", listen, err)
	}
	if port != strconv.Itoa(agentPort) {
		t.Errorf("--listen port %s, want %d", port, agentPort)
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "metrics" || c.Ports[0].ContainerPort != agentPort {
		t.Fatalf("container ports %+v, want metrics %d", c.Ports, agentPort)
	}
	resolve := func(p intstr.IntOrString) int32 {
		if p.Type == intstr.String {
			for _, cp := range c.Ports {
				if cp.Name == p.StrVal {
					return cp.ContainerPort
				}
			}
			return -1
		}
		return p.IntVal
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("no %s httpGet probe", name)
			continue
		}
		if got := resolve(p.HTTPGet.Port); got != agentPort {
			t.Errorf("%s probe port %d, want %d", name, got, agentPort)
		}
	}
	if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness path %q", c.ReadinessProbe.HTTPGet.Path)
	}
	if c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("liveness path %q", c.LivenessProbe.HTTPGet.Path)
	}
	// Loading BPF takes seconds: a liveness probe must not kill the agent
	// while it loads.
	if c.LivenessProbe != nil && c.LivenessProbe.InitialDelaySeconds < 30 {
		t.Errorf("liveness initialDelaySeconds %d, want 30 or more", c.LivenessProbe.InitialDelaySeconds)
	}
	a := ds.Spec.Template.Annotations
	if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(agentPort) || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations %v", a)
	}

	var svc corev1.Service
	mustDecode(t, filepath.Join(manifests, "service.yaml"), &svc)
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service clusterIP %q, want None (headless)", svc.Spec.ClusterIP)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].Port != agentPort || resolve(svc.Spec.Ports[0].TargetPort) != agentPort {
		t.Errorf("Service ports %+v", svc.Spec.Ports)
	}
	if !selects(svc.Spec.Selector, ds.Spec.Template.Labels) {
		t.Errorf("the Service's selector %v misses the pods %v", svc.Spec.Selector, ds.Spec.Template.Labels)
	}

	var pm monitoringv1.PodMonitor
	mustDecode(t, filepath.Join(manifests, "podmonitor.yaml"), &pm)
	if !selects(pm.Spec.Selector.MatchLabels, ds.Spec.Template.Labels) {
		t.Errorf("the PodMonitor's selector %v misses the pods %v", pm.Spec.Selector.MatchLabels, ds.Spec.Template.Labels)
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("%d pod metrics endpoints, want 1", len(pm.Spec.PodMetricsEndpoints))
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	if ep.Port == nil || *ep.Port != "metrics" {
		t.Errorf("PodMonitor port %v, want metrics", ep.Port)
	}
	var node bool
	for _, r := range ep.RelabelConfigs {
		if slices.Equal(r.SourceLabels, []monitoringv1.LabelName{"__meta_kubernetes_pod_node_name"}) && r.TargetLabel == "node" &&
			(r.Action == "" || strings.EqualFold(r.Action, "replace")) {
			node = true
		}
	}
	if !node {
		t.Error("the PodMonitor does not relabel __meta_kubernetes_pod_node_name into node")
	}
}

// selects reports whether a selector's labels are all on the pods.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// kustomization is the part of kustomize's Kustomization this directory
// uses (kustomize's API module is not a dependency); strictly decoded all
// the same.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
}

func TestKustomizationListsEveryFile(t *testing.T) {
	var k kustomization
	mustDecode(t, filepath.Join(manifests, "kustomization.yaml"), &k)
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization is %s %s", k.APIVersion, k.Kind)
	}
	files, err := filepath.Glob(filepath.Join(manifests, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			want = append(want, b)
		}
	}
	got := slices.Clone(k.Resources)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("kustomization lists %v, the directory has %v", got, want)
	}
	// Every file is one the tests decode.
	var decoded []string
	for _, m := range coreManifests {
		decoded = append(decoded, m.file)
	}
	sort.Strings(decoded)
	if !slices.Equal(decoded, want) {
		t.Errorf("tests decode %v, the directory has %v", decoded, want)
	}
}
