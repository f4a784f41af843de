package symbol

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// here returns the stack of its caller, frame 0 being the return address
// in the caller, and the caller's file and line of the call to here.
//
//go:noinline
func here() (addrs []uint64, file string, line int) {
	pcs := make([]uintptr, 32)
	n := runtime.Callers(2, pcs)
	_, file, line, _ = runtime.Caller(1)
	for _, pc := range pcs[:n] {
		addrs = append(addrs, uint64(pc))
	}
	return addrs, file, line
}

func TestResolveNamesThisTestsLine(t *testing.T) {
	addrs, file, line := here()

	r := NewResolver(DefaultCacheSize)
	snap, err := r.Snapshot(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	frames := r.Resolve(snap, addrs)
	if len(frames) != len(addrs) {
		t.Fatalf("%d frames of %d addresses: %v", len(frames), len(addrs), frames)
	}
	got := frames[0]
	want := "github.com/twtrace/twtrace/pkg/symbol.TestResolveNamesThisTestsLine"
	if got.Function != want || got.File != file || got.Line != line {
		t.Errorf("frame 0 = %s:%d %s, want %s:%d %s", got.File, got.Line, got.Function, file, line, want)
	}
	exe, _ := os.Executable()
	if got.Module != filepath.Base(exe) || got.Address != addrs[0] || got.FileAddress == 0 {
		t.Errorf("frame 0 = module %q address %#x file address %#x, want module %q address %#x",
			got.Module, got.Address, got.FileAddress, filepath.Base(exe), addrs[0])
	}
	// The frame above is testing.tRunner, which called this test.
	if frames[1].Function != "testing.tRunner" {
		t.Errorf("frame 1 = %v, want testing.tRunner", frames[1])
	}
	if s := r.Stats(); s.Loaded == 0 || s.Evicted != 0 {
		t.Errorf("stats %+v: want binaries loaded, none evicted", s)
	}
}

func BenchmarkResolve(b *testing.B) {
	addrs, _, _ := here()
	r := NewResolver(DefaultCacheSize)
	snap, err := r.Snapshot(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r.Resolve(snap, addrs)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(addrs)), "ns/frame")
}

// A frame-pointer walk that leaves the mapped code has followed something
// that was not a frame: the stack is cut there, never resolved past it.
func TestResolveStopsAtTheFirstUntrustedAddress(t *testing.T) {
	snap := &Snapshot{complete: true, regions: []region{
		{Mapping: Mapping{Start: 0x1000, End: 0x2000, Path: "/usr/lib/libc.so.6"}, module: "libc.so.6"},
		{Mapping: Mapping{Start: 0x5000, End: 0x6000, Path: "/app"}, module: "app"},
	}}
	r := NewResolver(1)
	frames := r.Resolve(snap, []uint64{0x1800, 0x5100, 0x3000, 0x5200})
	want := []Frame{{Module: "libc.so.6", Address: 0x1800}, {Module: "app", Address: 0x5100}}
	if len(frames) != len(want) || frames[0] != want[0] || frames[1] != want[1] {
		t.Errorf("frames %+v, want %+v", frames, want)
	}
	if frames := r.Resolve(snap, []uint64{0x3000, 0x5100}); len(frames) != 0 || Available(frames) {
		t.Errorf("frame 0 outside the code: frames %+v, want none (unavailable)", frames)
	}
	// A snapshot of an exited process knows only its executable: other
	// addresses stay, bare.
	exited := &Snapshot{regions: snap.regions[1:]}
	frames = r.Resolve(exited, []uint64{0x1800, 0x5100})
	if len(frames) != 2 || frames[0] != (Frame{Address: 0x1800}) || frames[1].Module != "app" {
		t.Errorf("exited: frames %+v", frames)
	}
}

// dialStack dials with d and returns the stack of the goroutine that
// made the socket as runtime.Callers gives it: Control runs in that
// goroutine just before connect(), and its own frame is left out.
func dialStack(t *testing.T, dial func(d *net.Dialer) error) []uintptr {
	t.Helper()
	var pcs []uintptr
	d := &net.Dialer{Control: func(string, string, syscall.RawConn) error {
		pcs = make([]uintptr, 64)
		pcs = pcs[:runtime.Callers(2, pcs)]
		return nil
	}}
	if err := dial(d); err != nil {
		t.Fatal(err)
	}
	return pcs
}

// physical turns runtime.Callers' PCs into the return addresses a
// frame-pointer walk (BPF's) finds: Callers adds one made-up PC per
// inlined call, after the real one, so for an address that resolves to
// n frames the next n-1 PCs are dropped. (Were n wrong, the frames would
// not match the runtime's; TestResolveMatchesTheRuntime checks.)
func physical(t *testing.T, pcs []uintptr) []uint64 {
	var addrs []uint64
	for i := 0; i < len(pcs); {
		addrs = append(addrs, uint64(pcs[i]))
		i += max(len(resolveOwn(t, []uint64{uint64(pcs[i])})), 1)
	}
	return addrs
}

