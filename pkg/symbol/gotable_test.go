package symbol

import (
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
)

// goTable against debug/gosym, the standard library's reader, on every
// function of real Go binaries: this test's own (Go 1.20+ layout, with
// symbols), a stripped PIE linked externally, and Debian's prometheus
// (Go 1.19: the Go 1.18 layout, stripped) and containerd. For each
// function, at its entry, its second byte, its middle and its last byte:
// the same function, file and line (goTable's innermost location, where
// gosym does not expand inlined calls, and its outermost function), and
// the entry by name. (The arm64 test binary's marker go:textfipsstart
// has no tables: there gosym reads a file and line out of nothing.)
func TestGoTableMatchesGosym(t *testing.T) {
	t.Run("test binary", func(t *testing.T) {
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		matchGosym(t, exe)
	})
	t.Run("stripped pie external", func(t *testing.T) {
		gobin := requireHost(t, "go", "gcc")[0]
		exe := filepath.Join(t.TempDir(), "goopen")
		build(t, "../../internal/testprog/goopen", gobin, "build", "-buildmode=pie",
			"-ldflags=-s -w -linkmode=external", "-o", exe, ".")
		matchGosym(t, exe)
	})
	for _, name := range []string{"prometheus", "containerd"} {
		t.Run(name, func(t *testing.T) { matchGosym(t, requireHost(t, name)[0]) })
	}
}

func matchGosym(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := OpenBinary(f)
	if err != nil {
		t.Fatal(err)
	}
	if b.goTab == nil {
		t.Fatalf("%s: no Go table read", path)
	}
	st, _ := f.Stat()
	ef, err := elf.NewFile(f)
	if err != nil {
		t.Fatal(err)
	}
	pcln, _ := pclntab(ef, st.Size())
	ref := newGoSymTable(pcln, b.goTab.text)
	if ref == nil || len(ref.Funcs) != b.goTab.nfunc {
		t.Fatalf("%s: gosym read %v functions, goTable %d", path, ref != nil, b.goTab.nfunc)
	}
	checked, inlined, untabled := 0, 0, 0
	for i, fn := range ref.Funcs {
		for _, pc := range []uint64{fn.Entry, fn.Entry + 1, (fn.Entry + fn.End) / 2, fn.End - 1} {
			if pc >= fn.End {
				continue
			}
			file, line, _ := ref.PCToLine(pc)
			// A function with no file or line table (offset 0: markers
			// such as go:textfipsstart) has none, as the runtime says;
			// gosym decodes the pc-value bytes at offset 0 regardless.
			if fn, _, ok := b.goTab.funcAt(pc); ok && (b.goTab.u32(fn, 20) == 0 || b.goTab.u32(fn, 24) == 0) {
				file, line = "", 0
				untabled++
			}
			locs := b.goTab.lookup(pc)
			if len(locs) == 0 {
				t.Fatalf("%s: %#x (%s): no location, gosym says %s:%d", path, pc, fn.Name, file, line)
			}
			if got := locs[len(locs)-1].Function; got != fn.Name || locs[0].File != file || locs[0].Line != max(line, 0) {
				t.Fatalf("%s: %#x: %s %s:%d, gosym says %s %s:%d", path, pc, got, locs[0].File, locs[0].Line, fn.Name, file, line)
			}
			checked++
			if len(locs) > 1 {
				inlined++
			}
		}
		if i%97 == 0 {
			if entry, ok := b.goTab.entryOf(fn.Name); !ok || entry != ref.LookupFunc(fn.Name).Entry {
				t.Fatalf("%s: entry of %s: %#x %v, gosym says %#x", path, fn.Name, entry, ok, ref.LookupFunc(fn.Name).Entry)
			}
		}
	}
	t.Logf("%s: %d functions, %d addresses alike (%d in inlined calls, %d in functions without tables)", filepath.Base(path), len(ref.Funcs), checked, inlined, untabled)
}

// tinyPclntab builds a pclntab by hand, in the layout of magic (Go 1.18
// or 1.20): main.a at text+0 (a.go:10, then :12 from +0x10), main.b at
// text+0x20 (a.go:20), text ending at +0x40.
func tinyPclntab(magic uint32) []byte {
	le := binary.LittleEndian
	fixed := 40
	if magic == go120Magic {
		fixed = 44
	}
	zz := func(d int) uint64 { // zig-zag
		if d < 0 {
			return uint64(-d)<<1 - 1
		}
		return uint64(d) << 1
	}
	var pctab []byte
	table := func(pairs ...int) uint32 { // value, pc delta, ...
		off := uint32(len(pctab))
		val := -1
		for i := 0; i < len(pairs); i += 2 {
			pctab = binary.AppendUvarint(pctab, zz(pairs[i]-val))
			pctab = binary.AppendUvarint(pctab, uint64(pairs[i+1]))
			val = pairs[i]
		}
		pctab = append(pctab, 0)
		return off
	}
	pctab = append(pctab, 0) // offset 0 is no table
	lineA, fileA := table(10, 0x10, 12, 0x10), table(0, 0x20)
	lineB, fileB := table(20, 0x20), table(0, 0x20)
	names := []byte("main.a\x00main.b\x00")
	cutab := le.AppendUint32(nil, 0)
	filetab := []byte("a.go\x00")
	fn := func(entry, name, pcfile, pcln uint32) []byte {
		b := make([]byte, fixed)
		le.PutUint32(b[0:], entry)
		le.PutUint32(b[4:], name)
		le.PutUint32(b[20:], pcfile)
		le.PutUint32(b[24:], pcln)
		return b
	}
	functab := make([]byte, 3*8)
	fa, fb := fn(0, 0, fileA, lineA), fn(0x20, 7, fileB, lineB)
	for i, e := range []struct{ entry, off uint32 }{{0, 24}, {0x20, uint32(24 + fixed)}, {0x40, 0}} {
		le.PutUint32(functab[i*8:], e.entry)
		le.PutUint32(functab[i*8+4:], e.off)
	}
	functab = append(append(functab, fa...), fb...)
	out := make([]byte, 8+8*8)
	le.PutUint32(out, magic)
	out[6], out[7] = 1, 8
	word := func(i int, v int) { le.PutUint64(out[8+i*8:], uint64(v)) }
	word(0, 2)
	word(1, 1)
	for i, part := range [][]byte{names, cutab, filetab, pctab, functab} {
		for len(out)%8 != 0 {
			out = append(out, 0)
		}
		word(3+i, len(out))
		out = append(out, part...)
	}
	return out
}

