package containertest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/pkg/load"
)

const greeting = "hello from the test's server\n"

// serve answers every request with greeting until the test ends.
func serve(t *testing.T, ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, greeting)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
}

func listenHost(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// Scenario: a container in the host's network namespace fetches a page
// from a server the test runs on the host's loopback → it gets the page.
func TestRunCReachesHostServer(t *testing.T) {
	ln := listenHost(t)
	serve(t, ln)
	url := "http://" + ln.Addr().String() + "/"
	c := RunC(t, "twt-wget", Bundle(t, []string{"wget", "-q", "-O-", url}, BundleOptions{}))
	if err := c.Wait(t); err != nil {
		t.Fatalf("wget %s in the container: %v; output: %s", url, err, c.Output())
	}
	if got := c.Output(); got != greeting {
		t.Fatalf("container printed %q, want %q", got, greeting)
	}
}

// Scenario: a container joins a network namespace by path → it reaches
// the server listening in that namespace's loopback.
func TestRunCJoinsNetns(t *testing.T) {
	nsPath, ln := privateNetnsListener(t)
	serve(t, ln)
	url := "http://" + ln.Addr().String() + "/"
	c := RunC(t, "twt-netns", Bundle(t, []string{"wget", "-q", "-O-", url}, BundleOptions{NetnsPath: nsPath}))
	if err := c.Wait(t); err != nil {
		t.Fatalf("wget %s in the container: %v; output: %s", url, err, c.Output())
	}
	if got := c.Output(); got != greeting {
		t.Fatalf("container printed %q, want %q", got, greeting)
	}
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", c.PID))
	if err == nil { // the process may be gone already; when it is not, check where it ran
		want, _ := os.Readlink(nsPath)
		if link != want {
			t.Errorf("container's netns %s, want %s", link, want)
		}
	}
}

// privateNetnsListener makes a network namespace with loopback up, held by
// a parked thread of the test, and a listener in it. It returns the
// namespace's path, which runc opens.
func privateNetnsListener(t *testing.T) (string, net.Listener) {
	t.Helper()
	type result struct {
		tid int
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	release := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with its namespace
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		if err := load.LoopbackUp(); err != nil {
			ch <- result{err: err}
			return
		}
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		ch <- result{tid: unix.Gettid(), ln: ln, err: err}
		<-release
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("making a network namespace with a listener: %v", r.err)
	}
	t.Cleanup(func() { close(release) })
	return fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), r.tid), r.ln
}

// Scenario: runc's cgroupfs driver on this hybrid host puts the container's
// process at CgroupsPath in every v1 hierarchy and in the unified (v2)
// tree → every line of /proc/PID/cgroup shows exactly CgroupsPath, the
// v2 directory lists the pid, and cleanup removes every directory made.
func TestRunCCgroupPath(t *testing.T) {
	id := strings.Repeat("0123456789abcdef", 4)
	for _, cgroupsPath := range []string{
		"/system.slice/docker-" + id + ".scope",
		"/kubepods/besteffort/pod2b0c8e1a-5e0f-4c53-9d7a-0f6f3bb1c9d4/" + id,
	} {
		made := missingCgroupDirs(t, cgroupsPath)
		t.Run(strings.Split(cgroupsPath, "/")[1], func(t *testing.T) {
			c := RunC(t, "twt-cg-"+id[:8], Bundle(t, []string{"sleep", "30"}, BundleOptions{CgroupsPath: cgroupsPath}))
			lines, err := ReadProcCgroup(c.PID)
			if err != nil {
				t.Fatalf("reading the container process's cgroups: %v", err)
			}
			if len(lines) == 0 {
				t.Fatal("no cgroup lines")
			}
			for _, l := range lines {
				if l.Path != cgroupsPath {
					t.Errorf("%d:%s:%s, want path %s", l.ID, l.Controllers, l.Path, cgroupsPath)
				}
			}
			if v2 := unifiedDir(t); v2 != "" {
				procs, err := os.ReadFile(filepath.Join(v2, cgroupsPath, "cgroup.procs"))
				if err != nil || strings.TrimSpace(string(procs)) != fmt.Sprint(c.PID) {
					t.Errorf("v2 cgroup.procs of %s: %q, %v; want %d", cgroupsPath, procs, err, c.PID)
				}
			}
		})
		for _, d := range made {
			if _, err := os.Stat(d); !os.IsNotExist(err) && !hasChildCgroup(d) { // children: another test's
				t.Errorf("cleanup left %s (%v)", d, err)
			}
		}
	}
}

// unifiedDir is where the cgroup v2 hierarchy is mounted, "" if nowhere.
func unifiedDir(t *testing.T) string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mounts, err := ParseCgroupMounts(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if m.Version == 2 && m.Root == "/" {
			return m.Dir
		}
	}
	return ""
}
