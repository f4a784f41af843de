package symbol

import (
	"debug/buildinfo"
	"debug/dwarf"
	"debug/elf"
	"debug/gosym"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/ianlancetaylor/demangle"
)

// maxLineRows bounds the DWARF line rows kept for one binary (16 bytes
// each): a binary with more keeps its symbol names and loses its lines.
const maxLineRows = 4 << 20

// Binary is what one ELF file tells about its code: where its segments
// go, and which function, file and line an address in its own address
// space (its p_vaddr space) belongs to. It is read whole when made and
// holds no file afterwards, so it outlives the file and its process.
type Binary struct {
	// BuildID is the GNU build-id note in hex, "" when the file has none.
	BuildID string
	// GoVersion is the Go release that built a Go binary ("go1.26.8",
	// from its build info), "" when not known or not Go.
	GoVersion string
	machine   elf.Machine
	loads     []segment
	goTab     *goTable     // Go's pclntab (Go 1.18 on), nil for other binaries
	goOld     *gosym.Table // Go's pclntab before Go 1.18
	syms      []elfSymbol  // .symtab and .dynsym functions, sorted by addr
	lines     []lineRow    // DWARF line rows sorted by addr, when present
	files     []string     // lines' file names, by index
	footprint int64        // see Footprint
}

// segment is one PT_LOAD program header.
type segment struct {
	off, filesz, vaddr uint64
	exec               bool
}

type elfSymbol struct {
	addr, end uint64
	name      string // raw; demangled when looked up
}

// lineRow starts a run of addresses on one line; a row with line 0 ends a
// DWARF sequence (the addresses after it have no line).
type lineRow struct {
	addr uint64
	file int32
	line int32
}

// OpenBinary reads the ELF file f (which stays the caller's to close).
func OpenBinary(f *os.File) (*Binary, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading binary: %w", err)
	}
	return NewBinary(f, st.Size())
}

// NewBinary reads an ELF image of size bytes from r. The standard
// library's debug/* packages can panic on corrupt input; such a panic is
// returned as an error. Tables that are missing or unreadable are left
// out: a binary with nothing but program headers still maps addresses to
// its module.
func NewBinary(r io.ReaderAt, size int64) (b *Binary, err error) {
	defer func() {
		if p := recover(); p != nil {
			b, err = nil, fmt.Errorf("reading ELF: corrupt input (%v)", p)
		}
	}()
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("reading ELF: %w", err)
	}
	b = &Binary{machine: f.Machine}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			b.loads = append(b.loads, segment{off: p.Off, filesz: p.Filesz,
				vaddr: p.Vaddr, exec: p.Flags&elf.PF_X != 0})
		}
	}
	if len(b.loads) == 0 {
		return nil, errors.New("reading ELF: no loadable segment")
	}
	b.BuildID = buildID(f, size)
	syms, marks := functionSymbols(f, size)
	b.goTab, b.goOld = goTables(f, size, marks)
	if b.goTab != nil {
		// Go's table names these better (inlined calls, lines): keep only
		// the symbols of code it does not cover (cgo's C, assembly of the
		// external linker). A Go binary that exports its symbols has 117k
		// of them.
		syms = slices.DeleteFunc(syms, func(s elfSymbol) bool {
			_, _, ok := b.goTab.funcAt(s.addr)
			return ok
		})
	}
	b.syms = placeSymbols(syms, b.loads)
	if b.goTab == nil && b.goOld == nil {
		b.lines, b.files = dwarfLines(f, size)
	} else if bi, err := buildinfo.Read(r); err == nil {
		b.GoVersion = bi.GoVersion
	}
	b.footprint = b.measure()
	return b, nil
}

// Footprint is about how many bytes b holds: its Go table's bytes, its
// symbols, its DWARF lines.
func (b *Binary) Footprint() int64 { return b.footprint }

