package demo

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/internal/testnet"
)

func TestMain(m *testing.M) {
	// The demo's processes are this test binary again.
	RunChildIfAsked()
	os.Exit(m.Run())
}

// requirePrivileges: the tests below make namespaces and processes, not
// BPF programs, but the demo as a whole needs both; under CI=true a
// missing privilege fails them.
func requirePrivileges(t *testing.T) { testnet.RequireBPF(t, Preflight) }

// setUp makes the demo's namespace and listener.
func setUp(t *testing.T) (*nsThread, *os.File) {
	t.Helper()
	ns, err := newNetns(sysctls())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.close)
	var ln *os.File
	if err := ns.do(func() (err error) { ln, err = listen(ServerAddr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ns, ln
}

func inode(t *testing.T, path string) uint32 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return uint32(st.Ino)
}

// The namespace has the demo's settings; the three processes run in it,
// every thread named after its role, the demo's own threads outside; the
// churner leaves timewait sockets. After stop and close, no process and
// no thread is left in the namespace.
func TestProcessesInTheirNamespace(t *testing.T) {
	requirePrivileges(t)
	own := inode(t, "/proc/thread-self/ns/net")
	ns, ln := setUp(t)
	if ns.inode == own {
		t.Fatal("the demo's namespace is ours")
	}
	err := ns.do(func() error {
		for key, want := range map[string]string{
			"ipv4/ip_local_port_range": "40000\t40499", "ipv4/tcp_tw_reuse": "0", "ipv4/tcp_rfc1337": "1",
		} {
			b, err := os.ReadFile("/proc/sys/net/" + key)
			if err != nil {
				return err
			}
			if got := strings.TrimSpace(string(b)); got != want {
				return fmt.Errorf("%s = %q, want %q", key, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	g := &group{}
	t.Cleanup(g.stop)
	info, err := start(ns, g, ln)
	if err != nil {
		t.Fatal(err)
	}
	if info.Netns != ns.inode || info.Usable != 500 || info.PortRange != [2]uint16{40000, 40499} {
		t.Errorf("info %+v", info)
	}
	procs := map[int]string{info.ServerPID: roleServer, info.PooledPID: rolePooled, info.ChurnerPID: roleChurner}
	if len(procs) != 3 {
		t.Fatalf("pids %+v: want three processes", info)
	}
	for pid, role := range procs {
		if got := inode(t, fmt.Sprintf("/proc/%d/ns/net", pid)); got != ns.inode {
			t.Errorf("%s (pid %d) in netns %d, want %d", role, pid, got, ns.inode)
		}
		comms, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/comm", pid))
		if len(comms) == 0 {
			t.Errorf("%s (pid %d): no threads", role, pid)
		}
		for _, c := range comms {
			if b, err := os.ReadFile(c); err == nil && string(b) != role+"\n" {
				t.Errorf("%s: %q, want every thread named %q", c, b, role)
			}
		}
	}
	// Only they hold the namespace: the demo's thread left it.
	for _, p := range testnet.NetnsHolders(ns.inode) {
		pid, _ := strconv.Atoi(strings.Split(p, "/")[2])
		if procs[pid] == "" {
			t.Errorf("%s: in the demo's namespace, and not one of its processes", p)
		}
	}
	// The churner's connections end in TIME_WAIT in the namespace.
	tw := func() int {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/sockstat", info.ServerPID))
		if err != nil {
			return -1
		}
		for l := range strings.Lines(string(b)) {
			if f := strings.Fields(l); len(f) >= 7 && f[0] == "TCP:" && f[5] == "tw" {
				n, _ := strconv.Atoi(f[6])
				return n
			}
		}
		return -1
	}
	if !testnet.WaitFor(10*time.Second, func() bool { return tw() >= 20 }) {
		t.Errorf("%d timewait sockets in the namespace, want the churner's", tw())
	}
	if err := g.err(); err != nil {
		t.Errorf("a process ended early: %v", err)
	}

	g.stop()
	ns.close()
	for pid, role := range procs {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Errorf("%s (pid %d) still exists after stop", role, pid)
		}
	}
	if in := testnet.NetnsHolders(ns.inode); len(in) > 0 {
		t.Errorf("still in the namespace after close: %v", in)
	}
}

// A process that ends before stop is the demo's failure, with its cause.
func TestEarlyExitIsReported(t *testing.T) {
	requirePrivileges(t)
	ns, ln := setUp(t)
	failed := make(chan struct{})
	g := &group{onFail: func() { close(failed) }}
	t.Cleanup(g.stop)
	info, err := start(ns, g, ln)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.err(); err != nil {
		t.Fatalf("a process ended early already: %v", err)
	}
	syscall.Kill(info.ServerPID, syscall.SIGKILL)
	select {
	case <-failed:
	case <-time.After(10 * time.Second):
		t.Fatal("the server's end was not noticed")
	}
	if err := g.err(); err == nil || !strings.Contains(err.Error(), "ended early") {
		t.Errorf("err = %v, want a process that ended early", err)
	}
}

// A process that fails to start is reported in one line, with its own
// words, and reaped.
func TestStartFailureIsReported(t *testing.T) {
	requirePrivileges(t)
	ns, _ := setUp(t) // the listener is never handed to a server
	var p *proc
	err := ns.do(func() (err error) {
		p, err = startProc(childSpec{Role: rolePooled, Addr: "127.0.0.1:8081", Rate: 1, Parent: os.Getpid()}, nil)
		return err
	})
	if p != nil || err == nil {
		t.Fatalf("pooled without a server started: %v", err)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "the pooled process failed: ") || !strings.Contains(msg, "connection refused") ||
		strings.Contains(msg, "twtrace demo:") || strings.Contains(msg, "\n") {
		t.Errorf("err = %q, want one line with the child's own words", msg)
	}
}
