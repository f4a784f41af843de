package tracer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/event"
)

// The identity tests' own child processes (the test binary, re-executed):
// testnet's client cannot name a thread apart from its leader, exec, or
// outlive its parent.

const procChildEnv = "TWTRACE_TEST_PROC_CHILD"

// procChild tells a child what to do.
type procChild struct {
	Mode string // thread, exec, connect, orphan, late
	Dest string // the server, ip:port
	Exec string // exec: the binary to exec next (in mode connect)
	// Parent is the orphan that started a late child, which connects once
	// the orphan is gone.
	Parent int
}

// procReport is what each child prints, one JSON line.
type procReport struct {
	PID, TID int
	Child    int // orphan: the grandchild it left behind
	PPIDNow  int // late: its parent when it connected (the reaper)
}

// connThreadComm names the thread that connects while its leader keeps
// the binary's name.
const connThreadComm = "conn-thread"

// runProcChildIfAsked runs a child in the re-executed test binary.
func runProcChildIfAsked() {
	raw := os.Getenv(procChildEnv)
	if raw == "" {
		return
	}
	var c procChild
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := c.run(); err != nil {
		fmt.Fprintln(os.Stderr, c.Mode+":", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func (c procChild) run() error {
	report := procReport{PID: os.Getpid(), TID: unix.Gettid()}
	switch c.Mode {
	case "thread":
		// A thread of its own, renamed: the leader keeps its name.
		errc := make(chan error, 1)
		go func() {
			runtime.LockOSThread()
			report.TID = unix.Gettid()
			name := append([]byte(connThreadComm), 0)
			if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&name[0])), 0, 0, 0); err != nil {
				errc <- err
				return
			}
			err := dialClose(c.Dest, 2)
			// No route in the test's namespace: a connect error the
			// precise tier reports.
			if e := dialClose("10.9.9.9:80", 1); !errors.Is(e, unix.ENETUNREACH) {
				err = errors.Join(err, fmt.Errorf("connect to 10.9.9.9: %v, want ENETUNREACH", e))
			}
			errc <- err
		}()
		if err := <-errc; err != nil {
			return err
		}
	case "connect", "exec":
		if err := dialClose(c.Dest, 1); err != nil {
			return err
		}
		if c.Mode == "exec" {
			next, _ := json.Marshal(procChild{Mode: "connect", Dest: c.Dest})
			// The first of two same-named variables wins: replace ours.
			env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, procChildEnv+"=") })
			return unix.Exec(c.Exec, []string{c.Exec}, append(env, procChildEnv+"="+string(next)))
		}
	case "orphan":
		// Leave a child that connects once this process is gone.
		late, _ := json.Marshal(procChild{Mode: "late", Dest: c.Dest, Parent: os.Getpid()})
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), procChildEnv+"="+string(late))
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		report.Child = cmd.Process.Pid
	case "late":
		for os.Getppid() == c.Parent {
			time.Sleep(5 * time.Millisecond)
		}
		report.PPIDNow = os.Getppid()
		if err := dialClose(c.Dest, 1); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown mode %q", c.Mode)
	}
	return json.NewEncoder(os.Stdout).Encode(report)
}

// dialClose makes n connections to dest from the calling thread, closing
// each first (the server reads to EOF): one timewait entry each.
func dialClose(dest string, n int) error {
	ap, err := netip.ParseAddrPort(dest)
	if err != nil {
		return err
	}
	for range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		err = unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	return nil
}

// startProcChild runs a child in ns and returns every report it (and what
// it left behind) printed, once all of them are done.
func startProcChild(t *testing.T, ns *testnet.Netns, c procChild) []procReport {
	t.Helper()
	raw, _ := json.Marshal(c)
	var out []byte
	ns.Do(t, func() error {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), procChildEnv+"="+string(raw))
		cmd.Stderr = os.Stderr
		var err error
		if out, err = cmd.Output(); err != nil {
			return fmt.Errorf("child %+v: %w", c, err)
		}
		return nil
	})
	var reports []procReport
	dec := json.NewDecoder(bufio.NewReader(bytes.NewReader(out)))
	for {
		var r procReport
		if err := dec.Decode(&r); errors.Is(err, io.EOF) {
			return reports
		} else if err != nil {
			t.Fatalf("child output %q: %v", out, err)
		}
		reports = append(reports, r)
	}
}

// exeProc is the identity a process running path has, parent aside: the
// executable's (device, inode) as the kernel encodes them, and the comm
// exec gives it.
func exeProc(t *testing.T, path string) event.Proc {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	p := event.Proc{ExeDev: unix.Major(st.Dev)<<20 | unix.Minor(st.Dev), ExeIno: st.Ino}
	copy(p.Comm[:15], filepath.Base(path))
	return p
}

// testProc is the identity of a child running the test binary, which it
// was started as (os.Args[0]), forked by parent.
func testProc(t *testing.T, parent int) event.Proc {
	p := exeProc(t, testExe(t))
	p.Comm = [16]byte{}
	copy(p.Comm[:15], filepath.Base(os.Args[0]))
	p.PPID = uint32(parent)
	return p
}