// gosymFuncBytes is what debug/gosym builds per function beside the
// table's bytes (19.4 MiB for prometheus's 63k functions, measured).
const gosymFuncBytes = 320

func (b *Binary) measure() int64 {
	n := int64(64 + 32*len(b.loads) + 16*len(b.lines) + len(b.BuildID) + len(b.GoVersion))
	for _, s := range b.syms {
		n += 40 + int64(len(s.name))
	}
	for _, f := range b.files {
		n += 16 + int64(len(f))
	}
	if b.goTab != nil {
		n += int64(b.goTab.held)
	}
	if b.goOld != nil && len(b.goOld.Funcs) > 0 {
		n += int64(len(b.goOld.Funcs[0].LineTable.Data) + gosymFuncBytes*len(b.goOld.Funcs))
	}
	return n
}

// GoFuncOffset is the file offset of the entry of the Go function name
// (as the pclntab names it: "net/http.(*Transport).dialConnFor"), where a
// uprobe goes; false when the binary has no Go table, no such function,
// or the entry is in no loaded part of the file.
func (b *Binary) GoFuncOffset(name string) (uint64, bool) {
	var entry uint64
	switch {
	case b.goTab != nil:
		e, ok := b.goTab.entryOf(name)
		if !ok {
			return 0, false
		}
		entry = e
	case b.goOld != nil:
		fn := b.goOld.LookupFunc(name)
		if fn == nil {
			return 0, false
		}
		entry = fn.Entry
	default:
		return 0, false
	}
	for _, s := range b.loads {
		if s.exec && entry >= s.vaddr && entry-s.vaddr < s.filesz {
			return entry - s.vaddr + s.off, true
		}
	}
	return 0, false
}

// sectionData reads a section, refusing one that claims more bytes than
// the file holds (corrupt headers must not make us allocate gigabytes).
func sectionData(s *elf.Section, size int64) ([]byte, bool) {
	if !sectionFits(s, size) {
		return nil, false
	}
	if s.Flags&elf.SHF_COMPRESSED == 0 {
		// One read into a buffer of the right size: Data grows its buffer
		// a chunk at a time (70 ms of copying for a 14 MB pclntab).
		data := make([]byte, s.FileSize)
		_, err := s.ReadAt(data, 0)
		return data, err == nil
	}
	data, err := s.Data()
	return data, err == nil
}

// sectionFits: the section's bytes lie within the file (FileSize: a
// compressed section's Size is its size once decompressed).
func sectionFits(s *elf.Section, size int64) bool {
	return s != nil && s.Type != elf.SHT_NOBITS && s.FileSize <= uint64(size) &&
		s.Offset <= uint64(size)-s.FileSize
}

// buildID identifies the build: the GNU build-id note in hex, else Go's
// own build ID note as "go:<id>". Notes are looked for in PT_NOTE
// segments, then in note sections (Go's linker puts .note.gnu.build-id in
// the text segment, outside PT_NOTE).
func buildID(f *elf.File, size int64) string {
	var notes [][]byte
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE || p.Filesz > 64<<10 || p.Off > uint64(size) {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err == nil {
			notes = append(notes, data)
		}
	}
	for _, s := range f.Sections {
		if s.Type == elf.SHT_NOTE && s.Size <= 64<<10 {
			if data, ok := sectionData(s, size); ok {
				notes = append(notes, data)
			}
		}
	}
	var goID string
	for _, data := range notes {
		gnu, golang := readNotes(data, f.ByteOrder)
		if gnu != "" {
			return gnu
		}
		if goID == "" && golang != "" {
			goID = "go:" + golang
		}
	}
	return goID
}

