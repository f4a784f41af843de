package symbol

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
)

// goTable reads the pclntab of Go 1.18 and later (the table the runtime
// itself reads to print a stack, runtime/symtab.go) one address at a
// time: a binary search of the function table, then the function's
// pc-value tables for its file and line. It holds the pclntab's bytes
// and nothing per function. The standard library's debug/gosym, which
// reads every table format since Go 1.2, builds an object per function
// first: for a 50 MB Go binary (~14 MB of pclntab) half a second and
// 19 MB more (docs/performance.md); it stays the reader of older tables,
// and the reference this one is tested against.
//
// debug/gosym also does not expand inlined calls: for an address in code
// inlined into a function it gives the inlined callee's file and line
// under the outer function's name. When an application calls net.Dial
// (small enough to be inlined) the call site would then read
// net/dial.go. goTable reads the inline trees the runtime walks
// (runtime/symtabinl.go) to expand such an address into one frame per
// inlined call. It knows the layout of Go 1.20 and later (pclntab magic
// 0xfffffff1, the 16-byte inlinedCall); for older tables, or on anything
// that does not check out, it expands nothing.
type goTable struct {
	order       binary.ByteOrder
	text        uint64 // runtime.text: function entries are offsets from it
	quantum     uint64 // pc quantum of the pc-value tables (minLC)
	fixed       uint64 // size of _func's fixed part
	nfunc       int
	funcnametab []byte
	cutab       []byte
	filetab     []byte
	pctab       []byte
	functab     []byte // pclntable: (entryOff, funcOff) pairs, then the _funcs
	gofunc      []byte // go:func.*, where funcdata offsets point; nil: no inline trees
	held        int    // bytes held (the pclntab, and gofunc when copied)
}

const (
	go118Magic         = 0xfffffff0 // Go 1.18 and 1.19
	go120Magic         = 0xfffffff1 // Go 1.20 and later: _func.startLine
	pcdataInlTreeIndex = 2          // internal/abi.PCDATA_InlTreeIndex
	funcdataInlTree    = 3          // internal/abi.FUNCDATA_InlTree
	inlinedCallSize    = 16
	maxInlineDepth     = 64
)

// goTableMagic says whether pcln is a table goTable reads.
func goTableMagic(order binary.ByteOrder, pcln []byte) bool {
	if len(pcln) < 8 {
		return false
	}
	m := order.Uint32(pcln)
	return m == go118Magic || m == go120Magic
}

// newGoTable reads pcln's header, its functions' entries offsets from
// text; nil when the table is not one of Go 1.18 or later or its header
// does not fit it.
func newGoTable(order binary.ByteOrder, pcln []byte, text uint64) *goTable {
	if !goTableMagic(order, pcln) || len(pcln) < 8+8*8 || pcln[4] != 0 || pcln[5] != 0 {
		return nil
	}
	ptr := int(pcln[7])
	if ptr != 4 && ptr != 8 {
		return nil
	}
	word := func(i int) uint64 {
		if ptr == 8 {
			return order.Uint64(pcln[8+i*8:])
		}
		return uint64(order.Uint32(pcln[8+i*4:]))
	}
	nfunc, funcname, cu, filetab, pctab, pclntab := word(0), word(3), word(4), word(5), word(6), word(7)
	n := uint64(len(pcln))
	if funcname > n || cu > n || filetab > n || pctab > n || pclntab > n || nfunc > n/8 || nfunc == 0 {
		return nil
	}
	g := &goTable{order: order, text: text, quantum: uint64(max(pcln[6], 1)), fixed: 40,
		funcnametab: pcln[funcname:], cutab: pcln[cu:], filetab: pcln[filetab:],
		pctab: pcln[pctab:], functab: pcln[pclntab:], nfunc: int(nfunc), held: len(pcln)}
	if order.Uint32(pcln) == go120Magic {
		g.fixed = 44
	}
	if uint64(len(g.functab)) < (nfunc+1)*8 {
		return nil
	}
	return g
}

// firstEntry is the first function's entry offset from the text start.
func (g *goTable) firstEntry() uint64 { return uint64(g.u32(g.functab, 0)) }

