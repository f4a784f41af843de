package cgroup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// systemdV1 is the mount point of a whole v1 name=systemd hierarchy:
// this host's, or, where there is none (the VM guests are pure v2), one
// the test mounts for itself. "" and a reason when neither is possible.
func systemdV1(t *testing.T) (string, string) {
	t.Helper()
	text, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(text), "\n") {
		before, after, ok := strings.Cut(line, " - ")
		fields, super := strings.Fields(before), strings.Fields(after)
		if ok && len(fields) >= 5 && len(super) >= 3 && super[0] == "cgroup" && fields[3] == "/" &&
			strings.Contains(","+super[2]+",", ",name=systemd,") {
			return fields[4], ""
		}
	}
	dir := t.TempDir()
	if err := unix.Mount("cgroup", dir, "cgroup", 0, "none,name=systemd"); err != nil {
		return "", "no v1 name=systemd hierarchy, and this kernel mounts none: " + err.Error()
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, 0) })
	return dir, ""
}

// A process in the v2 root, placed by its runtime in a v1 name=systemd
// cgroup with Docker's layout (a hybrid host): the v2 id says nothing,
// so Lookup reads /proc/PID/cgroup while the process lives, and caches
// it for that Process only: once it has exited, another process with
// the same pid (another parent) is not served the cached entry.
func TestLookupFallbackV1(t *testing.T) {
	requireRoot(t)
	m := v2Mount(t)
	v1, reason := systemdV1(t)
	if v1 == "" {
		t.Skip(reason)
	}
	prefix := testPrefix(t, v1)
	rel := "/system.slice/docker-" + ctr + ".scope"
	if err := os.MkdirAll(filepath.Join(v1, prefix, rel), 0o755); err != nil {
		t.Fatal(err)
	}
	proc := startChild(t)
	moveInto(t, m.point, proc.PID)
	moveInto(t, filepath.Join(v1, prefix, rel), proc.PID)
	rootID, err := cgroupID(m.point)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewResolver(Options{})
	if err != nil {
		t.Fatal(err)
	}

	want := Info{Path: "/" + prefix + rel, Layout: Layout{Runtime: "docker", ContainerID: ctr}}
	for i := range 2 {
		if got := r.Lookup(rootID, proc.Process); got != want {
			t.Fatalf("lookup %d: got %+v, want %+v", i, got, want)
		}
	}
	other := proc.Process
	other.ExeIno++
	if got := r.Lookup(rootID, other); got != (Info{}) {
		t.Errorf("same pid, another executable: got %+v, want nothing", got)
	}
	proc.stop()
	reused := proc.Process
	reused.PPID++
	if got := r.Lookup(rootID, reused); got != (Info{}) {
		t.Errorf("same pid after exit, another parent: got %+v, want nothing", got)
	}
	if s := r.Stats(); s.ProcReads != 3 || s.FromProc != 2 || s.Unresolved != 2 || s.Resolved != 0 {
		t.Errorf("stats %+v, want 3 /proc reads, 2 answered from /proc, 2 unresolved", s)
	}
}

// fakeProc is a /proc holding one process, 42, whose cgroup file says
// text and whose executable is a file of the test's; it returns the
// directory and the executable's inode.
func fakeProc(t testing.TB, mountinfo, text string) (string, uint64) {
	t.Helper()
	dir := t.TempDir()
	exe := filepath.Join(dir, "exe-file")
	for name, body := range map[string]string{"self/mountinfo": mountinfo, "42/cgroup": text, "exe-file": ""} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(exe, filepath.Join(dir, "42/exe")); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(exe, &st); err != nil {
		t.Fatal(err)
	}
	return dir, st.Ino
}

// With no v2 hierarchy (a cgroup v1 host) every id goes through /proc:
// one read per Process, the cache bounded by MaxProcesses.
func TestLookupWithoutV2(t *testing.T) {
	v1Only := "31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
	proc, ino := fakeProc(t, v1Only, "4:memory:/docker/"+ctr+"\n1:name=systemd:/system.slice/docker-"+ctr+".scope\n")
	r, err := NewResolver(Options{Proc: proc, MaxProcesses: 2})
	if err != nil {
		t.Fatal(err)
	}
	p := Process{PID: 42, PPID: 1, ExeIno: ino}
	want := Info{Path: "/system.slice/docker-" + ctr + ".scope", Layout: Layout{Runtime: "docker", ContainerID: ctr}}
	for _, id := range []uint64{1, 8123, 0} {
		if got := r.Lookup(id, p); got != want {
			t.Errorf("Lookup(%d): got %+v, want %+v", id, got, want)
		}
	}
	// The pid now belongs to a process under another parent.
	if err := os.WriteFile(filepath.Join(proc, "42/cgroup"), []byte("0::/system.slice/cron.service\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := r.Lookup(1, p); got != want {
		t.Errorf("the same Process again: got %+v, want the cached %+v", got, want)
	}
	reused := Process{PID: 42, PPID: 7, ExeIno: ino}
	if got, want := r.Lookup(1, reused), (Info{Path: "/system.slice/cron.service", Layout: Layout{Unit: "cron.service"}}); got != want {
		t.Errorf("pid reused: got %+v, want %+v", got, want)
	}
	if got := r.Lookup(1, Process{PID: 43}); got != (Info{}) {
		t.Errorf("a process that is gone: got %+v", got)
	}
	s := r.Stats()
	if s.Walks != 0 || s.ProcReads != 3 || s.FromProc != 5 || s.Unresolved != 1 || s.Evictions != 1 {
		t.Errorf("stats %+v, want 0 walks, 3 reads, 5 from /proc, 1 unresolved, 1 eviction", s)
	}
}

func TestNewResolverRejectsNonCgroupRoot(t *testing.T) {
	if _, err := NewResolver(Options{Root: t.TempDir()}); err == nil {
		t.Error("a plain directory was taken for a cgroup v2 mount")
	}
}
