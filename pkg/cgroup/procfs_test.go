package cgroup

import (
	"strings"
	"testing"
)

// This host's kind: v1 controllers, a v1 name=systemd hierarchy and an
// empty unified tree beside them.
const hybridMountinfo = `22 1 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

var mountinfoCases = []struct {
	name, text string
	want       mount
	ok         bool
}{
	{"hybrid", hybridMountinfo, mount{point: "/sys/fs/cgroup/unified", root: "/"}, true},
	{"pure v2", "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
		mount{point: "/sys/fs/cgroup", root: "/"}, true},
	{"v1 only", "31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n", mount{}, false},
	{"subtree first, whole tree preferred",
		"50 1 0:30 /kubepods /host/cg rw - cgroup2 cgroup2 rw\n51 1 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
		mount{point: "/sys/fs/cgroup", root: "/"}, true},
	{"subtree only", "50 1 0:30 /kubepods /host/cg rw - cgroup2 cgroup2 rw\n", mount{point: "/host/cg", root: "/kubepods"}, true},
	{"escaped point", `50 1 0:30 / /mnt/my\040cgroup\134x rw shared:1 master:2 - cgroup2 none rw` + "\n",
		mount{point: `/mnt/my cgroup\x`, root: "/"}, true},
	{"bad escape kept", `50 1 0:30 / /mnt/a\09 rw - cgroup2 none rw`, mount{point: `/mnt/a\09`, root: "/"}, true},
	{"truncated line", "50 1 0:30 / /mnt - cgroup2\n", mount{}, false},
	{"empty", "", mount{}, false},
}

func TestParseMountinfo(t *testing.T) {
	for _, c := range mountinfoCases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := parseMountinfo(c.text)
			if got != c.want || ok != c.ok {
				t.Errorf("got %+v %v, want %+v %v", got, ok, c.want, c.ok)
			}
		})
	}
}

var procCgroupCases = []struct {
	name, text, want string
}{
	{"pure v2", "0::/system.slice/cron.service\n", "/system.slice/cron.service"},
	{"hybrid, process in v2", "9:name=systemd:/system.slice/x.service\n1:cpu:/\n0::/kubepods/pod" + uid + "/" + ctr + "\n",
		"/kubepods/pod" + uid + "/" + ctr},
	{"hybrid, v2 root: name=systemd", "9:name=systemd:/system.slice/docker-" + ctr + ".scope\n4:memory:/docker/" + ctr + "\n1:cpu:/\n0::/\n",
		"/system.slice/docker-" + ctr + ".scope"},
	{"v1 controllers only", "4:memory:/process_api/90d1856b\n3:cpuset:/\n1:cpu:/other\n", "/process_api/90d1856b"},
	{"everything at the root", "9:name=systemd:/\n1:cpu:/\n0::/\n", ""},
	{"colon form keeps its colons", "0::/system.slice/containerd.service/kubepods-pod" + uidU + ".slice:cri-containerd:" + ctr + "\n",
		"/system.slice/containerd.service/kubepods-pod" + uidU + ".slice:cri-containerd:" + ctr},
	{"garbage", "no colons here\n::\n0:\n", ""},
	{"empty", "", ""},
}

func TestPathFromProcCgroup(t *testing.T) {
	for _, c := range procCgroupCases {
		t.Run(c.name, func(t *testing.T) {
			if got := pathFromProcCgroup(c.text); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func FuzzParseMountinfo(f *testing.F) {
	for _, c := range mountinfoCases {
		f.Add(c.text)
	}
	f.Fuzz(func(t *testing.T, text string) {
		m, ok := parseMountinfo(text)
		if !ok && m != (mount{}) {
			t.Fatalf("no mount, yet %+v", m)
		}
	})
}

func FuzzPathFromProcCgroup(f *testing.F) {
	for _, c := range procCgroupCases {
		f.Add(c.text)
	}
	f.Fuzz(func(t *testing.T, text string) {
		if p := pathFromProcCgroup(text); p != "" && !strings.Contains(text, p) {
			t.Fatalf("path %q is not in the text", p)
		}
	})
}