// readInline takes gofunc, where the inline trees are: the bytes from
// the mark go:func.* to the end of the section (or segment) holding it.
// Go 1.20 and later only; nothing for older tables or a missing mark.
func (g *goTable) readInline(f *elf.File, pcln []byte, pclnAddr, gofuncAddr uint64, size int64) {
	if g.fixed != 44 || gofuncAddr == 0 {
		return
	}
	if gofuncAddr >= pclnAddr && gofuncAddr-pclnAddr < uint64(len(pcln)) {
		// Go 1.26's linker puts go:func.* inside .gopclntab: no copy.
		g.gofunc = pcln[gofuncAddr-pclnAddr:]
		return
	}
	g.gofunc = bytesAt(f, gofuncAddr, size)
	g.held += len(g.gofunc)
}

// bytesAt reads from vaddr to the end of the section holding it, or of
// its PT_LOAD when no section header says.
func bytesAt(f *elf.File, vaddr uint64, size int64) []byte {
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_ALLOC != 0 && vaddr >= s.Addr && vaddr-s.Addr < s.Size {
			if data, ok := sectionData(s, size); ok {
				return data[vaddr-s.Addr:]
			}
			return nil
		}
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && vaddr >= p.Vaddr && vaddr-p.Vaddr < p.Filesz && p.Filesz <= uint64(size) {
			data := make([]byte, p.Filesz-(vaddr-p.Vaddr))
			if _, err := p.ReadAt(data, int64(vaddr-p.Vaddr)); err == nil {
				return data
			}
		}
	}
	return nil
}

// lookup names pc's function, file and line, one location per inlined
// call, innermost first; nil when no function holds pc.
func (g *goTable) lookup(pc uint64) []Location {
	fn, entry, ok := g.funcAt(pc)
	if !ok {
		return nil
	}
	outer, ok := g.name(int32(g.u32(fn, 4)))
	if !ok {
		return nil
	}
	names, pcs := g.inlined(fn, entry, pc)
	locs := make([]Location, len(pcs))
	for i, at := range pcs {
		locs[i].File, locs[i].Line = g.position(fn, entry, at)
		locs[i].Function = outer
		if i < len(names) {
			locs[i].Function = names[i]
		}
	}
	return locs
}

// position is the file and line of pc in the function fn entered at
// entry: "" and 0 where its tables do not say.
func (g *goTable) position(fn []byte, entry, pc uint64) (file string, line int) {
	if l, ok := g.pcvalue(g.u32(fn, 24), entry, pc); ok && l >= 0 {
		line = int(l)
	}
	fno, ok := g.pcvalue(g.u32(fn, 20), entry, pc)
	if !ok || fno < 0 {
		return "", line
	}
	at := (uint64(g.u32(fn, 32)) + uint64(fno)) * 4
	if at+4 > uint64(len(g.cutab)) {
		return "", line
	}
	off := g.order.Uint32(g.cutab[at:])
	if off == ^uint32(0) || uint64(off) >= uint64(len(g.filetab)) {
		return "", line
	}
	file, _ = cString(g.filetab[off:])
	return file, line
}

// entryOf is the entry address of the function called name (as the
// pclntab names it), by a scan of every function: for the few lookups
// probing a binary takes.
func (g *goTable) entryOf(name string) (uint64, bool) {
	for i := 0; i < g.nfunc; i++ {
		funcOff := uint64(g.u32(g.functab, uint32(i*8+4)))
		if funcOff+g.fixed > uint64(len(g.functab)) {
			continue
		}
		fn := g.functab[funcOff:]
		off := int32(g.u32(fn, 4))
		if off < 0 || int(off) >= len(g.funcnametab) {
			continue
		}
		b := g.funcnametab[off:]
		if len(b) > len(name) && b[len(name)] == 0 && string(b[:len(name)]) == name {
			return g.text + uint64(g.u32(fn, 0)), true
		}
	}
	return 0, false
}