func listen(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				// Answer one HTTP request, whatever it is, and close.
				buf := make([]byte, 4096)
				_, _ = c.Read(buf)
				_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

func resolveOwn(t *testing.T, addrs []uint64) []Frame {
	t.Helper()
	r := NewResolver(DefaultCacheSize)
	snap, err := r.Snapshot(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	return r.Resolve(snap, addrs)
}

// A synchronous dial: the call site is the test's own line that dialed,
// past net's and the runtime's frames.
func TestCallSiteOfASynchronousDial(t *testing.T) {
	server := listen(t)
	var line int
	addrs := physical(t, dialStack(t, func(d *net.Dialer) error {
		_, _, line, _ = runtime.Caller(0)
		c, err := d.Dial("tcp", server) // the call site: one line below Caller
		if err == nil {
			c.Close()
		}
		return err
	}))
	frames := resolveOwn(t, addrs)
	site, lib, ok := CallSite(frames)
	_, file, _, _ := runtime.Caller(0)
	want := "github.com/twtrace/twtrace/pkg/symbol.TestCallSiteOfASynchronousDial.func1"
	if !ok || site.Function != want || site.File != file || site.Line != line+1 || lib != "" {
		t.Errorf("call site %v, library %q; want %s (%s:%d), no library\nstack: %v", site, lib, want, file, line+1, frames)
	}
}

// net/http dials in a goroutine of its own: the site is net/http's frame
// and the library is named.
func TestCallSiteOfNetHTTP(t *testing.T) {
	server := listen(t)
	addrs := physical(t, dialStack(t, func(d *net.Dialer) error {
		client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
		resp, err := client.Get("http://" + server + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}))
	frames := resolveOwn(t, addrs)
	site, lib, ok := CallSite(frames)
	if !ok || site.Function != "net/http.(*Transport).dial" || lib != "net/http" {
		t.Errorf("call site %v, library %q; want net/http.(*Transport).dial, net/http\nstack: %v", site, lib, frames)
	}
}

// The runtime's own symbolization (runtime.CallersFrames, which expands
// inlined calls) is the ground truth for the test binary's stacks: every
// frame matches it, net.Dial's inlined frames included.
func TestResolveMatchesTheRuntime(t *testing.T) {
	server := listen(t)
	for name, dial := range map[string]func(d *net.Dialer) error{
		"dial": func(d *net.Dialer) error {
			c, err := d.Dial("tcp", server)
			if err == nil {
				c.Close()
			}
			return err
		},
		"net/http": func(d *net.Dialer) error {
			client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
			resp, err := client.Get("http://" + server + "/")
			if err == nil {
				resp.Body.Close()
			}
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			pcs := dialStack(t, dial)
			addrs := physical(t, pcs)
			if len(addrs) == len(pcs) {
				t.Errorf("no inlined call in the stack: %d addresses", len(addrs))
			}
			var want []string
			frames := runtime.CallersFrames(pcs)
			for {
				f, more := frames.Next()
				want = append(want, fmt.Sprintf("%s %s:%d", f.Function, f.File, f.Line))
				if !more {
					break
				}
			}
			var got []string
			for _, f := range resolveOwn(t, addrs) {
				got = append(got, fmt.Sprintf("%s %s:%d", f.Function, f.File, f.Line))
			}
			if !slices.Equal(got, want) {
				t.Errorf("frames:\n%s\nwant (runtime.CallersFrames):\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// A path is trusted only while it is still the file that was mapped: a
// binary replaced since (a new inode) is refused, not symbolized with.
func TestOpenCheckedRefusesAReplacedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "prog")
	if err := os.WriteFile(path, []byte("first build"), 0o755); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	mapped := FileID{Dev: sys.Dev, Inode: sys.Ino}
	f, err := openChecked(path, mapped)
	if err != nil {
		t.Fatalf("the mapped file itself: %v", err)
	}
	f.Close()

	replacement := path + ".new"
	if err := os.WriteFile(replacement, []byte("second build"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(replacement, path); err != nil {
		t.Fatal(err)
	}
	if f, err := openChecked(path, mapped); err == nil {
		f.Close()
		t.Error("a replaced file was opened as the mapped one")
	}
	if _, err := NewResolver(1).ExeSnapshot(1, mapped, path, 0x401000, 0x402000); err == nil {
		t.Error("ExeSnapshot used a replaced executable")
	}
}

//go:noinline
func entryTarget() int { return 42 }

// A uprobe's stack starts at a function's entry: ResolveFromEntry names
// that function (Resolve, which takes every address for a return
// address, would name whatever precedes it). GoFuncOffset is where that
// entry is in the file: the bytes there are the code the process runs.
func TestFunctionEntries(t *testing.T) {
	fn := runtime.FuncForPC(reflect.ValueOf(entryTarget).Pointer())
	entry := uint64(fn.Entry())
	r := NewResolver(DefaultCacheSize)
	snap, err := r.Snapshot(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if f := r.ResolveFromEntry(snap, []uint64{entry}); len(f) != 1 || f[0].Function != fn.Name() || f[0].Address != entry {
		t.Errorf("ResolveFromEntry(%#x) = %+v, want %s", entry, f, fn.Name())
	}
	if f := r.Resolve(snap, []uint64{entry}); len(f) == 1 && f[0].Function == fn.Name() {
		t.Errorf("Resolve(%#x) = %+v: the entry taken for a return address lies before the function", entry, f)
	}
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bin, err := OpenBinary(f)
	if err != nil {
		t.Fatal(err)
	}
	if bin.GoVersion != runtime.Version() {
		t.Errorf("GoVersion %q, want %q", bin.GoVersion, runtime.Version())
	}
	off, ok := bin.GoFuncOffset(fn.Name())
	if !ok {
		t.Fatalf("no offset for %s", fn.Name())
	}
	inFile := make([]byte, 16)
	if _, err := f.ReadAt(inFile, int64(off)); err != nil {
		t.Fatal(err)
	}
	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	inMemory := make([]byte, 16)
	if _, err := mem.ReadAt(inMemory, int64(entry)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(inFile, inMemory) {
		t.Errorf("file bytes at %#x = % x, code at %#x = % x", off, inFile, entry, inMemory)
	}
	if _, ok := bin.GoFuncOffset("main.noSuchFunction"); ok {
		t.Error("an offset for a function that is not there")
	}
}
