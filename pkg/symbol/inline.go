package symbol

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
)

// The standard library's debug/gosym does not expand inlined calls: for
// an address in code inlined into a function it gives the inlined
// callee's file and line under the outer function's name. When an
// application calls net.Dial — small enough to be inlined — the call
// site would then read net/dial.go. goInline reads the inline trees the
// runtime itself walks (runtime/symtabinl.go) to expand such an address
// into one frame per inlined call. It knows the layouts of Go 1.21 and
// later (pclntab magic 0xfffffff1 and the 16-byte inlinedCall); for
// other binaries, or on anything that does not check out, it expands
// nothing.

const (
	pcdataInlTreeIndex = 2 // internal/abi.PCDATA_InlTreeIndex
	funcdataInlTree    = 3 // internal/abi.FUNCDATA_InlTree
	funcFixedSize      = 44
	inlinedCallSize    = 16
	maxInlineDepth     = 64
)

type goInline struct {
	order       binary.ByteOrder
	text        uint64 // runtime.text: function entries are offsets from it
	quantum     uint64 // pc quantum of the pc-value tables (minLC)
	funcnametab []byte
	pctab       []byte
	functab     []byte // pclntable: (entryOff, funcOff) pairs, then the _funcs
	nfunc       int
	gofunc      []byte // go:func.*, where funcdata offsets point
}

// newGoInline reads the pclntab's header and takes gofunc: the bytes from
// the go:func.* mark to the end of the section (or segment) holding it.
func newGoInline(f *elf.File, pcln []byte, pclnAddr, text, gofuncAddr uint64, size int64) *goInline {
	if len(pcln) < 8+8*8 || f.ByteOrder.Uint32(pcln) != 0xfffffff1 || gofuncAddr == 0 {
		return nil
	}
	ptr := int(pcln[7])
	if ptr != 4 && ptr != 8 {
		return nil
	}
	word := func(i int) uint64 {
		if ptr == 8 {
			return f.ByteOrder.Uint64(pcln[8+i*8:])
		}
		return uint64(f.ByteOrder.Uint32(pcln[8+i*4:]))
	}
	nfunc, funcname, pctab, pclntab := word(0), word(3), word(6), word(7)
	n := uint64(len(pcln))
	if funcname > n || pctab > n || pclntab > n || nfunc > n/8 {
		return nil
	}
	g := &goInline{order: f.ByteOrder, text: text, quantum: uint64(max(pcln[6], 1)),
		funcnametab: pcln[funcname:], pctab: pcln[pctab:], functab: pcln[pclntab:], nfunc: int(nfunc)}
	if uint64(len(g.functab)) < (nfunc+1)*8 {
		return nil
	}
	if gofuncAddr >= pclnAddr && gofuncAddr-pclnAddr < uint64(len(pcln)) {
		// Go 1.26's linker puts go:func.* inside .gopclntab: no copy.
		g.gofunc = pcln[gofuncAddr-pclnAddr:]
	} else {
		g.gofunc = bytesAt(f, gofuncAddr, size)
	}
	if g.gofunc == nil {
		return nil
	}
	return g
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

// inlined returns, for pc in the function entered at entry, the inlined
// calls it is in, innermost first: each one's name and the pc whose
// position is where it sits (pc itself for the innermost, then each
// call's site in its parent). The outer function's pc is the last one
// returned, or pc itself when nothing is inlined there.
func (g *goInline) inlined(pc uint64) (names []string, pcs []uint64) {
	fn, entry, ok := g.funcAt(pc)
	if !ok {
		return nil, []uint64{pc}
	}
	npcdata := g.u32(fn, 28)
	nfuncdata := uint32(fn[43])
	if npcdata <= pcdataInlTreeIndex || nfuncdata <= funcdataInlTree ||
		uint64(len(fn)) < funcFixedSize+4*(uint64(npcdata)+uint64(nfuncdata)) {
		return nil, []uint64{pc}
	}
	table := g.u32(fn, funcFixedSize+4*pcdataInlTreeIndex)
	tree := g.u32(fn, funcFixedSize+4*npcdata+4*funcdataInlTree)
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

func (g *goInline) u32(b []byte, off uint32) uint32 { return g.order.Uint32(b[off:]) }

// funcAt finds the _func holding pc by binary search of the entry offsets.
func (g *goInline) funcAt(pc uint64) (fn []byte, entry uint64, ok bool) {
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
	if funcOff+funcFixedSize > uint64(len(g.functab)) {
		return nil, 0, false
	}
	fn = g.functab[funcOff:]
	return fn, g.text + uint64(g.u32(fn, 0)), true
}

func (g *goInline) name(off int32) (string, bool) {
	if off < 0 || int(off) >= len(g.funcnametab) {
		return "", false
	}
	b := g.funcnametab[off:]
	end := bytes.IndexByte(b, 0)
	if end < 0 {
		return "", false
	}
	return string(b[:end]), true
}

// pcvalue decodes a pc-value table (runtime.pcvalue): pairs of a
// zig-zag value delta and a pc delta in quanta, starting at value -1 and
// the function's entry, ended by a 0 value delta.
func (g *goInline) pcvalue(off uint32, entry, target uint64) (int32, bool) {
	if uint64(off) >= uint64(len(g.pctab)) {
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
