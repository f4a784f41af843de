package callsite

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/symbol"
	"github.com/twtrace/twtrace/pkg/tracer"
)

// stacks is a StackReader of stacks this test took itself (the kernel's
// walk is tested in pkg/tracer): what Sites makes of them is tested here.
type stacks map[uint64]tracer.Stack

func (s stacks) Stack(id uint64) (tracer.Stack, error) {
	st, ok := s[id]
	if !ok {
		return tracer.Stack{}, tracer.ErrNoStack
	}
	return st, nil
}

// dialStack is the stack of this goroutine inside callsiteDial, as the
// kernel would walk it: the return addresses, innermost first.
func dialStack() []uint64 {
	pc := make([]uintptr, 32)
	n := runtime.Callers(2, pc) // from dialStack's caller
	out := make([]uint64, n)
	for i := range n {
		out[i] = uint64(pc[i])
	}
	// Frame 0 is where the thread entered the kernel: as the kernel
	// gives it, the address after the syscall instruction, which
	// Resolve looks up one byte earlier like a return address.
	return out
}

//go:noinline
func callsiteDial() []uint64 {
	return dialStack() // the call site
}

func TestSitesNameAndFold(t *testing.T) {
	st := callsiteDial()
	pid := uint32(os.Getpid())
	// The same stack under two ids (as two processes of one program
	// with different layouts would give): one site.
	src := stacks{1: {PID: pid, IPs: st}, 2: {PID: pid, IPs: st}}
	s := New(src, symbol.NewResolver(4))
	e := event.Event{Kind: event.KindStack, PID: pid, Stack: 1}
	s.Learn(&e)
	if got := s.Canonical(1, pid); got != 1 {
		t.Fatalf("canonical of 1 = %d, want 1", got)
	}
	if got := s.Canonical(2, pid); got != 1 {
		t.Errorf("canonical of 2 = %d, want 1 (the same site)", got)
	}
	site := s.Site(1)
	if site == nil || !site.Known || !strings.Contains(site.String(), "callsite.callsiteDial (") {
		t.Fatalf("site %+v: want callsiteDial", site)
	}
	if st := s.Stats(); st.Stacks != 2 || st.Sites != 1 || st.Unresolved != 0 || st.Dropped != 0 {
		t.Errorf("stats %+v, want 2 stacks, 1 site", st)
	}
	if s.Canonical(0, pid) != 0 {
		t.Error("stack 0 is no stack")
	}
}

// A stack the kernel no longer has, and one whose process is gone with
// nothing to place its executable: no site, a note, counted.
func TestSitesUnresolved(t *testing.T) {
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Skip(err)
	}
	gone := uint32(cmd.Process.Pid)
	src := stacks{7: {PID: gone, IPs: []uint64{0x401000, 0x402000}}}
	s := New(src, symbol.NewResolver(4))
	if got := s.Canonical(7, gone); got != 7 {
		t.Fatalf("canonical %d, want 7", got)
	}
	if site := s.Site(7); site.Known || site.Note != "process gone before its stack was read" {
		t.Errorf("site %+v, want the note", site)
	}
	s.Canonical(9, gone)
	if site := s.Site(9); site.Known || site.Note != "stack not kept by the kernel" {
		t.Errorf("site %+v, want the note", site)
	}
	if st := s.Stats(); st.Unresolved != 2 {
		t.Errorf("stats %+v, want 2 unresolved", st)
	}
}

// A walk that never left the syscall wrapper is unavailable, said so
// even when its process is gone (nothing is left to name it) and not
// counted as unresolved: reading its process would not have helped.
func TestSitesUnavailableOfAGoneProcess(t *testing.T) {
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Skip(err)
	}
	gone := uint32(cmd.Process.Pid)
	s := New(stacks{7: {PID: gone, IPs: []uint64{0x7f0000001000}, Ret: 0x401000}}, symbol.NewResolver(4))
	s.Canonical(7, gone)
	if site := s.Site(7); site.Known || site.Note != "stack unavailable (no frame pointers?)" || site.Executable != "" {
		t.Errorf("site %+v, want unavailable, no executable known", site)
	}
	if st := s.Stats(); st.Unresolved != 0 {
		t.Errorf("stats %+v, want none unresolved", st)
	}
}

