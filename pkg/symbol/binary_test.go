package symbol

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// tinyELF builds a 64-bit ELF executable by hand: one R+X PT_LOAD at
// 0x400000 holding the whole file, a build-id note, and a .symtab whose
// functions test the symbol rules (a size of 0 ends at the next symbol,
// or at the segment's end for the last one).
func tinyELF(t testing.TB) []byte {
	const (
		base     = 0x400000
		phOff    = 64
		noteOff  = phOff + 2*56
		textOff  = 0x100
		textSize = 0x100
	)
	type sym struct {
		name       string
		addr, size uint64
		typ        elf.SymType
	}
	syms := []sym{
		{"alpha", base + 0x100, 0x20, elf.STT_FUNC},
		{"beta", base + 0x120, 0, elf.STT_FUNC},
		{"gamma", base + 0x140, 0x10, elf.STT_FUNC},
		{"_ZN2ns6Client4openEv", base + 0x160, 0x10, elf.STT_FUNC},
		{"tail", base + 0x180, 0, elf.STT_FUNC},
		{"a_variable", base + 0x1f0, 8, elf.STT_OBJECT},
	}
	var strtab bytes.Buffer
	strtab.WriteByte(0)
	symtab := make([]elf.Sym64, 1, len(syms)+1)
	for _, s := range syms {
		symtab = append(symtab, elf.Sym64{Name: uint32(strtab.Len()),
			Info: elf.ST_INFO(elf.STB_GLOBAL, s.typ), Shndx: 1, Value: s.addr, Size: s.size})
		strtab.WriteString(s.name)
		strtab.WriteByte(0)
	}
	shstrtab := []byte("\x00.text\x00.symtab\x00.strtab\x00.shstrtab\x00")
	symOff := uint64(textOff + textSize)
	strOff := symOff + uint64(len(symtab))*24
	shstrOff := strOff + uint64(strtab.Len())
	shOff := (shstrOff + uint64(len(shstrtab)) + 7) &^ 7

	var b bytes.Buffer
	w := func(v any) {
		if err := binary.Write(&b, binary.LittleEndian, v); err != nil {
			t.Fatal(err)
		}
	}
	pad := func(to uint64) { b.Write(make([]byte, to-uint64(b.Len()))) }
	ident := [16]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)}
	w(elf.Header64{Ident: ident, Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64),
		Version: uint32(elf.EV_CURRENT), Entry: base + textOff, Phoff: phOff, Shoff: shOff,
		Ehsize: 64, Phentsize: 56, Phnum: 2, Shentsize: 64, Shnum: 5, Shstrndx: 4})
	w(elf.Prog64{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Off: 0, Vaddr: base,
		Paddr: base, Filesz: textOff + textSize, Memsz: textOff + textSize, Align: 0x1000})
	w(elf.Prog64{Type: uint32(elf.PT_NOTE), Flags: uint32(elf.PF_R), Off: noteOff, Vaddr: base + noteOff,
		Filesz: 24, Memsz: 24, Align: 4})
	w([]uint32{4, 8, 3})
	b.WriteString("GNU\x00")
	b.Write([]byte{0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04})
	pad(textOff)
	b.Write(bytes.Repeat([]byte{0xcc}, textSize))
	w(symtab)
	b.Write(strtab.Bytes())
	b.Write(shstrtab)
	pad(shOff)
	w([]elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC | elf.SHF_EXECINSTR),
			Addr: base + textOff, Off: textOff, Size: textSize, Addralign: 16},
		{Name: 7, Type: uint32(elf.SHT_SYMTAB), Off: symOff, Size: uint64(len(symtab)) * 24,
			Link: 3, Info: 1, Addralign: 8, Entsize: 24},
		{Name: 15, Type: uint32(elf.SHT_STRTAB), Off: strOff, Size: uint64(strtab.Len()), Addralign: 1},
		{Name: 23, Type: uint32(elf.SHT_STRTAB), Off: shstrOff, Size: uint64(len(shstrtab)), Addralign: 1},
	})
	return b.Bytes()
}