// readNotes walks notes — namesz, descsz, type, then name and desc, each
// padded to 4 bytes — for NT_GNU_BUILD_ID (hex) and Go's build ID (text).
func readNotes(data []byte, order binary.ByteOrder) (gnu, golang string) {
	const ntGNUBuildID, ntGoBuildID = 3, 4
	for len(data) >= 12 {
		namesz := uint64(order.Uint32(data))
		descsz := uint64(order.Uint32(data[4:]))
		typ := order.Uint32(data[8:])
		data = data[12:]
		nameEnd := (namesz + 3) &^ 3
		descEnd := nameEnd + (descsz+3)&^3
		if namesz > uint64(len(data)) || descsz > uint64(len(data)) || descEnd > uint64(len(data)) {
			return gnu, golang
		}
		name, desc := string(data[:namesz]), data[nameEnd:nameEnd+descsz]
		switch {
		case typ == ntGNUBuildID && name == "GNU\x00" && len(desc) > 0:
			gnu = hex.EncodeToString(desc)
		case typ == ntGoBuildID && name == "Go\x00\x00" && len(desc) > 0:
			golang = string(desc)
		}
		data = data[descEnd:]
	}
	return gnu, golang
}

// functionSymbols reads the functions of .symtab, then of .dynsym. It
// also returns the addresses of the Go runtime's marks, which are not
// functions: runtime.text and go:func.*.
func functionSymbols(f *elf.File, size int64) ([]elfSymbol, map[string]uint64) {
	marks := map[string]uint64{}
	var out []elfSymbol
	for _, name := range []string{".symtab", ".dynsym"} {
		if !sectionFits(f.Section(name), size) {
			continue
		}
		read := f.Symbols
		if name == ".dynsym" {
			read = f.DynamicSymbols
		}
		syms, err := read()
		if err != nil {
			continue
		}
		for _, s := range syms {
			if s.Name == "runtime.text" || s.Name == "go:func.*" {
				marks[s.Name] = s.Value
			}
			typ := elf.ST_TYPE(s.Info)
			if (typ != elf.STT_FUNC && typ != elf.STT_GNU_IFUNC) ||
				s.Section == elf.SHN_UNDEF || s.Value == 0 || s.Name == "" {
				continue
			}
			out = append(out, elfSymbol{addr: s.Value, end: s.Value + s.Size, name: s.Name})
		}
	}
	return out, marks
}

