package cgroup

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as the process the tests move between
// cgroups: started with childEnv set, it waits for its stdin to close.
// (A VM guest holds no sleep, only this binary and busybox.)
const childEnv = "TWTRACE_CGROUP_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child is a live process the test owns, and the Process the kernel
// would record for it.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	Process
}

func startChild(t *testing.T) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the child: %v", err)
	}
	c := &child{cmd: cmd, stdin: stdin}
	t.Cleanup(c.stop)
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid), &st); err != nil {
		t.Fatal(err)
	}
	c.Process = Process{PID: uint32(cmd.Process.Pid), PPID: uint32(os.Getpid()), ExeIno: st.Ino}
	return c
}

// stop ends the child and reaps it, so its cgroups can be removed.
func (c *child) stop() {
	if c.stdin != nil {
		c.stdin.Close()
		_ = c.cmd.Wait()
		c.stdin = nil
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and not root: moving processes between cgroups needs root")
		}
		t.Skip("needs root: moving processes between cgroups")
	}
}

// v2Mount is where this machine mounts cgroup v2 (beside v1 on a hybrid
// host, at /sys/fs/cgroup in the VM guests).
func v2Mount(t *testing.T) mount {
	t.Helper()
	text, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	m, ok := parseMountinfo(string(text))
	if !ok || m.root != "/" {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and no whole cgroup v2 hierarchy is mounted")
		}
		t.Skip("no whole cgroup v2 hierarchy is mounted")
	}
	return m
}

// testPrefix is a top-level cgroup name unique to this test run, so
// runs and other users of the hierarchy never collide; the tree under
// it is removed when the test ends.
func testPrefix(t *testing.T, mountPoint string) string {
	t.Helper()
	name := fmt.Sprintf("twtrace-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"))
	dir := filepath.Join(mountPoint, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("making the test's cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := removeCgroups(dir); err != nil {
			t.Errorf("removing the test's cgroups: %v", err)
		}
	})
	return name
}

// removeCgroups removes a cgroup tree, innermost first. A cgroup whose
// last process was just reaped can stay busy for a moment.
func removeCgroups(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeCgroups(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		err := unix.Rmdir(dir)
		if err == nil || !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return err
		}
	}
}

func moveInto(t *testing.T, dir string, pid uint32) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(int(pid))), 0); err != nil {
		t.Fatalf("moving %d into %s: %v", pid, dir, err)
	}
}

// procV2Path is the process's cgroup as the kernel reports it.
func procV2Path(t *testing.T, pid uint32) string {
	t.Helper()
	text, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(text), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	t.Fatalf("no v2 line in %q", text)
	return ""
}

// realCases are the layout cases a directory can carry: a clean path
// (no empty or dot components) of names mkdir accepts (no newline).
func realCases() (cases []struct {
	name, path string
	want       Layout
}) {
	for _, c := range layoutCases {
		if c.path != "" && c.path != "/" && path.Clean(c.path) == c.path &&
			!strings.Contains(c.path, "\n") && !strings.Contains(c.path, "/../") {
			cases = append(cases, c)
		}
	}
	return cases
}

// Each runtime's layout, made for real under the v2 mount: a process
// moved into the cgroup sits where the walk says (the kernel's own path
// in /proc/PID/cgroup), and Lookup of the cgroup's id gives the exact
// Path and Layout, one walk for all.
func TestLookupRealLayouts(t *testing.T) {
	requireRoot(t)
	m := v2Mount(t)
	prefix := testPrefix(t, m.point)
	cases := realCases()
	for _, c := range cases {
		if err := os.MkdirAll(filepath.Join(m.point, prefix, c.path), 0o755); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
	}
	r, err := NewResolver(Options{})
	if err != nil {
		t.Fatal(err)
	}
	proc := startChild(t)
	for _, c := range cases {
		dir := filepath.Join(m.point, prefix, c.path)
		moveInto(t, dir, proc.PID)
		id, err := cgroupID(dir)
		if err != nil {
			t.Fatal(err)
		}
		want := Info{Path: "/" + prefix + c.path, Layout: c.want}
		if got := procV2Path(t, proc.PID); got != want.Path {
			t.Errorf("%s: the kernel puts the process in %q, want %q", c.name, got, want.Path)
		}
		if got := r.Lookup(id, proc.Process); got != want {
			t.Errorf("%s: Lookup(%d)\n got %+v\nwant %+v", c.name, id, got, want)
		}
	}
	s := r.Stats()
	if s.Walks != 1 || s.Resolved != uint64(len(cases)) || s.Unresolved != 0 || s.ProcReads != 0 {
		t.Errorf("stats %+v, want 1 walk, %d resolved, nothing else", s, len(cases))
	}
	t.Logf("%d layouts resolved from %d cgroups in one walk", len(cases), s.Cgroups)
}

