package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/report"
	"github.com/twtrace/twtrace/pkg/top"
	"github.com/twtrace/twtrace/pkg/tracer"
)

func requireBPF(t *testing.T) { testnet.RequireBPF(t, tracer.Preflight) }

// churnNetns is a testnet.NewSmallRange namespace with one server.
func churnNetns(t *testing.T) (*testnet.Netns, *testnet.Server) {
	ns, s := testnet.NewSmallRange(t, 1)
	return ns, s[0]
}

// `twtrace top -o json --count 2` prints exactly two objects; the second
// attributes the client's 25 connections to its pid, all held in timewait
// now, with the per-request verdict, and its destination has exactly the
// ports the model leaves: 94 − 25.
// startTopCLI starts `twtrace top -o json --count 2` on ns with more
// args, and returns once it is tracing: the command, its stdout, and the
// rest of its stderr.
func startTopCLI(t *testing.T, ns *testnet.Netns, args ...string) (*exec.Cmd, *bytes.Buffer, *bufio.Reader) {
	t.Helper()
	argv := append([]string{"-test.run=^TestCLIHelper$", "--", "top", "-o", "json", "--count", "2",
		"--netns", strconv.FormatUint(uint64(ns.Inode), 10)}, args...)
	cmd := exec.Command(os.Args[0], argv...)
	cmd.Env = append(os.Environ(), "TWTRACE_TEST_CLI=1")
	stdout := &bytes.Buffer{}
	cmd.Stdout = stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(stderr)
	if ready, err := rd.ReadString('\n'); err != nil || !strings.HasPrefix(ready, "twtrace: tracing") {
		t.Fatalf("ready line %q, err %v", ready, err)
	}
	return cmd, stdout, rd
}

// lastTopFrame waits for the top started by startTopCLI to exit, and
// returns the last frame it printed.
func lastTopFrame(t *testing.T, cmd *exec.Cmd, stdout *bytes.Buffer, rd *bufio.Reader) top.Frame {
	t.Helper()
	rest, _ := rd.ReadString(0)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("top exited with %v; stderr %q", err, rest)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var f top.Frame
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestTopJSONCountTwo(t *testing.T) {
	requireBPF(t)
	ns, s := churnNetns(t)
	// The second frame reads the sockets however busy the host.
	cmd, stdout, rd := startTopCLI(t, ns, "--inventory-cpu", "100")
	c := testnet.StartClient(t, ns, testnet.ClientSpec{Dest: s.Dest(false), N: 25})
	if len(c.Ports) != 25 {
		t.Fatalf("client made %d connections, want 25", len(c.Ports))
	}
	rest, _ := rd.ReadString(0)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("top exited with %v; stderr %q", err, rest)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines of output, want 2:\n%s", len(lines), stdout.String())
	}
	var f top.Frame
	if err := json.Unmarshal([]byte(lines[1]), &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Rows) != 1 {
		t.Fatalf("rows = %+v, want the client's only", f.Rows)
	}
	r := f.Rows[0]
	if r.PID != uint32(c.PID) || r.Comm != testnet.ClientComm || r.Netns != ns.Inode || r.Daddr != s.Addr.Addr() || r.Dport != s.Addr.Port() {
		t.Errorf("row %+v: want pid %d (%s) toward %s in netns %d", r, c.PID, testnet.ClientComm, s.Addr, ns.Inode)
	}
	if r.Connects != 25 || r.Timewait != 25 || r.TimewaitNow != 25 || r.ConnectErrors != 0 || r.Verdict != "per-request" {
		t.Errorf("row: %d connects, %d timewait, %d now, %d errors, verdict %q; want 25, 25, 25, 0, per-request",
			r.Connects, r.Timewait, r.TimewaitNow, r.ConnectErrors, r.Verdict)
	}
	var d *report.LiveDestination
	for i := range f.Destinations {
		if f.Destinations[i].Dport == s.Addr.Port() {
			d = &f.Destinations[i]
		}
	}
	if d == nil || d.Timewait != 25 || d.PortsAvailable != 69 || d.PortsUsable != 94 || d.Unattributed != 0 {
		t.Errorf("destination = %+v, want 25 timewait, 69 of 94 ports available, none unattributed", d)
	}
}

// `twtrace snapshot -o json` reads the namespace without tracing: exact
// timewait count and available ports, and the namespace's settings.
func TestSnapshotJSON(t *testing.T) {
	requireBPF(t)
	ns, s := churnNetns(t)
	c := testnet.StartClient(t, ns, testnet.ClientSpec{Dest: s.Dest(false), N: 40})
	if len(c.Ports) != 40 {
		t.Fatalf("client made %d connections, want 40", len(c.Ports))
	}
	// Until the server has closed its side, a client's timewait socket is
	// in substate FIN_WAIT2: wait for the kernel to settle.
	var out []byte
	var snap report.Snapshot
	testnet.WaitFor(5*time.Second, func() bool {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCLIHelper$", "--", "snapshot", "-o", "json",
			"--netns", strconv.FormatUint(uint64(ns.Inode), 10))
		cmd.Env = append(os.Environ(), "TWTRACE_TEST_CLI=1")
		var err error
		if out, err = cmd.Output(); err != nil {
			t.Fatalf("snapshot: %v", err)
		}
		snap = report.Snapshot{}
		if err := json.Unmarshal(out, &snap); err != nil {
			t.Fatal(err)
		}
		return len(snap.Namespaces) == 1 && snap.Namespaces[0].FinWait2 == 0
	})
	if len(snap.Namespaces) != 1 || len(snap.Destinations) != 1 {
		t.Fatalf("snapshot = %s, want one namespace and one destination", out)
	}
	n, d := snap.Namespaces[0], snap.Destinations[0]
	if n.Netns != ns.Inode || n.PortRange != [2]uint16{40000, 40099} || report.Spans(n.ReservedPorts) != "40010-40014" || n.TwReuse != 0 {
		t.Errorf("namespace = %+v", n)
	}
	if d.Daddr != s.Addr.Addr() || d.Dport != s.Addr.Port() || d.Timewait != 40 || d.PortsInUse != 40 || d.PortsAvailable != 54 {
		t.Errorf("destination = %+v, want 40 timewait toward %s and 94 − 40 = 54 ports available", d, s.Addr)
	}
	for _, key := range []string{`"netns"`, `"saddr"`, `"daddr"`, `"dport"`, `"timewait"`, `"fin_wait2"`, `"established"`,
		`"ports_in_use"`, `"ports_available"`, `"port_range"`, `"reserved_ports"`, `"tcp_tw_reuse"`} {
		if !bytes.Contains(out, []byte(key)) {
			t.Errorf("snapshot JSON lacks %s", key)
		}
	}
}