// Past the bound, stacks are counted, not kept.
func TestSitesBound(t *testing.T) {
	pid := uint32(os.Getpid())
	st := callsiteDial()
	s := New(stacks{1: {PID: pid, IPs: st}, 2: {PID: pid, IPs: st}}, symbol.NewResolver(4))
	s.max = 1
	s.Canonical(1, pid)
	if got := s.Canonical(2, pid); got != 2 || s.Site(2) != nil {
		t.Errorf("canonical %d, site %+v: want 2 as it is, no site", got, s.Site(2))
	}
	if st := s.Stats(); st.Dropped != 1 {
		t.Errorf("stats %+v, want 1 dropped", st)
	}
}

// codeRange is this process's start_code and end_code (/proc/self/stat
// fields 26 and 27), as the kernel records them with a stack.
func codeRange(t *testing.T) (uint64, uint64) {
	raw, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the comm's closing parenthesis start at field 3.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	start, err1 := strconv.ParseUint(f[26-3], 10, 64)
	end, err2 := strconv.ParseUint(f[27-3], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("start_code %q, end_code %q", f[26-3], f[27-3])
	}
	return start, end
}

// A process gone before its stack was read is named through its
// executable, placed by the start_code the kernel recorded, read from
// another process running the same executable (here: this test, whose
// binary the gone child ran).
func TestSitesPlaceGoneProcess(t *testing.T) {
	child := exec.Command(os.Args[0], "-test.run=^$")
	if err := child.Run(); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		t.Fatal(err)
	}
	start, end := codeRange(t)
	gone := uint32(child.Process.Pid)
	src := stacks{3: {PID: gone, IPs: callsiteDial(), StartCode: start, EndCode: end,
		ExeDev: unix.Major(st.Dev)<<20 | unix.Minor(st.Dev), ExeIno: st.Ino}}
	s := New(src, symbol.NewResolver(4))
	s.Canonical(3, gone)
	site := s.Site(3)
	if site == nil || !site.Known || !strings.Contains(site.String(), "callsite.callsiteDial (") {
		t.Fatalf("site %+v: want callsiteDial, placed by start_code", site)
	}
	if st := s.Stats(); st.Unresolved != 0 {
		t.Errorf("stats %+v, want none unresolved", st)
	}
}

// wrapperStack is what the kernel sees in a frameless syscall wrapper
// called by hiddenCaller: the walk's frames from outerCaller outwards, and
// ret, the return address into hiddenCaller at the stack pointer.
//
//go:noinline
func wrapperStack() (ret uint64, walk []uint64) {
	pc := make([]uintptr, 32)
	n := runtime.Callers(2, pc) // from hiddenCaller
	for i := 1; i < n; i++ {
		walk = append(walk, uint64(pc[i]))
	}
	return uint64(pc[0]), walk
}

//go:noinline
func hiddenCaller() (uint64, []uint64) {
	return wrapperStack() // the call site the wrapper hides
}

//go:noinline
func outerCaller() (uint64, []uint64) {
	return hiddenCaller()
}

// syscallFrame stands for frame 0, inside the wrapper: an address in the
// runtime, which CallSite skips.
func syscallFrame() uint64 { return uint64(reflect.ValueOf(runtime.Gosched).Pointer()) + 1 }