func TestBinarySymbolRules(t *testing.T) {
	img := tinyELF(t)
	bin, err := NewBinary(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	if bin.BuildID != "deadbeef01020304" {
		t.Errorf("build-id %q, want deadbeef01020304", bin.BuildID)
	}
	for _, c := range []struct {
		vaddr uint64
		want  string // "" when no symbol holds it
	}{
		{0x4000ff, ""},
		{0x400100, "alpha"},
		{0x40011f, "alpha"},
		{0x400120, "beta"}, // size 0: up to gamma
		{0x40013f, "beta"},
		{0x400140, "gamma"},
		{0x400150, ""}, // after gamma's 16 bytes, before the next symbol
		{0x400165, "ns::Client::open()"},
		{0x400180, "tail"}, // size 0 and last: up to the segment's end
		{0x4001ff, "tail"},
		{0x400200, ""},
	} {
		locs := bin.Lookup(c.vaddr)
		var want []Location
		if c.want != "" {
			want = []Location{{Function: c.want}}
		}
		if !slices.Equal(locs, want) {
			t.Errorf("Lookup(%#x) = %+v, want %+v", c.vaddr, locs, want)
		}
	}
	// Mapped as the kernel would, one page at 0x7f0000000000.
	m := Mapping{Start: 0x7f0000000000, End: 0x7f0000001000, Offset: 0}
	if vaddr, ok := bin.FileAddress(m, 0x7f0000000123); !ok || vaddr != 0x400123 {
		t.Errorf("FileAddress = %#x %v, want 0x400123", vaddr, ok)
	}
	if _, ok := bin.FileAddress(m, 0x7f0000000200); ok {
		t.Error("FileAddress past the segment's file size resolved")
	}
	if bias, ok := bin.BiasFromStartCode(0x400000); !ok || bias != 0 {
		t.Errorf("ET_EXEC bias = %#x %v, want 0", bias, ok)
	}
}

func TestNewBinaryRefusesTruncatedAndForeignInput(t *testing.T) {
	img := tinyELF(t)
	for _, n := range []int{0, 4, 63, 64, 100} {
		if _, err := NewBinary(bytes.NewReader(img[:n]), int64(n)); err == nil {
			t.Errorf("first %d bytes: no error", n)
		}
	}
	if _, err := NewBinary(bytes.NewReader([]byte("#!/bin/sh\n")), 10); err == nil {
		t.Error("a shell script read as ELF")
	}
}

func TestResolverCache(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	open := func() (*os.File, error) { return os.Open(exe) }
	r := NewResolver(2)
	first := r.binary(FileID{Dev: 1, Inode: 1}, open)
	if first == nil {
		t.Fatal("test binary not read")
	}
	// The same build-id under two more inodes: shared, not re-read; the
	// third pushes the first out of a cache of 2.
	if r.binary(FileID{Dev: 1, Inode: 2}, open) != first || r.binary(FileID{Dev: 1, Inode: 3}, open) != first {
		t.Error("a file with the same build-id was read again")
	}
	if r.binary(FileID{Dev: 1, Inode: 3}, open) != first {
		t.Error("cached binary not returned")
	}
	failed := r.binary(FileID{Dev: 1, Inode: 4}, func() (*os.File, error) { return nil, errors.New("gone") })
	notELF := r.binary(FileID{Dev: 1, Inode: 5}, func() (*os.File, error) { return os.Open("/proc/self/maps") })
	if failed != nil || notELF != nil {
		t.Error("a failed file gave a binary")
	}
	want := Stats{Hits: 1, Loaded: 1, Shared: 2, Evicted: 2, Failed: 2}
	if got := r.Stats(); got != want {
		t.Errorf("stats %+v, want %+v", got, want)
	}
	// Left: inode 3's binary, once shared by three files, and inode 5's
	// failure.
	if got := r.CachedBytes(); got != first.Footprint() {
		t.Errorf("%d bytes cached, want %d", got, first.Footprint())
	}
}

// The byte bound: over it, the least recently used binaries go, the last
// one read stays whatever its size, and the bytes counted are exactly
// the footprints of the binaries kept.
func TestResolverCacheBytes(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tiny := filepath.Join(t.TempDir(), "tiny")
	if err := os.WriteFile(tiny, tinyELF(t), 0o644); err != nil {
		t.Fatal(err)
	}
	openExe := func() (*os.File, error) { return os.Open(exe) }
	openTiny := func() (*os.File, error) { return os.Open(tiny) }
	r := NewResolver(DefaultCacheSize)
	big := r.binary(FileID{Inode: 1}, openExe)
	small := r.binary(FileID{Inode: 2}, openTiny)
	if big == nil || small == nil {
		t.Fatal("binaries not read")
	}
	st, _ := os.Stat(exe)
	if f := big.Footprint(); f < int64(big.goTab.held) || f > st.Size() || small.Footprint() >= f {
		t.Fatalf("footprints %d (a %d-byte file, %d-byte Go table) and %d", f, st.Size(), big.goTab.held, small.Footprint())
	}
	if got := r.CachedBytes(); got != big.Footprint()+small.Footprint() {
		t.Fatalf("%d bytes cached, want %d", got, big.Footprint()+small.Footprint())
	}
	// Both no longer fit: the next file, which shares small's build-id,
	// evicts big.
	r.SetMaxBytes(big.Footprint())
	if r.binary(FileID{Inode: 3}, openTiny) != small {
		t.Fatal("the same build-id was read again")
	}
	if got := r.CachedBytes(); got != small.Footprint() || r.Stats().Evicted != 1 {
		t.Fatalf("%d bytes cached, %d evicted; want %d (small, once), 1", got, r.Stats().Evicted, small.Footprint())
	}
	// Nothing fits: all but the binary just read go.
	r.SetMaxBytes(1)
	again := r.binary(FileID{Inode: 1}, openExe)
	if again == big {
		t.Fatal("an evicted binary was kept")
	}
	if got := r.CachedBytes(); got != again.Footprint() || r.Stats().Evicted != 3 || r.Stats().Loaded != 3 {
		t.Fatalf("%d bytes cached, stats %+v; want only the binary just read (%d bytes), 3 evicted, 3 loaded", got, r.Stats(), again.Footprint())
	}
}

func FuzzBinary(f *testing.F) {
	img := tinyELF(f)
	f.Add(img)
	f.Add(img[:200])
	if exe, err := os.Executable(); err == nil {
		if data, err := os.ReadFile(exe); err == nil {
			for _, n := range []int{4 << 10, 64 << 10} {
				f.Add(data[:min(n, len(data))])
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		bin, err := NewBinary(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		vaddrs := []uint64{0, 0x400000, 0x400123, 0x401000, 1 << 63}
		for _, s := range bin.loads {
			vaddrs = append(vaddrs, s.vaddr, s.vaddr+s.filesz/2, s.vaddr+s.filesz-1)
		}
		for _, vaddr := range vaddrs {
			bin.Lookup(vaddr)
			bin.FileAddress(Mapping{Start: 0x1000, End: 0x2000}, 0x1800)
		}
		bin.BiasFromStartCode(0x400000)
	})
}
