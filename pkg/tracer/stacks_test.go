package tracer

import (
	"runtime"
	"strings"
	"testing"

	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/event"
)

// funcName names the Go function at pc in this test binary, which every
// testnet client runs too (the same executable, at the same addresses).
func funcName(pc uint64) string {
	if f := runtime.FuncForPC(uintptr(pc)); f != nil {
		return f.Name()
	}
	return ""
}

// Every connect() of a client, made and failed, carries the stack it was
// called from: one stack (one call site), announced once, whose frames
// walk through the client's connect call in its code.
func TestConnectStacks(t *testing.T) {
	requireBPF(t)
	ns := testnet.New(t)
	tr, err := New(Options{Netns: ns.Inode, StackSample: 1})
	if err != nil {
		t.Fatalf("starting tracer: %v", err)
	}
	c := collect(t, tr)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	exhaust(t, ns)
	cl := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: 17})
	checkExhaustedClient(t, cl, 17)
	tws, errs := c.settleExhaustion(t, cl)
	news := c.ofKind(event.KindStack)
	if len(news) != 1 || int(news[0].PID) != cl.PID || news[0].Stack == 0 {
		t.Fatalf("new stacks %+v, want one, of the client %d", news, cl.PID)
	}
	id := news[0].Stack
	for _, e := range append(tws, errs...) {
		if e.Stack != id {
			t.Errorf("%s event of port %d: stack %#x, want %#x", e.Kind, e.Sport, e.Stack, id)
		}
	}
	s, err := tr.Stack(id)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i, ip := range s.IPs {
		if i > 0 {
			ip-- // a return address: the call is just before it
		}
		names = append(names, funcName(ip))
	}
	t.Logf("stack of pid %d: %s; ret %#x in %s; exe %d:%d code %#x-%#x", s.PID, strings.Join(names, " < "), s.Ret, funcName(s.Ret-1), s.ExeDev, s.ExeIno, s.StartCode, s.EndCode)
	if int(s.PID) != cl.PID || len(s.IPs) < 4 {
		t.Fatalf("stack of pid %d with %d frames, want the client's (%d) with more", s.PID, len(s.IPs), cl.PID)
	}
	// unix.Connect, called by the client's connect closure, called by
	// clientRun: the walk reaches the client's own code.
	const path = "golang.org/x/sys/unix.Connect github.com/twtrace/twtrace/internal/testnet.clientRun.func"
	if !strings.Contains(strings.Join(names, " "), path) {
		t.Errorf("no frames %q in %v", path, names)
	}
	if s.Ret != 0 && funcName(s.Ret-1) == "" {
		t.Errorf("ret %#x is in no function of the client's", s.Ret)
	}
	if lost, err := tr.LostStacks(); err != nil || lost != 0 {
		t.Errorf("lost stacks %d (%v), want 0", lost, err)
	}
}

// Without stacks asked for, no record names one.
func TestNoStacksByDefault(t *testing.T) {
	ns := testnet.New(t)
	c := traceNetns(t, ns)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	cl := testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: 5})
	evs := c.settle(event.KindTimewait, len(cl.Ports))
	for _, e := range evs {
		if e.Stack != 0 {
			t.Errorf("timewait event with stack %#x, want none", e.Stack)
		}
	}
	if n := len(c.ofKind(event.KindStack)); n != 0 {
		t.Errorf("%d new-stack events, want 0", n)
	}
}