// inlined returns, for pc in the function fn entered at entry, the
// inlined calls it is in, innermost first: each one's name and the pc
// whose position is where it sits (pc itself for the innermost, then each
// call's site in its parent). The outer function's pc is the last one
// returned, or pc itself when nothing is inlined there.
func (g *goTable) inlined(fn []byte, entry, pc uint64) (names []string, pcs []uint64) {
	if g.gofunc == nil {
		return nil, []uint64{pc}
	}
	npcdata := g.u32(fn, 28)
	nfuncdata := uint32(fn[g.fixed-1])
	if npcdata <= pcdataInlTreeIndex || nfuncdata <= funcdataInlTree ||
		uint64(len(fn)) < g.fixed+4*(uint64(npcdata)+uint64(nfuncdata)) {
		return nil, []uint64{pc}
	}
	table := g.u32(fn, uint32(g.fixed)+4*pcdataInlTreeIndex)
	tree := g.u32(fn, uint32(g.fixed)+4*npcdata+4*funcdataInlTree)
	if table == 0 || tree == ^uint32(0) {
		return nil, []uint64{pc}
	}
	outer := pc
	for depth := 0; depth < maxInlineDepth; depth++ {
		ix, ok := g.pcvalue(table, entry, outer)
		if !ok {
			break
		}
		if ix < 0 {
			return names, append(pcs, outer)
		}
		at := uint64(tree) + uint64(ix)*inlinedCallSize
		if at+inlinedCallSize > uint64(len(g.gofunc)) {
			break
		}
		call := g.gofunc[at:]
		name, ok := g.name(int32(g.u32(call, 4)))
		parent := int32(g.u32(call, 8))
		if !ok || parent < 0 {
			break
		}
		names, pcs = append(names, name), append(pcs, outer)
		outer = entry + uint64(parent)
	}
	// A tree that does not check out expands nothing.
	return nil, []uint64{pc}
}

func (g *goTable) u32(b []byte, off uint32) uint32 { return g.order.Uint32(b[off:]) }

// funcAt finds the _func holding pc by binary search of the entry offsets.
func (g *goTable) funcAt(pc uint64) (fn []byte, entry uint64, ok bool) {
	if pc < g.text {
		return nil, 0, false
	}
	off := pc - g.text
	lo, hi := 0, g.nfunc // find the last i with entryOff(i) <= off
	for lo < hi {
		mid := int(uint(lo+hi+1) >> 1)
		if uint64(g.u32(g.functab, uint32(mid*8))) <= off {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	if lo >= g.nfunc || uint64(g.u32(g.functab, uint32(lo*8))) > off ||
		off >= uint64(g.u32(g.functab, uint32((lo+1)*8))) {
		return nil, 0, false
	}
	funcOff := uint64(g.u32(g.functab, uint32(lo*8+4)))
	if funcOff+g.fixed > uint64(len(g.functab)) {
		return nil, 0, false
	}
	fn = g.functab[funcOff:]
	return fn, g.text + uint64(g.u32(fn, 0)), true
}

func (g *goTable) name(off int32) (string, bool) {
	if off < 0 || int(off) >= len(g.funcnametab) {
		return "", false
	}
	return cString(g.funcnametab[off:])
}

// cString is the NUL-terminated string b starts with.
func cString(b []byte) (string, bool) {
	end := bytes.IndexByte(b, 0)
	if end < 0 {
		return "", false
	}
	return string(b[:end]), true
}

// pcvalue decodes a pc-value table (runtime.pcvalue): pairs of a
// zig-zag value delta and a pc delta in quanta, starting at value -1 and
// the function's entry, ended by a 0 value delta.
func (g *goTable) pcvalue(off uint32, entry, target uint64) (int32, bool) {
	if off == 0 || uint64(off) >= uint64(len(g.pctab)) {
		return 0, false
	}
	p := g.pctab[off:]
	val, pc := int32(-1), entry
	for first := true; ; first = false {
		uv, n := binary.Uvarint(p)
		if n <= 0 || (uv == 0 && !first) || uv > 1<<32-1 {
			return 0, false
		}
		p = p[n:]
		val += int32(-(uint32(uv) & 1) ^ (uint32(uv) >> 1))
		pcdelta, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, false
		}
		p = p[n:]
		pc += pcdelta * g.quantum
		if target < pc {
			return val, true
		}
	}
}
