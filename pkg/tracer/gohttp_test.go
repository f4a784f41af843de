package tracer

import (
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/symbol"
)

// attachSelf puts the net/http uprobes on this test binary, which the
// clients testnet starts run too.
func attachSelf(t testing.TB, tr *Tracer) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bin, err := symbol.OpenBinary(f)
	if err != nil {
		t.Fatal(err)
	}
	queue, ok := bin.GoFuncOffset(GoHTTPQueue)
	dial, ok2 := bin.GoFuncOffset(GoHTTPDial)
	if !ok || !ok2 {
		t.Fatalf("no %s or %s in %s", GoHTTPQueue, GoHTTPDial, exe)
	}
	if err := tr.AttachGoHTTP("self", exe, queue, dial); err != nil {
		t.Fatal(err)
	}
	if err := tr.AttachGoHTTP("self", exe, queue, dial); err != nil || tr.GoHTTPExecutables() != 1 {
		t.Fatalf("attaching again: %v, %d executables; want nil, 1", err, tr.GoHTTPExecutables())
	}
}

// names are the functions of a stack of this binary's, innermost first.
func names(s Stack) string {
	var out []string
	for i, ip := range s.IPs {
		if i > 0 {
			ip-- // a return address: the call is just before it
		}
		out = append(out, funcName(ip))
	}
	return strings.Join(out, " < ")
}

// Go's net/http dials in a goroutine of its own. With the uprobes of
// gohttp.h on the client's executable, every connection it makes (every
// dial's caller sampled: StackSample 1) records a pair of stacks: its
// connect()'s, in net/http's dial goroutine, and the caller's, which
// reaches testnet's worker goroutine, whose get (inlined) called
// http.Client.Do. Before
// 5.15 the kernel cannot read the dialling goroutine at connect(), and the
// tracer says so.
func TestGoHTTPCallerStacks(t *testing.T) {
	requireBPF(t)
	ns := testnet.New(t)
	tr, err := New(Options{Netns: ns.Inode, StackSample: 1})
	if err != nil {
		t.Fatalf("starting tracer: %v", err)
	}
	c := collect(t, tr)
	if err := tr.GoHTTPSupported(); !testnet.KernelAtLeast(5, 15) {
		if err == nil {
			t.Fatal("GoHTTPSupported: nil before 5.15")
		}
		t.Logf("before 5.15, as expected: %v", err)
		return
	} else if err != nil {
		t.Fatalf("GoHTTPSupported: %v", err)
	}
	attachSelf(t, tr)
	srv := testnet.StartHTTPServer(t, ns)
	cl := testnet.StartClient(t, ns, testnet.ClientSpec{Comm: "httpc", Dest: srv.Addr, HTTPGets: 40, HTTPConcurrency: 8})
	tws := c.settle(event.KindTimewait, len(cl.Ports))
	t.Logf("%d connections used", len(cl.Ports))
	var mine int
	pairs := map[uint64]Stack{}
	for _, e := range tws {
		if int(e.PID) != cl.PID {
			continue
		}
		mine++
		s, err := tr.Stack(e.Stack)
		if err != nil || s.Caller == 0 || s.Own == 0 {
			t.Fatalf("timewait of port %d: stack %#x = %+v (%v), want a pair", e.Sport, e.Stack, s, err)
		}
		pairs[e.Stack] = s
	}
	// net/http may dial more connections than requests use (a dial
	// whose request got an idle connection first): at least one each.
	if mine < len(cl.Ports) || mine < 10 {
		t.Fatalf("%d timewait entries of the client, want one per connection (%d used)", mine, len(cl.Ports))
	}
	for id, p := range pairs {
		own, err := tr.Stack(p.Own)
		if err != nil || !strings.Contains(names(own), GoHTTPDial) {
			t.Errorf("pair %#x: own stack %s (%v), want net/http's dial goroutine", id, names(own), err)
		}
		caller, err := tr.Stack(p.Caller)
		if err != nil || !strings.HasPrefix(names(caller), GoHTTPQueue) ||
			!strings.Contains(names(caller), "net/http.(*Client).Do < github.com/twtrace/twtrace/internal/testnet.httpRun.func") {
			t.Errorf("pair %#x: caller's stack %s (%v), want queueForDial, …, Client.Do, testnet's worker", id, names(caller), err)
		}
	}
	if news := c.ofKind(event.KindStack); len(news) < 3 {
		t.Errorf("%d new stacks announced, want at least own, caller and their pair", len(news))
	}
}

// BenchmarkGoHTTPDial is the cost the net/http callers add to a request
// that dials (keep-alive off: a connection per request, the server
// closing first), on this host's loopback (net/http dials in goroutines
// of its own, which a namespace entered by one thread would not hold):
// without twtrace, with the tracer taking stacks as top does (64) and as
// run does (1), each without and with the uprobes on this binary. ns/op
// is one request, dial included.
func BenchmarkGoHTTPDial(b *testing.B) {
	requireBPF(b)
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(make([]byte, 100)) }))
	b.Cleanup(srv.Close)
	for _, c := range []struct {
		name    string
		sample  int
		uprobes bool
	}{
		{"untraced", -1, false},
		{"stacks64", 64, false}, {"stacks64-uprobes", 64, true},
		{"stacks1", 1, false}, {"stacks1-uprobes", 1, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			if c.sample >= 0 {
				tr, err := New(Options{Netns: uint32(st.Ino), StackSample: c.sample, CountConnects: true})
				if err != nil {
					b.Fatal(err)
				}
				go tr.Read(func(*event.Event) {})
				b.Cleanup(func() { tr.Close() })
				if c.uprobes {
					if err := tr.GoHTTPSupported(); err != nil {
						b.Skip(err)
					}
					attachSelf(b, tr)
				}
			}
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			b.ResetTimer()
			for range b.N {
				resp, err := client.Get(srv.URL)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}

//go:noinline
func dialConnForLike(x int) int { return x + 1 }

var sink int

// BenchmarkUprobeHit is one hit of the dial goroutine's uprobe (the
// cheaper of the two: no stack), on a function of this binary's:
// what every new connection of a probed program pays twice, beside the
// same calls unprobed.
func BenchmarkUprobeHit(b *testing.B) {
	requireBPF(b)
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	for _, probed := range []bool{false, true} {
		name := map[bool]string{false: "unprobed", true: "probed"}[probed]
		b.Run(name, func(b *testing.B) {
			if probed {
				tr, err := New(Options{StackSample: 64})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { tr.Close() })
				f, err := os.Open(exe)
				if err != nil {
					b.Fatal(err)
				}
				bin, err := symbol.OpenBinary(f)
				f.Close()
				if err != nil {
					b.Fatal(err)
				}
				off, ok := bin.GoFuncOffset("github.com/twtrace/twtrace/pkg/tracer.dialConnForLike")
				if !ok {
					b.Fatal("no offset for dialConnForLike")
				}
				ex, err := link.OpenExecutable(exe)
				if err != nil {
					b.Fatal(err)
				}
				l, err := ex.Uprobe("dialConnForLike", tr.objs.TwHttpDial, &link.UprobeOptions{Address: off})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { l.Close() })
			}
			for i := range b.N {
				sink = dialConnForLike(i)
			}
		})
	}
}