// traceIdentities starts a tracer of ns's events and connect counts.
func traceIdentities(t *testing.T, ns *testnet.Netns) (*Tracer, *collector) {
	t.Helper()
	requireBPF(t)
	tr, err := New(Options{Netns: ns.Inode, CountConnects: true})
	if err != nil {
		t.Fatal(err)
	}
	return tr, collect(t, tr)
}

// connectCounts reads every count, by pid and identity.
func connectCounts(t *testing.T, tr *Tracer) map[ConnectCount]uint64 {
	t.Helper()
	got := map[ConnectCount]uint64{}
	if err := tr.ReadConnects(func(c *ConnectCount) {
		k := *c
		k.N = 0
		got[k] += c.N
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

func testExe(t *testing.T) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// A process whose connecting thread has a name of its own: its timewait
// entries, connect error and connect count carry the thread's comm in
// Comm, and in Proc its leader's comm, its parent (the test) and its
// executable.
func TestIdentityOfAThread(t *testing.T) {
	ns := testnet.New(t)
	tr, c := traceIdentities(t, ns)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	r := startProcChild(t, ns, procChild{Mode: "thread", Dest: srv.Dest(false)})[0]
	want := testProc(t, os.Getpid())

	var thread [16]byte
	copy(thread[:], connThreadComm)
	evs := c.settle(event.KindTimewait, 2)
	if tr.Tier().Tier == TierPrecise {
		evs = append(evs, c.settle(event.KindConnectError, 1)...)
	}
	if len(evs) < 2 {
		t.Fatalf("got %d events, want 2 timewait entries (and a connect error in the precise tier)", len(evs))
	}
	for _, e := range evs {
		if int(e.PID) != r.PID || int(e.TID) != r.TID || e.Comm != thread || e.Proc != want {
			t.Errorf("%v of pid %d tid %d comm %q proc %+v, want %d %d %q %+v",
				e.Kind, e.PID, e.TID, e.Comm, e.Proc, r.PID, r.TID, connThreadComm, want)
		}
	}
	counts := connectCounts(t, tr)
	key := ConnectCount{Netns: ns.Inode, PID: uint32(r.PID), Comm: thread, Proc: want, CgroupID: evs[0].CgroupID,
		Daddr: srv.Addr.Addr(), Dport: srv.Addr.Port()}
	if counts[key] != 2 {
		t.Errorf("connect counts %+v, want 2 for %+v", counts, key)
	}
}

// exec changes who a process is: a process that connects, then execs
// another binary that connects, has two identities, each on its own
// events and connect count, with the same pid and parent.
func TestIdentityAcrossExec(t *testing.T) {
	ns := testnet.New(t)
	tr, c := traceIdentities(t, ns)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	copyPath := filepath.Join(t.TempDir(), "twt-exec-copy")
	bin, err := os.ReadFile(testExe(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyPath, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	r := startProcChild(t, ns, procChild{Mode: "exec", Dest: srv.Dest(false), Exec: copyPath})[0]
	before, after := testProc(t, os.Getpid()), exeProc(t, copyPath)
	after.PPID = uint32(os.Getpid())

	evs := c.settle(event.KindTimewait, 2)
	if len(evs) != 2 {
		t.Fatalf("got %d timewait entries, want 2", len(evs))
	}
	for i, want := range []event.Proc{before, after} {
		if e := evs[i]; int(e.PID) != r.PID || e.Proc != want {
			t.Errorf("entry %d: pid %d proc %+v, want %d %+v", i, e.PID, e.Proc, r.PID, want)
		}
	}
	counts := connectCounts(t, tr)
	// The counts carry the connecting process's cgroup, as its records do.
	if evs[0].CgroupID == 0 {
		t.Fatal("a timewait entry without its cgroup id")
	}
	for _, want := range []event.Proc{before, after} {
		key := ConnectCount{Netns: ns.Inode, PID: uint32(r.PID), Comm: want.Comm, Proc: want, CgroupID: evs[0].CgroupID,
			Daddr: srv.Addr.Addr(), Dport: srv.Addr.Port()}
		if counts[key] != 1 {
			t.Errorf("connect counts %+v, want 1 for %+v", counts, key)
		}
	}
}

// A child that outlives its parent keeps its parent: reparented to a
// reaper, it still names the process that forked it.
func TestIdentityKeepsTheParent(t *testing.T) {
	ns := testnet.New(t)
	tr, c := traceIdentities(t, ns)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	reports := startProcChild(t, ns, procChild{Mode: "orphan", Dest: srv.Dest(false)})
	if len(reports) != 2 {
		t.Fatalf("reports %+v, want the orphan's and its child's", reports)
	}
	parent, child := reports[0], reports[1]
	if parent.Child == 0 {
		parent, child = child, parent
	}
	if child.PID != parent.Child || child.PPIDNow == parent.PID {
		t.Fatalf("reports %+v: the child was not reparented", reports)
	}
	want := testProc(t, parent.PID)
	evs := c.settle(event.KindTimewait, 1)
	if len(evs) != 1 || int(evs[0].PID) != child.PID || evs[0].Proc != want {
		t.Fatalf("timewait entries %+v, want one of pid %d with %+v", evs, child.PID, want)
	}
	if n, err := tr.UnknownParents(); err != nil || n != 0 {
		t.Errorf("UnknownParents = %d, %v; want 0", n, err)
	}
}