// placeSymbols sorts functions, one per address (.symtab's name first),
// each ending where its size says or, when its size is 0, at the next
// symbol or the end of its segment.
func placeSymbols(out []elfSymbol, loads []segment) []elfSymbol {
	// Stable: at one address the first seen (.symtab, sized) wins.
	slices.SortStableFunc(out, func(a, b elfSymbol) int {
		switch {
		case a.addr != b.addr:
			return cmpUint(a.addr, b.addr)
		case (a.end > a.addr) != (b.end > b.addr):
			if a.end > a.addr {
				return -1
			}
			return 1
		}
		return 0
	})
	out = slices.CompactFunc(out, func(a, b elfSymbol) bool { return a.addr == b.addr })
	for i := range out {
		if out[i].end > out[i].addr {
			continue
		}
		if i+1 < len(out) {
			out[i].end = out[i+1].addr
		} else {
			out[i].end = segmentEnd(loads, out[i].addr)
		}
	}
	return slices.Clone(out) // not the array of symbols dropped
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// segmentEnd is the end of the executable segment holding vaddr, or
// vaddr+1 (the symbol's first byte only) when none does.
func segmentEnd(loads []segment, vaddr uint64) uint64 {
	for _, s := range loads {
		if s.exec && vaddr >= s.vaddr && vaddr-s.vaddr < s.filesz {
			return s.vaddr + s.filesz
		}
	}
	return vaddr + 1
}

// goTables reads Go's pclntab: with goTable from Go 1.18 on, with its
// inline trees (see goTable), else with debug/gosym. The pclntab is found
// by section name (.gopclntab, or .data.rel.ro.gopclntab in a PIE), which
// `-ldflags=-s -w` keeps; only without it does the table come from the
// runtime.pclntab symbols.
//
// Since Go 1.18 the table's addresses are offsets from the start of Go's
// text, which is not the .text section's start when an external linker
// put C start-up code first (cgo, -linkmode=external). It is the
// runtime.text symbol when the binary has one; in a stripped binary, the
// text field of the runtime's moduledata (see moduledata), which also
// gives go:func.*, where the inline trees are. When no start is found the
// Go table is left out rather than trusted to a guess: its names would
// all be shifted.
func goTables(f *elf.File, size int64, marks map[string]uint64) (*goTable, *gosym.Table) {
	pcln, pclnAddr := pclntab(f, size)
	if len(pcln) < 16 {
		return nil, nil
	}
	if goTableMagic(f.ByteOrder, pcln) {
		return placedGoTable(f, pcln, pclnAddr, size, marks), nil
	}
	// Go 1.16 and 1.17 tables hold absolute entry addresses: then the
	// first function's entry is minpc whatever the text start.
	unplaced := newGoSymTable(pcln, 0)
	if unplaced == nil {
		return nil, nil
	}
	first := unplaced.Funcs[0].Entry
	if _, ok := marks["runtime.text"]; ok || moduledata(f, pclnAddr, size, func(md moduleFields) bool { return first == md.minpc }) != nil {
		return nil, unplaced
	}
	return nil, nil
}

// pclntab reads the pclntab and says at which address it is.
func pclntab(f *elf.File, size int64) ([]byte, uint64) {
	for _, name := range []string{".gopclntab", ".data.rel.ro.gopclntab"} {
		if data, ok := sectionData(f.Section(name), size); ok {
			return data, f.Section(name).Addr
		}
	}
	return pclntabFromSymbols(f)
}

// placedGoTable is the goTable of a Go 1.18 or later pcln, its entries
// placed at runtime.text or the moduledata's text; nil when neither is
// found.
func placedGoTable(f *elf.File, pcln []byte, pclnAddr uint64, size int64, marks map[string]uint64) *goTable {
	text, gofunc := marks["runtime.text"], marks["go:func.*"]
	if _, ok := marks["runtime.text"]; !ok {
		g := newGoTable(f.ByteOrder, pcln, 0)
		if g == nil {
			return nil
		}
		first := g.firstEntry()
		md := moduledata(f, pclnAddr, size, func(md moduleFields) bool { return md.text+first == md.minpc })
		if md == nil {
			return nil
		}
		text, gofunc = md.text, md.gofunc
	}
	g := newGoTable(f.ByteOrder, pcln, text)
	if g != nil {
		g.readInline(f, pcln, pclnAddr, gofunc, size)
	}
	return g
}

func newGoSymTable(pcln []byte, text uint64) *gosym.Table {
	table, err := gosym.NewTable(nil, gosym.NewLineTable(pcln, text))
	if err != nil || len(table.Funcs) == 0 {
		return nil
	}
	return table
}

// moduleFields is what goTable needs of a runtime.moduledata.
type moduleFields struct{ minpc, text, gofunc uint64 }

// moduledata finds the runtime's moduledata in the file's data: a
// pointer-aligned word pointing at the pclntab, followed as in Go 1.16
// and later by six slices, findfunctab, minpc, maxpc, text and etext, and
// in Go 1.21 to 1.26 by 16 more words up to gofunc. (A PIE holds these
// words for its relative relocations too.) Each candidate is checked
// against the table itself (ok); the first that checks out is returned,
// nil when none does within the first 16. Writable segments, where the
// runtime keeps it (.noptrdata), are read first, a chunk at a time.
func moduledata(f *elf.File, pclnAddr uint64, size int64, ok func(moduleFields) bool) *moduleFields {
	ptr := uint64(8)
	word := f.ByteOrder.Uint64
	if f.Class == elf.ELFCLASS32 {
		ptr = 4
		word = func(b []byte) uint64 { return uint64(f.ByteOrder.Uint32(b)) }
	}
	const minpcField, textField, gofuncField, fields = 20, 22, 40, 41
	progs := slices.Clone(f.Progs)
	slices.SortStableFunc(progs, func(a, b *elf.Prog) int { return int(b.Flags&elf.PF_W) - int(a.Flags&elf.PF_W) })
	const step = 1 << 20
	tried := 0
	buf := make([]byte, step+fields*ptr) // a chunk, and the moduledata at its end
	for _, p := range progs {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_X != 0 || p.Filesz > uint64(size) || p.Off > uint64(size)-p.Filesz {
			continue
		}
		for at := (ptr - p.Vaddr%ptr) % ptr; at < p.Filesz; at += step { // aligned words
			n, err := p.ReadAt(buf, int64(at))
			if err != nil && at+uint64(n) < p.Filesz {
				break
			}
			for off := uint64(0); off < step && off+fields*ptr <= uint64(n); off += ptr {
				if word(buf[off:]) != pclnAddr {
					continue
				}
				md := moduleFields{minpc: word(buf[off+minpcField*ptr:]),
					text: word(buf[off+textField*ptr:]), gofunc: word(buf[off+gofuncField*ptr:])}
				if ok(md) {
					return &md
				}
				if tried++; tried >= 16 {
					return nil
				}
			}
		}
	}
	return nil
}

// pclntabFromSymbols reads the bytes between runtime.pclntab and
// runtime.epclntab, for a binary whose section names are gone.
func pclntabFromSymbols(f *elf.File) ([]byte, uint64) {
	syms, err := f.Symbols()
	if err != nil {
		return nil, 0
	}
	var start, end uint64
	for _, s := range syms {
		switch s.Name {
		case "runtime.pclntab":
			start = s.Value
		case "runtime.epclntab":
			end = s.Value
		}
	}
	if start == 0 || end <= start || end-start > 1<<30 {
		return nil, 0
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && start >= p.Vaddr && end <= p.Vaddr+p.Filesz {
			data := make([]byte, end-start)
			if _, err := p.ReadAt(data, int64(start-p.Vaddr)); err != nil {
				return nil, 0
			}
			return data, start
		}
	}
	return nil, 0
}

// dwarfLines reads every compilation unit's line table. Only non-Go
// binaries use it: Go's pclntab already has the lines.
func dwarfLines(f *elf.File, size int64) ([]lineRow, []string) {
	if !sectionFits(f.Section(".debug_line"), size) && !sectionFits(f.Section(".zdebug_line"), size) {
		return nil, nil
	}
	d, err := f.DWARF()
	if err != nil {
		return nil, nil
	}
	var rows []lineRow
	var files []string
	index := map[string]int32{}
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil || e == nil {
			break
		}
		if e.Tag != dwarf.TagCompileUnit {
			r.SkipChildren()
			continue
		}
		lr, err := d.LineReader(e)
		r.SkipChildren()
		if err != nil || lr == nil {
			continue
		}
		doubled, source := doubledSourceName(e)
		var le dwarf.LineEntry
		for lr.Next(&le) == nil {
			if len(rows) >= maxLineRows {
				return nil, nil
			}
			row := lineRow{addr: le.Address}
			if !le.EndSequence && le.File != nil && le.Line > 0 {
				name := le.File.Name
				if name == doubled {
					name = source
				}
				i, ok := index[name]
				if !ok {
					i = int32(len(files))
					index[name] = i
					files = append(files, name)
				}
				row.file, row.line = i, int32(min(le.Line, 1<<31-1))
			}
			rows = append(rows, row)
		}
	}
	// At one address a sequence's end sorts before the next one's start.
	slices.SortStableFunc(rows, func(a, b lineRow) int {
		if c := cmpUint(a.addr, b.addr); c != 0 {
			return c
		}
		return cmpUint(uint64(min(a.line, 1)), uint64(min(b.line, 1)))
	})
	return slices.Clip(rows), files
}

