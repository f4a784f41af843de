package cgroup

import (
	"github.com/twtrace/twtrace/internal/mountinfo"
	"strings"
)

// mount is where a cgroup v2 hierarchy is mounted and which of its
// cgroups is the mount's root (not "/" inside a cgroup namespace or for
// a bind mount of a subtree).
type mount struct {
	point, root string
}

// parseMountinfo finds the cgroup v2 mount in /proc/PID/mountinfo's text
// (proc(5): "ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL…] - FSTYPE
// SOURCE SUPEROPTIONS"), preferring one that shows the whole hierarchy.
func parseMountinfo(text string) (mount, bool) {
	var found mount
	ok := false
	for _, line := range strings.Split(text, "\n") {
		fields := strings.Fields(line)
		sep := -1
		for i, f := range fields {
			if f == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) || fields[sep+1] != "cgroup2" {
			continue
		}
		m := mount{point: mountinfo.Unescape(fields[4]), root: mountinfo.Unescape(fields[3])}
		if m.root == "/" {
			return m, true
		}
		if !ok {
			found, ok = m, true
		}
	}
	return found, ok
}

// pathFromProcCgroup picks, from /proc/PID/cgroup's text
// ("HIERARCHY:CONTROLLERS:PATH" lines), the path that says most about
// the process: the v2 line ("0::") unless it is the root, else the v1
// name=systemd hierarchy (where systemd, Docker and the kubelet's
// systemd driver place processes), else the first controller's path
// that is not the root. "" when every line says "/".
func pathFromProcCgroup(text string) string {
	var v2, systemd, controller string
	for _, line := range strings.Split(text, "\n") {
		hier, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		controllers, path, ok := strings.Cut(rest, ":")
		if !ok || path == "/" || path == "" {
			continue
		}
		switch {
		case hier == "0" && controllers == "":
			v2 = path
		case controllers == "name=systemd":
			systemd = path
		case controller == "":
			controller = path
		}
	}
	switch {
	case v2 != "":
		return v2
	case systemd != "":
		return systemd
	}
	return controller
}
