package containertest

import (
	"reflect"
	"strings"
	"testing"
)

// A hybrid host's lines: v1 controllers, a named v1 hierarchy and the v2 line.
const procCgroupHybrid = `9:name=systemd:/
4:memory:/user.slice/session-3.scope
1:cpu,cpuacct:/kubepods/besteffort/pod1/abc
0::/system.slice/containerd.service/kubepods-pod1.slice:cri-containerd:abc
`

func TestParseProcCgroup(t *testing.T) {
	got, err := ParseProcCgroup(strings.NewReader(procCgroupHybrid))
	if err != nil {
		t.Fatal(err)
	}
	want := []ProcCgroup{
		{9, "name=systemd", "/"},
		{4, "memory", "/user.slice/session-3.scope"},
		{1, "cpu,cpuacct", "/kubepods/besteffort/pod1/abc"},
		{0, "", "/system.slice/containerd.service/kubepods-pod1.slice:cri-containerd:abc"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{"0:/", "x::/", "-1::/"} {
		if _, err := ParseProcCgroup(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

const mountinfoHybrid = `22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime shared:5 master:1 - cgroup cgroup rw,name=systemd
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
41 1 0:37 /kubepods /mnt/with\040space rw - cgroup2 cgroup2 rw
`

func TestParseCgroupMounts(t *testing.T) {
	got, err := ParseCgroupMounts(strings.NewReader(mountinfoHybrid))
	if err != nil {
		t.Fatal(err)
	}
	want := []CgroupMount{
		{Dir: "/sys/fs/cgroup/cpu", Root: "/", Version: 1, Options: "rw,cpu"},
		{Dir: "/sys/fs/cgroup/systemd", Root: "/", Version: 1, Options: "rw,name=systemd"},
		{Dir: "/sys/fs/cgroup/unified", Root: "/", Version: 2, Options: "rw"},
		{Dir: "/mnt/with space", Root: "/kubepods", Version: 2, Options: "rw"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if _, err := ParseCgroupMounts(strings.NewReader("1 2 3 4 5 6 cgroup\n")); err == nil {
		t.Error("a line without its separator: no error")
	}
}

func FuzzParseProcCgroup(f *testing.F) {
	f.Add(procCgroupHybrid)
	f.Add("0::/\n")
	f.Add("1:a:b:c:d")
	f.Fuzz(func(t *testing.T, in string) {
		lines, err := ParseProcCgroup(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, l := range lines {
			if l.ID < 0 || strings.Contains(l.Controllers, ":") {
				t.Fatalf("%q gave %+v", in, l)
			}
		}
	})
}

func FuzzParseCgroupMounts(f *testing.F) {
	f.Add(mountinfoHybrid)
	f.Add("1 2 3 4 5 6 - cgroup2 x\n")
	f.Add(`1 2 3 \1 \0401 6 - cgroup x y`)
	f.Fuzz(func(t *testing.T, in string) {
		mounts, err := ParseCgroupMounts(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, m := range mounts {
			if m.Version != 1 && m.Version != 2 {
				t.Fatalf("%q gave %+v", in, m)
			}
		}
	})
}
