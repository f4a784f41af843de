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
