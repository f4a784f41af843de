package symbol

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
)

// A return address is the address just past a call instruction. Checking
// that is how a candidate frame that no frame-pointer walk produced (the
// return address a frameless syscall wrapper leaves at the stack pointer,
// tracer.Stack.Ret) earns a place in a stack: a word that merely points
// into code (a function pointer, a jump target) is not preceded by a call,
// bar coincidence.

// maxCallLen is the longest call instruction CallBefore recognizes: x86-64's
// `notrack` prefix, REX, FF, ModRM, SIB and a 32-bit displacement.
const maxCallLen = 9

// CallBefore reports whether code, the bytes of machine code that end
// just before an address, ends with a call instruction, so that the
// address is a return address. On x86-64 that is `call rel32` (E8) or one
// of the indirect forms `call r/m64` (FF /2: through a register, or memory
// addressed by registers, a displacement or RIP), with an optional REX
// prefix and CET's `notrack` (3E) before it; on arm64 `bl` or `blr` at
// the 4 bytes before. Bytes that could end with several instructions are
// accepted if any reading is a call: this filters out garbage, it does not
// disassemble. Other machines are never accepted.
func CallBefore(code []byte, machine elf.Machine) bool {
	switch machine {
	case elf.EM_X86_64:
		return x86CallBefore(code)
	case elf.EM_AARCH64:
		if len(code) < 4 {
			return false
		}
		w := binary.LittleEndian.Uint32(code[len(code)-4:])
		const bl, blMask = 0x94000000, 0xFC000000
		const blr, blrMask = 0xD63F0000, 0xFFFFFC1F
		return w&blMask == bl || w&blrMask == blr
	}
	return false
}

func x86CallBefore(code []byte) bool {
	if n := len(code); n >= 5 && code[n-5] == 0xE8 {
		return true
	}
	// FF /2 is 2 to 6 bytes long (ModRM, SIB, displacement), plus prefixes:
	// try every start, ending exactly at the end of code.
	for start := len(code) - 2; start >= 0 && start >= len(code)-maxCallLen; start-- {
		if x86IndirectCall(code[start:]) {
			return true
		}
	}
	return false
}

// x86IndirectCall reports whether insn is exactly one `call r/m64`.
func x86IndirectCall(insn []byte) bool {
	if len(insn) > 0 && insn[0] == 0x3E { // notrack
		insn = insn[1:]
	}
	if len(insn) > 0 && insn[0]&0xF0 == 0x40 { // REX
		insn = insn[1:]
	}
	if len(insn) < 2 || insn[0] != 0xFF {
		return false
	}
	modrm := insn[1]
	mod, reg, rm := modrm>>6, modrm>>3&7, modrm&7
	if reg != 2 {
		return false
	}
	length := 2 // FF and ModRM
	if mod != 3 && rm == 4 {
		length++ // SIB
	}
	switch {
	case mod == 1:
		length++ // disp8
	case mod == 2:
		length += 4 // disp32
	case mod == 0 && rm == 5:
		length += 4 // RIP-relative disp32
	case mod == 0 && rm == 4 && len(insn) > 2 && insn[2]&7 == 5:
		length += 4 // SIB with no base: disp32
	}
	return len(insn) == length
}

// IsReturnAddress reports whether addr lies in an executable mapping of
// the snapshot with a call instruction just before it (CallBefore). The
// bytes are those Snapshot read from the process for addr (its check
// argument), else they are read now from the mapped file: nothing is kept
// per binary, the snapshot names its files, and while the process lives
// (or the caller holds the executable open, ExeSnapshot) they are still
// reachable. false when they cannot be had, or the machine is not one
// CallBefore knows.
func (s *Snapshot) IsReturnAddress(addr uint64) bool {
	reg := s.find(addr)
	if reg == nil {
		return false
	}
	n := min(uint64(maxCallLen), addr-reg.Start)
	code, ok := s.code[addr]
	if !ok || uint64(len(code)) < n {
		off, ok := reg.fileOffset(addr - n)
		if !ok || reg.open == nil {
			return false
		}
		var err error
		if code, err = readAt(reg.open, off, int(n)); err != nil {
			return false
		}
	}
	code = code[uint64(len(code))-n:] // not past the mapping's start
	machine := hostMachine
	if reg.bin != nil {
		machine = reg.bin.machine
	}
	if machine == elf.EM_AARCH64 && addr%4 != 0 {
		return false // arm64 instructions are 4-byte aligned
	}
	return CallBefore(code, machine)
}

// readCode reads the maxCallLen bytes before each address from pid's
// memory; an address whose bytes cannot be read is left out.
func readCode(pid int, addrs []uint64) map[uint64][]byte {
	if len(addrs) == 0 {
		return nil
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return nil
	}
	defer mem.Close()
	code := map[uint64][]byte{}
	for _, addr := range addrs {
		if addr < maxCallLen || addr > 1<<63 {
			continue
		}
		buf := make([]byte, maxCallLen)
		if _, err := mem.ReadAt(buf, int64(addr-maxCallLen)); err == nil {
			code[addr] = buf
		}
	}
	return code
}

// hostMachine is the machine of this process: that of a traced process
// whose file could not be parsed (the tracer sees its own host's stacks).
var hostMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[runtime.GOARCH]

// fileOffset is where addr's byte lies in the region's file.
func (reg *region) fileOffset(addr uint64) (uint64, bool) {
	if !reg.biased {
		return addr - reg.Start + reg.Offset, true
	}
	if reg.bin == nil {
		return 0, false
	}
	vaddr := addr - reg.bias
	for _, seg := range reg.bin.loads {
		if vaddr >= seg.vaddr && vaddr-seg.vaddr < seg.filesz {
			return vaddr - seg.vaddr + seg.off, true
		}
	}
	return 0, false
}

func readAt(open func() (*os.File, error), off uint64, n int) ([]byte, error) {
	f, err := open()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, int64(off)); err != nil {
		return nil, fmt.Errorf("reading code at %#x: %w", off, err)
	}
	return buf, nil
}