// A cgroup made after the walk resolves at once, without a walk: its id
// is its file handle (open_by_handle_at). A cgroup already removed cannot
// be opened: unresolved, walked for at most once a second, and a live
// process whose cgroup it was not would not be asked.
func TestLookupNewCgroup(t *testing.T) {
	requireRoot(t)
	m := v2Mount(t)
	prefix := testPrefix(t, m.point)
	r, err := NewResolver(Options{})
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	r.now = func() time.Time { return clock }

	rel := "/system.slice/docker-" + ctr + ".scope"
	dir := filepath.Join(m.point, prefix, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	id, err := cgroupID(dir)
	if err != nil {
		t.Fatal(err)
	}
	gone := Process{PID: 1<<22 - 3} // above any pid_max but the largest
	want := Info{Path: "/" + prefix + rel, Layout: Layout{Runtime: "docker", ContainerID: ctr}}
	if got := r.Lookup(id, gone); got != want {
		t.Errorf("a cgroup made after the walk: got %+v, want %+v", got, want)
	}
	removed := filepath.Join(m.point, prefix, "removed")
	if err := os.Mkdir(removed, 0o755); err != nil {
		t.Fatal(err)
	}
	rid, err := cgroupID(removed)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(removed); err != nil {
		t.Fatal(err)
	}
	if got := r.Lookup(rid, gone); got != (Info{}) {
		t.Errorf("a removed cgroup: got %+v, want nothing", got)
	}
	if s := r.Stats(); s.Walks != 1 || s.Resolved != 1 || s.Unresolved != 1 {
		t.Errorf("stats %+v, want 1 walk, 1 resolved, 1 unresolved", s)
	}
	clock = clock.Add(rewalkEvery)
	if got := r.Lookup(rid, gone); got != (Info{}) {
		t.Errorf("a removed cgroup, walked for: got %+v, want nothing", got)
	}
	if got := r.Lookup(id, gone); got != want {
		t.Errorf("after the walk: got %+v, want %+v", got, want)
	}
	if s := r.Stats(); s.Walks != 2 || s.Resolved != 2 || s.Unresolved != 2 {
		t.Errorf("stats %+v, want 2 walks, 2 resolved, 2 unresolved", s)
	}
}

// The id the kernel stamps is the kernfs id NameToHandleAt returns; on
// 64-bit kernels it is also the directory's inode number.
func TestIDIsInode(t *testing.T) {
	requireRoot(t)
	m := v2Mount(t)
	prefix := testPrefix(t, m.point)
	for _, dir := range []string{m.point, filepath.Join(m.point, prefix)} {
		id, err := cgroupID(dir)
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			t.Fatal(err)
		}
		if strconv.IntSize == 64 && id != st.Ino {
			t.Errorf("%s: handle id %d, inode %d", dir, id, st.Ino)
		}
	}
}

// Lookups from many goroutines while unknown ids make the table be
// re-walked and swapped (run with -race).
func TestLookupConcurrent(t *testing.T) {
	requireRoot(t)
	m := v2Mount(t)
	prefix := testPrefix(t, m.point)
	r, err := NewResolver(Options{Root: m.point})
	if err != nil {
		t.Fatal(err)
	}
	r.now = func() time.Time { return time.Now().Add(time.Duration(r.walks.Load()) * rewalkEvery) }
	id, err := cgroupID(filepath.Join(m.point, prefix))
	if err != nil {
		t.Fatal(err)
	}
	want := Info{Path: "/" + prefix}
	done := make(chan error)
	for g := range 4 {
		go func() {
			for i := range 200 {
				if got := r.Lookup(id, Process{PID: uint32(os.Getpid())}); got != want {
					done <- fmt.Errorf("goroutine %d, lookup %d: got %+v", g, i, got)
					return
				}
				r.Lookup(1<<62+uint64(i), Process{})
				r.Lookup(0, Process{PID: uint32(os.Getpid())})
			}
			done <- nil
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	t.Logf("stats %+v", r.Stats())
}

// MaxCgroups bounds the table: the walk stops there and says so.
func TestWalkBound(t *testing.T) {
	requireRoot(t)
	m := v2Mount(t)
	prefix := testPrefix(t, m.point)
	if err := os.MkdirAll(filepath.Join(m.point, prefix, "a/b/c"), 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := NewResolver(Options{Root: m.point, MaxCgroups: 3})
	if err != nil {
		t.Fatal(err)
	}
	if s := r.Stats(); s.Cgroups != 3 || !s.Full {
		t.Errorf("stats %+v, want 3 cgroups and full", s)
	}
}
