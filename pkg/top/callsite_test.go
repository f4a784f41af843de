package top

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/sitecheck"
	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/live"
	"github.com/twtrace/twtrace/pkg/report"
)

// startTopStacks is startTop with top's default stack sampling.
func startTopStacks(t *testing.T, ns *testnet.Netns) *topRun {
	return startTopWith(t, ns, func(c *live.Config) { c.Stacks, c.HTTPCallers = 64, true })
}

// checkDialSite checks that row's call site is the NetDial client's
// net.Dial call, exactly, with the stack that leads to it.
func checkDialSite(t *testing.T, row report.Row) {
	t.Helper()
	fn, file, line := testnet.DialCallSite()
	if want := fmt.Sprintf("%s (%s:%d)", fn, file, line); row.CallSite != want || row.ClientLibrary != "" || row.CallSiteNote != "" {
		t.Errorf("call site %q (library %q, note %q), want %q", row.CallSite, row.ClientLibrary, row.CallSiteNote, want)
	}
	found := false
	for _, f := range row.Stack {
		if f.Function == fn && f.File == file && f.Line == line && f.Address != 0 && f.Module != "" {
			found = true
		}
	}
	if !found || len(row.Stack) < 4 || row.CallSites != nil {
		t.Errorf("stack %+v (call sites %+v): want the dial's frame in it, one site", row.Stack, row.CallSites)
	}
}

// The Go program: a client whose openPerRequest calls net.Dial
// per request gets that function and the exact file:line of the call
// as its row's call site, with top's sampling (the first 8 stacks of the
// process and destination, then 1 in 64).
func TestTopCallSiteGo(t *testing.T) {
	requireBPF(t)
	ns := testnet.New(t)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	run := startTopStacks(t, ns)
	cl := testnet.StartClient(t, ns, testnet.ClientSpec{Comm: "dialer", Dest: srv.Dest(false), N: 30, NetDial: true})
	if len(cl.Ports) != 30 {
		t.Fatalf("client made %d connections, want 30", len(cl.Ports))
	}
	f := run.frameWhere(t, settled(30))
	row := rowsByComm(t, f)["dialer"]
	if row.Timewait != 30 || row.Verdict != "per-request" {
		t.Errorf("row: %d timewait, verdict %q; want 30, per-request", row.Timewait, row.Verdict)
	}
	checkDialSite(t, row)
}

// A process that exits right after its connection is still named: 30
// processes of one connection each, run by a shell loop, fold into one
// row whose call site is the dial's.
func TestTopCallSiteShortLived(t *testing.T) {
	requireBPF(t)
	ns := testnet.New(t)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	run := startTopStacks(t, ns)
	testnet.ShellLoop(t, ns, testnet.ClientSpec{Comm: "oneshot", Dest: srv.Dest(false), N: 1, NetDial: true}, 30)
	f := run.frameWhere(t, settled(30))
	row := rowsByComm(t, f)["oneshot"]
	if row.Timewait != 30 || row.ProcessCount != 30 {
		t.Errorf("row: %d timewait of %d processes; want 30 of 30", row.Timewait, row.ProcessCount)
	}
	checkDialSite(t, row)
}

// The net/http client: Go's default client, 16 requests at a
// time against an idle pool of 2 per host, opens most of its connections
// per request. Its dial runs in a goroutine of net/http's own: the stack
// of that dial's connect() shows the library, which has twtrace probe
// the executable (gohttp.h); from then on, the caller's line is named.
// The advice for net/http comes first: MaxIdleConnsPerHost.
//
// top takes the callers' stacks of a process's first 8 queued dials (then
// 1 in 64). A queued request that a connection coming free serves before
// its dial goroutine starts does not dial, and its sample names nothing:
// seen in a 6.1 guest, 6 named dials. The server answers the first GET
// and the 16 after the pause late, so that no connection comes free
// while those 16 queue.
func TestTopCallSiteNetHTTP(t *testing.T) {
	requireBPF(t)
	ns := testnet.New(t)
	delay := 50 * time.Millisecond
	if testnet.InVMGuest() {
		delay = 300 * time.Millisecond
	}
	srv := testnet.StartHTTPServerDelay(t, ns, 17, delay)
	run := startTopStacks(t, ns)
	probed := filepath.Join(t.TempDir(), "probed")
	type result struct {
		cl  *testnet.ClientResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		cl, err := testnet.RunClient(ns.Path(), testnet.ClientSpec{Comm: "httpc", Dest: srv.Addr,
			HTTPGets: 400, HTTPConcurrency: 16, HTTPWaitFile: probed})
		done <- result{cl, err}
	}()
	// The first GET's site is published once its executable is probed.
	first := run.await(func(f *Frame) bool {
		for _, r := range f.Rows {
			if r.Comm == "httpc" && r.CallSite != "" {
				return true
			}
		}
		return false
	})
	if err := os.WriteFile(probed, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil || first == nil {
		t.Fatalf("client: %v; a frame with the first GET's site: %v", res.err, first != nil)
	}
	n := uint64(len(res.cl.Ports))
	if n < 40 {
		t.Fatalf("the client made %d connections for 400 requests, want many more", n)
	}
	f := run.frameWhere(t, settled(n))
	row := rowsByComm(t, f)["httpc"]
	// top samples the first 8 dials of a process, then 1 in 64.
	sitecheck.HTTPSite(t, row, 8)
	if row.Verdict != "per-request" || len(row.Advice) == 0 || !strings.Contains(row.Advice[0], "MaxIdleConnsPerHost") {
		t.Errorf("verdict %q (%s), advice %q: want per-request, MaxIdleConnsPerHost first", row.Verdict, row.Reason, row.Advice)
	}
}