// The table's rules, exactly, in both layouts: an address finds the
// function whose entry is the last at or below it, its file and line
// from its pc-value tables; none below the first entry or from the
// text's end; an entry by name.
func TestGoTableLookup(t *testing.T) {
	for _, magic := range []uint32{go118Magic, go120Magic} {
		g := newGoTable(binary.LittleEndian, tinyPclntab(magic), 0x1000)
		if g == nil {
			t.Fatalf("%#x: table refused", magic)
		}
		for _, c := range []struct {
			pc   uint64
			want []Location
		}{
			{0x1000, []Location{{Function: "main.a", File: "a.go", Line: 10}}},
			{0x100f, []Location{{Function: "main.a", File: "a.go", Line: 10}}},
			{0x1010, []Location{{Function: "main.a", File: "a.go", Line: 12}}},
			{0x1020, []Location{{Function: "main.b", File: "a.go", Line: 20}}},
			{0x103f, []Location{{Function: "main.b", File: "a.go", Line: 20}}},
			{0x1040, nil},
			{0xfff, nil},
		} {
			if got := g.lookup(c.pc); !slices.Equal(got, c.want) {
				t.Errorf("%#x: %#x: %+v, want %+v", magic, c.pc, got, c.want)
			}
		}
		if e, ok := g.entryOf("main.b"); !ok || e != 0x1020 {
			t.Errorf("%#x: entry of main.b %#x %v, want 0x1020", magic, e, ok)
		}
		if _, ok := g.entryOf("main"); ok {
			t.Errorf("%#x: a prefix found an entry", magic)
		}
	}
	if newGoTable(binary.LittleEndian, tinyPclntab(0xfffffffa), 0x1000) != nil {
		t.Error("a Go 1.16 table was taken")
	}
}

// goTable reads whatever bytes it is given without a panic: a corrupt
// table gives no location or a wrong one, never a crash (lookup runs
// without the recover Binary.Lookup adds).
func FuzzGoTable(f *testing.F) {
	f.Add(tinyPclntab(go118Magic), uint64(0x1010))
	f.Add(tinyPclntab(go120Magic), uint64(0x1020))
	f.Fuzz(func(t *testing.T, data []byte, pc uint64) {
		g := newGoTable(binary.LittleEndian, data, 0x1000)
		if g == nil {
			return
		}
		g.gofunc = data // inline trees read from anywhere
		for _, at := range []uint64{pc, 0x1000, 0x1010, 0x1020} {
			g.lookup(at)
		}
		g.entryOf("main.b")
		g.firstEntry()
	})
}

// debug/gosym (the anchor) and goTable side by side, on this test's
// binary and on Debian's prometheus and containerd when installed:
// reading the binary (with the heap it keeps, against its footprint),
// reading the table, looking up an address (function, file, line).
func BenchmarkGoTable(b *testing.B) {
	exe, _ := os.Executable()
	for _, path := range []string{exe, "/usr/bin/prometheus", "/usr/bin/containerd"} {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		bin, err := OpenBinary(f)
		st, _ := f.Stat()
		ef, _ := elf.NewFile(f)
		if err != nil || bin.goTab == nil || ef == nil {
			b.Fatalf("%s: no Go table", path)
		}
		pcln, _ := pclntab(ef, st.Size())
		f.Close()
		text := bin.goTab.text
		ref := newGoSymTable(pcln, text)
		var pcs []uint64
		for i := 0; i < len(ref.Funcs); i += len(ref.Funcs)/1000 + 1 {
			pcs = append(pcs, (ref.Funcs[i].Entry+ref.Funcs[i].End)/2)
		}
		name := filepath.Base(path)
		b.Run(name+"/OpenBinary", func(b *testing.B) {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := OpenBinary(f); err != nil {
					b.Fatal(err)
				}
			}
			// The heap one more binary keeps, against its footprint.
			var m0, m1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m0)
			one, _ := OpenBinary(f)
			runtime.GC()
			runtime.ReadMemStats(&m1)
			b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/(1<<20), "kept-MiB")
			b.ReportMetric(float64(one.Footprint())/(1<<20), "footprint-MiB")
			runtime.KeepAlive(one)
		})
		b.Run(name+"/read/gosym", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				newGoSymTable(pcln, text)
			}
		})
		b.Run(name+"/read/goTable", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				newGoTable(ef.ByteOrder, pcln, text)
			}
		})
		b.Run(name+"/lookup/gosym", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				pc := pcs[i%len(pcs)]
				_ = ref.PCToFunc(pc).Name
				ref.PCToLine(pc)
			}
		})
		b.Run(name+"/lookup/goTable", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				bin.goTab.lookup(pcs[i%len(pcs)])
			}
		})
	}
}
