// Package cgroup names the owner of a cgroup: it maps the cgroup v2 id
// the kernel stamps on an event to the cgroup's path, and reads from that
// path what the container runtimes, the kubelet and systemd wrote into it
// (container id, pod UID, systemd unit). Names come from the path alone;
// what a path does not say stays "" (Kubernetes names are the CRI's job).
package cgroup

import "strings"

// Layout is what a cgroup path says about its owner; "" where it says nothing (never a guess).
type Layout struct {
	Runtime     string // "containerd", "cri-o", "docker", "podman", or ""
	ContainerID string // 64 hex (lowercase) as the runtime names it, or ""
	PodUID      string // with dashes (the systemd driver's underscores turned back), or ""
	Unit        string // innermost systemd unit (.service/.scope) when the cgroup is not a container's, else ""
}

// scopePrefixes are the systemd scope names the runtimes give a
// container: "<prefix><id>.scope". The conmon scopes ("crio-conmon-",
// "libpod-conmon-") hold the monitor, not the container; their rest is
// not 64 hex, so they fall out without a rule of their own.
var scopePrefixes = []struct{ prefix, runtime string }{
	{"cri-containerd-", "containerd"},
	{"crio-", "cri-o"},
	{"docker-", "docker"},
	{"libpod-", "podman"},
}

// colonRuntimes are the runtime names in containerd's systemd-driver
// form "<slice>:<prefix>:<id>", which it uses when it is not itself
// systemd's child (system.slice/containerd.service/…).
var colonRuntimes = map[string]string{
	"cri-containerd": "containerd",
	"crio":           "cri-o",
	"docker":         "docker",
}

// ParseLayout reads a cgroup path component by component, outermost
// first. Nesting (kind, k3d: a Kubernetes node that is itself a
// container) is why the order matters: a pod below a container starts a
// new owner, so a pod's container is never paired with the node's
// container id, and the innermost container wins.
func ParseLayout(path string) Layout {
	var l Layout
	var inKubepods, underDocker bool
	unit := ""
	for path != "" {
		var c string
		c, path, _ = strings.Cut(path, "/")
		if c == "" {
			continue
		}
		parentDocker := underDocker
		underDocker = c == "docker"
		if strings.Contains(c, "kubepods") {
			inKubepods = true
		}
		if uid, ok := podComponent(c, inKubepods); ok {
			l = Layout{PodUID: uid}
			unit = ""
			continue
		}
		if rt, id, uid, ok := containerComponent(c, parentDocker, l.PodUID != ""); ok {
			l.Runtime, l.ContainerID = rt, id
			if uid != "" {
				l.PodUID = uid
			}
			continue
		}
		if isUnit(c) {
			unit = c
		}
	}
	if l.ContainerID == "" {
		l.Unit = unit
	}
	return l
}

// containerComponent recognises one component naming a container: a
// runtime's scope, containerd's colon form (which also names the pod),
// or a bare id where the parent says whose it is (Docker's cgroupfs
// driver: docker/<id>; the kubelet's cgroupfs driver: pod<uid>/<id>,
// whose runtime the path does not name).
func containerComponent(c string, parentDocker, inPod bool) (runtime, id, podUID string, ok bool) {
	if slice, rest, found := strings.Cut(c, ":"); found {
		prefix, id, _ := strings.Cut(rest, ":")
		rt, known := colonRuntimes[prefix]
		if !known || !isContainerID(id) {
			return "", "", "", false
		}
		if uid, isPod := podComponent(slice, true); isPod {
			podUID = uid
		}
		return rt, id, podUID, true
	}
	for _, s := range scopePrefixes {
		rest, found := strings.CutPrefix(c, s.prefix)
		if !found {
			continue
		}
		id, scope := strings.CutSuffix(rest, ".scope")
		// Podman's cgroupfs manager names the directory libpod-<id>.
		if (scope || s.runtime == "podman") && isContainerID(id) {
			return s.runtime, id, "", true
		}
		return "", "", "", false
	}
	if isContainerID(c) {
		switch {
		case parentDocker:
			return "docker", c, "", true
		case inPod:
			return "", c, "", true
		}
	}
	return "", "", "", false
}

// podComponent recognises the kubelet's pod cgroup: "pod<uid>" under
// the cgroupfs driver, "…-pod<uid_with_underscores>.slice" under the
// systemd driver (kubepods-burstable-pod…, kubepods-pod… for
// Guaranteed, kubelet-kubepods-… in kind). Only inside a kubepods tree:
// elsewhere "pod…" is somebody else's name.
func podComponent(c string, inKubepods bool) (string, bool) {
	if !inKubepods {
		return "", false
	}
	if name, ok := strings.CutSuffix(c, ".slice"); ok {
		i := strings.LastIndex(name, "-pod")
		if i < 0 || !strings.Contains(name[:i], "kubepods") {
			return "", false
		}
		uid := strings.ReplaceAll(name[i+len("-pod"):], "_", "-")
		return uid, isPodUID(uid)
	}
	uid, ok := strings.CutPrefix(c, "pod")
	return uid, ok && isPodUID(uid)
}

// isPodUID accepts the two forms a pod UID takes: a UUID (API pods) and
// 32 hex digits (static pods: the hash of their manifest).
func isPodUID(s string) bool {
	switch len(s) {
	case 32:
		return isLowerHex(s)
	case 36:
		for i := 0; i < len(s); i++ {
			if dash := i == 8 || i == 13 || i == 18 || i == 23; dash != (s[i] == '-') {
				return false
			}
		}
		return isLowerHex(strings.ReplaceAll(s, "-", ""))
	}
	return false
}

func isContainerID(s string) bool { return len(s) == 64 && isLowerHex(s) }

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// isUnit: systemd names a cgroup after the unit it holds; services and
// scopes hold processes (slices only group them).
func isUnit(c string) bool {
	for _, suffix := range []string{".service", ".scope"} {
		if name, ok := strings.CutSuffix(c, suffix); ok && name != "" {
			return true
		}
	}
	return false
}
