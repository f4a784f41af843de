package top

import (
	"os"
	"strings"
	"testing"

	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/live"
	"github.com/twtrace/twtrace/pkg/report"
	"github.com/twtrace/twtrace/pkg/workload"
)

// settled: a frame that has seen n timewait entries and n connects, with the servers'
// side closed (no client timewait left in FIN_WAIT2).
func settled(n uint64) func(*Frame) bool {
	return func(fr *Frame) bool {
		// Connect counts are read from the kernel just before the table's
		// snapshot, and timewait events keep arriving in between: under
		// emulation a frame can show a connection's timewait and not yet its
		// connect. Every timewait here had a connect: wait for both.
		var tw, conns uint64
		for _, r := range fr.Rows {
			tw += r.Timewait
			conns += r.Connects
		}
		fw2 := 0
		for _, d := range fr.Destinations {
			fw2 += d.FinWait2
		}
		return tw >= n && conns >= n && fw2 == 0
	}
}

// rowsByComm indexes a frame's rows by comm; the test fails on two rows
// of one comm.
func rowsByComm(t *testing.T, f *Frame) map[string]report.Row {
	t.Helper()
	rows := map[string]report.Row{}
	for _, r := range f.Rows {
		if _, dup := rows[r.Comm]; dup {
			t.Fatalf("two rows of %q: %+v", r.Comm, f.Rows)
		}
		rows[r.Comm] = r
	}
	return rows
}

// The workloads, folded by program (the default): a shell loop
// of 30 short-lived clients is one row of 30 processes, judged
// per-request; a pre-fork pool's 4 workers of 5 connections are one row
// of 20 connections; two programs under one parent stay apart.
func TestTopFoldsPrograms(t *testing.T) {
	requireBPF(t)
	ns, servers := testnet.NewSmallRange(t, 3)
	run := startTop(t, ns)
	shell, loop := testnet.ShellLoop(t, ns, testnet.ClientSpec{Comm: "looper", Dest: servers[0].Dest(false), N: 1}, 30)
	pool, workers := testnet.Pool(t, ns, testnet.ClientSpec{Comm: "worker", Dest: servers[1].Dest(false), N: 5}, 4)
	alpha := testnet.StartClient(t, ns, testnet.ClientSpec{Comm: "alpha", Dest: servers[2].Dest(false), N: 2})
	beta := testnet.StartClient(t, ns, testnet.ClientSpec{Comm: "beta", Dest: servers[2].Dest(false), N: 3})
	f := run.frameWhere(t, settled(30+20+2+3))
	rows := rowsByComm(t, f)
	if len(rows) != 4 {
		t.Fatalf("%d rows, want looper, worker, alpha, beta: %+v", len(rows), f.Rows)
	}
	check := func(comm string, procs int, clients []testnet.ClientResult, ppid int, parent string, n uint64) report.Row {
		t.Helper()
		r := rows[comm]
		if r.ProcessCount != procs || !hasPID(clients, r.PID) || r.PPID != uint32(ppid) || r.ParentComm != parent || r.Workload != comm {
			t.Errorf("%s row: %d processes, first pid %d, parent %d %q, workload %q; want %d, one of its clients, %d %q, %q",
				comm, r.ProcessCount, r.PID, r.PPID, r.ParentComm, r.Workload, procs, ppid, parent, comm)
		}
		if r.Connects != n || r.Timewait != n || r.TimewaitNow != int(n) {
			t.Errorf("%s row: %d connects, %d timewait, %d held; want %d each", comm, r.Connects, r.Timewait, r.TimewaitNow, n)
		}
		return r
	}
	if r := check("looper", 30, loop[:1], shell, "sh", 30); r.Verdict != "per-request" {
		t.Errorf("looper verdict %q, want per-request (%s)", r.Verdict, r.Reason)
	}
	check("worker", 4, workers, pool, testnet.PoolComm, 20)
	self, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	me := strings.TrimSpace(string(self))
	check("alpha", 1, []testnet.ClientResult{*alpha}, os.Getpid(), me, 2)
	check("beta", 1, []testnet.ClientResult{*beta}, os.Getpid(), me, 3)
	if f.Losses.UncountedProcesses != 0 {
		t.Errorf("%d processes uncounted", f.Losses.UncountedProcesses)
	}
}

// --by pid is the behaviour before workloads: the pool's workers are a
// row each.
func TestTopByPID(t *testing.T) {
	requireBPF(t)
	ns, servers := testnet.NewSmallRange(t, 1)
	run := startTopWith(t, ns, func(c *live.Config) { c.By = workload.ByPID })
	_, workers := testnet.Pool(t, ns, testnet.ClientSpec{Comm: "worker", Dest: servers[0].Dest(false), N: 5}, 4)
	f := run.frameWhere(t, settled(20))
	if len(f.Rows) != 4 {
		t.Fatalf("%d rows, want 4: %+v", len(f.Rows), f.Rows)
	}
	want := map[uint32]bool{}
	for _, w := range workers {
		want[uint32(w.PID)] = true
	}
	for _, r := range f.Rows {
		if !want[r.PID] || r.ProcessCount != 1 || r.Connects != 5 || r.Timewait != 5 || r.Workload != "worker" {
			t.Errorf("row %+v: want one of the workers, 1 process, 5 connects and timewait", r)
		}
		delete(want, r.PID)
	}
}

// hasPID: one of clients has pid (a pool starts its workers at once:
// any of them may be the first a row saw).
func hasPID(clients []testnet.ClientResult, pid uint32) bool {
	for _, c := range clients {
		if uint32(c.PID) == pid {
			return true
		}
	}
	return false
}
