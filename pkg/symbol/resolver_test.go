package symbol

import (
	"os"
	"path/filepath"
	"runtime"
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