// The frame a frameless wrapper hides is put back from Ret, when Ret is a
// return address and the walk left the wrapper; otherwise never.
func TestSitesPutBackTheHiddenCaller(t *testing.T) {
	ret, walk := outerCaller()
	pid := uint32(os.Getpid())
	ips := append([]uint64{syscallFrame()}, walk...)
	entry := uint64(reflect.ValueOf(hiddenCaller).Pointer())
	exe, _ := os.Executable()
	unavailable := "stack unavailable (no frame pointers?) in executable " + filepath.Base(exe)
	for _, c := range []struct {
		name  string
		stack tracer.Stack
		site  string // function the site names, "" for none
		ret   bool   // Ret is frame 1
		note  string
	}{
		{"a return address", tracer.Stack{PID: pid, IPs: ips, Ret: ret}, "callsite.hiddenCaller", true, ""},
		{"no Ret (before 5.15)", tracer.Stack{PID: pid, IPs: ips}, "callsite.outerCaller", false, ""},
		{"Ret already frame 1", tracer.Stack{PID: pid, IPs: ips, Ret: ips[1]}, "callsite.outerCaller", false, ""},
		{"Ret a function's entry", tracer.Stack{PID: pid, IPs: ips, Ret: entry}, "callsite.outerCaller", false, ""},
		{"Ret not code", tracer.Stack{PID: pid, IPs: ips, Ret: uint64(reflect.ValueOf(&ips).Pointer())}, "callsite.outerCaller", false, ""},
		{"no walk past the wrapper", tracer.Stack{PID: pid, IPs: ips[:1], Ret: ret}, "", false, unavailable},
	} {
		s := New(stacks{1: c.stack}, symbol.NewResolver(4))
		s.Canonical(1, pid)
		site := s.Site(1)
		if c.site == "" {
			if site.Known || site.Note != c.note || len(site.Frames) != 1 || site.Executable != filepath.Base(exe) {
				t.Errorf("%s: site %+v, want none, the note %q and frame 0 alone", c.name, site, c.note)
			}
			continue
		}
		if !site.Known || !strings.HasSuffix(site.Frame.Function, c.site) || site.Note != "" {
			t.Errorf("%s: site %q (%s), want %s", c.name, site, site.Note, c.site)
		}
		if got := len(site.Frames) > 1 && site.Frames[1].Address == ret; got != c.ret {
			t.Errorf("%s: Ret is frame 1: %v, want %v (%v)", c.name, got, c.ret, site.Frames)
		}
	}
}

// Without a return address put back, the walk's first frame past libc's
// connect() is the caller of the function that called connect(): never
// named as the call site. Further out (past a library), or above Go's
// own wrapper, the site stands.
func TestCallerOfHidden(t *testing.T) {
	connect := symbol.Frame{Function: "__connect", Module: "libc.so.6", Address: 0x7f00000107c0}
	mainFrame := symbol.Frame{Function: "main", File: "a.c", Line: 9, Module: "a", Address: 0x401200}
	curl := symbol.Frame{Function: "Curl_connect", Module: "libcurl.so.4", Address: 0x7f0000201000}
	goWrapper := symbol.Frame{Function: "internal/runtime/syscall/linux.Syscall6", Module: "app", Address: 0x402000}
	goCaller := symbol.Frame{Function: "main.openPerRequest", File: "m.go", Line: 5, Module: "app", Address: 0x403000}
	for _, c := range []struct {
		name   string
		frames []symbol.Frame
		site   symbol.Frame
		hidden bool
	}{
		{"C: frame 1 past libc", []symbol.Frame{connect, mainFrame}, mainFrame, true},
		{"C: past libcurl", []symbol.Frame{connect, curl, mainFrame}, mainFrame, false},
		{"Go: frame 0 not in libc", []symbol.Frame{goWrapper, goCaller}, goCaller, false},
		{"frame 0 alone", []symbol.Frame{connect}, connect, false},
	} {
		if got := callerOfHidden(c.frames, c.site); got != c.hidden {
			t.Errorf("%s: hidden %v, want %v", c.name, got, c.hidden)
		}
	}
}

// prober records what Sites asks of the net/http uprobes.
type prober struct {
	stacks
	attached []string // key path queue dial
}

func (p *prober) GoHTTPSupported() error { return nil }

func (p *prober) AttachGoHTTP(key, path string, queue, dial uint64) error {
	p.attached = append(p.attached, fmt.Sprintf("%s %s %#x %#x", key, path, queue, dial))
	return nil
}

// httpDialStack is this process's stack inside net/http's dial goroutine
// (a DialContext of the transport's), as the kernel walks a connect():
// through (*Transport).dialConnFor.
func httpDialStack(t *testing.T) []uint64 {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	var st []uint64
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		st = dialStack()
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return st
}

// exeOf is this test binary's identity as the kernel records it.
func exeOf(t *testing.T) (dev uint32, ino uint64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		t.Fatal(err)
	}
	return unix.Major(st.Dev)<<20 | unix.Minor(st.Dev), st.Ino
}