// doubledSourceName works around debug/dwarf (Go 1.26) joining a DWARF 5
// line table's absolute file name to its directory: clang 14 and later
// names the source it was given by an absolute path as such, in the
// compilation directory's entry, so a program built in /build from
// /src/a.c would name /build/src/a.c. The compilation unit's own name is
// that absolute path: doubled is what the reader makes of it, source what
// it is; "" when the unit's name is not absolute.
func doubledSourceName(cu *dwarf.Entry) (doubled, source string) {
	name, _ := cu.Val(dwarf.AttrName).(string)
	dir, _ := cu.Val(dwarf.AttrCompDir).(string)
	if !path.IsAbs(name) || !path.IsAbs(dir) {
		return "", ""
	}
	if doubled = path.Join(dir, name); doubled == path.Clean(name) {
		return "", "" // compiled at the root
	}
	return doubled, name
}

// FileAddress translates an address of a process into this binary's
// address space, given the mapping holding it: the mapping says which
// file offset the address reads, and the PT_LOAD holding that offset says
// where the linker placed it.
func (b *Binary) FileAddress(m Mapping, addr uint64) (uint64, bool) {
	if addr < m.Start || addr >= m.End {
		return 0, false
	}
	off := addr - m.Start + m.Offset
	for _, s := range b.loads {
		if off >= s.off && off-s.off < s.filesz {
			return off - s.off + s.vaddr, true
		}
	}
	return 0, false
}