// A pair (gohttp.h): a connect() in net/http's dial goroutine and the
// stack of the goroutine that queued the dial. Its site is the caller's
// first frame outside the runtime and net/http, its library net/http, its
// frames the caller's. Learning the dial goroutine's own stack has the
// executable probed, once, at the offsets of its queueForDial and
// dialConnFor.
func TestSitesGoHTTPPair(t *testing.T) {
	pid := uint32(os.Getpid())
	dev, ino := exeOf(t)
	own := tracer.Stack{PID: pid, IPs: httpDialStack(t), ExeDev: dev, ExeIno: ino}
	p := &prober{stacks: stacks{
		1: own,
		2: {PID: pid, IPs: callsiteDial()},
		3: {PID: pid, Own: 1, Caller: 2},
		4: own, // another dial goroutine's stack, of the same executable
	}}
	s := New(p, symbol.NewResolver(4))
	if err := s.ProbeGoHTTP(); err != nil {
		t.Fatal(err)
	}
	s.Learn(&event.Event{Kind: event.KindStack, PID: pid, Stack: 3})
	site := s.Site(s.Canonical(3, pid))
	if site == nil || !site.Known || site.Library != "net/http" || !strings.Contains(site.String(), "callsite.callsiteDial (") ||
		len(site.Frames) == 0 || site.Frames[0].Function != site.Frame.Function {
		t.Fatalf("pair's site %+v: want callsiteDial's, via net/http, with the caller's frames", site)
	}
	// Alone, the dial goroutine's stack names the transport's dialler,
	// the application's DialContext here.
	if ownSite := s.Site(s.Canonical(1, pid)); ownSite == nil || ownSite.Library != "net/http" ||
		!strings.Contains(ownSite.String(), "callsite.httpDialStack.func") {
		t.Errorf("the dial goroutine's own site %+v: want the DialContext's", ownSite)
	}
	s.Canonical(4, pid)
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bin, err := symbol.OpenBinary(f)
	if err != nil {
		t.Fatal(err)
	}
	queue, _ := bin.GoFuncOffset(tracer.GoHTTPQueue)
	dial, _ := bin.GoFuncOffset(tracer.GoHTTPDial)
	exe := symbol.FileID{Dev: symbol.KernelDev(dev), Inode: ino}
	want := []string{fmt.Sprintf("%v /proc/self/fd/", exe)}
	if len(p.attached) != 1 || !strings.HasPrefix(p.attached[0], want[0]) ||
		!strings.HasSuffix(p.attached[0], fmt.Sprintf(" %#x %#x", queue, dial)) || queue == 0 || dial == 0 {
		t.Errorf("attached %q; want once, %q…, at %#x and %#x", p.attached, want[0], queue, dial)
	}
	if st := s.Stats(); st.GoHTTP != 1 || st.GoHTTPRefused != 0 {
		t.Errorf("stats %+v: want one executable probed", st)
	}
}

// A pair whose connect() is not in net/http's dial goroutine (a
// goroutine that reused a dialler's g, and with it a caller left
// behind): the caller is not trusted, the connect()'s own site stands.
func TestSitesPairNeedsTheDialGoroutine(t *testing.T) {
	pid := uint32(os.Getpid())
	s := New(stacks{
		1: {PID: pid, IPs: callsiteDial()},
		2: {PID: pid, IPs: httpDialStack(t)},
		3: {PID: pid, Own: 1, Caller: 2},
	}, symbol.NewResolver(4))
	site := s.Site(s.Canonical(3, pid))
	if site == nil || !site.Known || site.Library != "" || !strings.Contains(site.String(), "callsite.callsiteDial (") {
		t.Fatalf("site %+v: want the connect()'s own, callsiteDial", site)
	}
}

// A pair whose own stack's process was gone is retried with it, and
// counted once among the unresolved, in its own stack: read after all
// through another process of the executable, the count goes back to 0.
func TestSitesPairRetriedCountsOnce(t *testing.T) {
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Skip(err)
	}
	gone, self := uint32(cmd.Process.Pid), uint32(os.Getpid())
	s := New(stacks{
		1: {PID: gone, IPs: callsiteDial()},
		2: {PID: self, IPs: callsiteDial()},
		3: {PID: gone, Own: 1, Caller: 2},
	}, symbol.NewResolver(4))
	s.Canonical(3, gone)
	if st := s.Stats(); st.Unresolved != 1 {
		t.Fatalf("stats %+v: want the own stack unresolved, once", st)
	}
	site := s.Site(s.Canonical(3, self)) // this process runs the same executable
	if site == nil || !site.Known || !strings.Contains(site.String(), "callsite.callsiteDial (") {
		t.Errorf("site %+v after the retry: want callsiteDial", site)
	}
	if st := s.Stats(); st.Unresolved != 0 {
		t.Errorf("stats %+v: want none unresolved after the retry", st)
	}
}