// BiasFromStartCode gives the load bias (process address − file address)
// of an executable from its mm->start_code, for when its maps are gone.
// fs/binfmt_elf.c sets start_code to the lowest p_vaddr among the PF_X
// PT_LOADs plus load_bias, unrounded (the segment itself is mapped from
// the page holding it, but start_code is not moved to that page).
func (b *Binary) BiasFromStartCode(startCode uint64) (uint64, bool) {
	lowest, found := uint64(0), false
	for _, s := range b.loads {
		if s.exec && (!found || s.vaddr < lowest) {
			lowest, found = s.vaddr, true
		}
	}
	return startCode - lowest, found
}

// Location is a function and, when known, its file and line.
type Location struct {
	Function, File string
	Line           int
}

// Lookup names the function, file and line of a file address. In Go code
// inlined there it gives one location per inlined call, innermost first,
// the function the code was compiled into last. Nil when no table knows
// the address; File and Line are empty when only a symbol name does.
func (b *Binary) Lookup(vaddr uint64) (locs []Location) {
	defer func() {
		if recover() != nil { // gosym on a corrupt table
			locs = nil
		}
	}()
	if b.goTab != nil {
		if locs := b.goTab.lookup(vaddr); locs != nil {
			return locs
		}
	}
	if b.goOld != nil {
		if fn := b.goOld.PCToFunc(vaddr); fn != nil {
			file, line, _ := b.goOld.PCToLine(vaddr)
			return []Location{{Function: fn.Name, File: file, Line: max(line, 0)}}
		}
	}
	i := sort.Search(len(b.syms), func(i int) bool { return b.syms[i].addr > vaddr }) - 1
	if i < 0 || vaddr >= b.syms[i].end {
		return nil
	}
	loc := Location{Function: demangled(b.syms[i].name)}
	if j := sort.Search(len(b.lines), func(j int) bool { return b.lines[j].addr > vaddr }) - 1; j >= 0 && b.lines[j].line > 0 {
		loc.File, loc.Line = b.files[b.lines[j].file], int(b.lines[j].line)
	}
	return []Location{loc}
}

// demangled turns C++ (_Z) and Rust (_R, or _ZN…E with a hash) names
// into source names; any other name, or one it cannot read, is kept.
func demangled(name string) string {
	if !strings.HasPrefix(name, "_Z") && !strings.HasPrefix(name, "_R") {
		return name
	}
	return demangle.Filter(name)
}
