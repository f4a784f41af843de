package symbol

import (
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"testing"
)

// Call instructions as compilers emit them (objdump of clang-14 -O2 C,
// Debian's libc.so.6 2.36, clang-14 --target=aarch64-linux-gnu), and the
// instructions a return address must not follow.
var callCases = []struct {
	name    string
	code    []byte
	machine elf.Machine
	call    bool
}{
	{"call rel32 (connect@plt)", []byte{0xe8, 0xae, 0xfe, 0xff, 0xff}, elf.EM_X86_64, true},
	{"call *%rax", []byte{0xff, 0xd0}, elf.EM_X86_64, true},
	{"call *%r8", []byte{0x41, 0xff, 0xd0}, elf.EM_X86_64, true},
	{"call *(%rax)", []byte{0xff, 0x10}, elf.EM_X86_64, true},
	{"call *(%rsp)", []byte{0xff, 0x14, 0x24}, elf.EM_X86_64, true},
	{"call *(%r11,%rax,8)", []byte{0x41, 0xff, 0x14, 0xc3}, elf.EM_X86_64, true},
	{"call *0x18(%r13)", []byte{0x41, 0xff, 0x55, 0x18}, elf.EM_X86_64, true},
	{"call *0x10(%r12)", []byte{0x41, 0xff, 0x54, 0x24, 0x10}, elf.EM_X86_64, true},
	{"call *-0x40(%rcx,%r8,8)", []byte{0x42, 0xff, 0x54, 0xc1, 0xc0}, elf.EM_X86_64, true},
	{"call *0x318(%rcx)", []byte{0xff, 0x91, 0x18, 0x03, 0x00, 0x00}, elf.EM_X86_64, true},
	{"call *0x2ec7(%rip)", []byte{0xff, 0x15, 0xc7, 0x2e, 0x00, 0x00}, elf.EM_X86_64, true},
	{"call *0x340(%r12)", []byte{0x41, 0xff, 0x94, 0x24, 0x40, 0x03, 0x00, 0x00}, elf.EM_X86_64, true},
	{"notrack call *%rax", []byte{0x3e, 0xff, 0xd0}, elf.EM_X86_64, true},
	{"call *0x1000(,%rax,8) (SIB, no base)", []byte{0xff, 0x14, 0xc5, 0x00, 0x10, 0x00, 0x00}, elf.EM_X86_64, true},
	{"call, then the bytes of the code before it", []byte{0x90, 0x48, 0x89, 0xc7, 0xe8, 0x00, 0x01, 0x00, 0x00}, elf.EM_X86_64, true},

	{"jmp *%rax", []byte{0xff, 0xe0}, elf.EM_X86_64, false},
	{"jmp *0x2fe2(%rip)", []byte{0xff, 0x25, 0xe2, 0x2f, 0x00, 0x00}, elf.EM_X86_64, false},
	{"inc %eax", []byte{0xff, 0xc0}, elf.EM_X86_64, false},
	{"push %rbp after int3 padding (a function's entry)", []byte{0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0x55}, elf.EM_X86_64, false},
	{"mov %rsp,%rbp", []byte{0x48, 0x89, 0xe5}, elf.EM_X86_64, false},
	{"syscall", []byte{0xb8, 0x2a, 0x00, 0x00, 0x00, 0x0f, 0x05}, elf.EM_X86_64, false},
	{"call *%rax, one byte short", []byte{0xd0}, elf.EM_X86_64, false},
	{"call *0x318(%rcx), one byte past", []byte{0xff, 0x91, 0x18, 0x03, 0x00, 0x00, 0x90}, elf.EM_X86_64, false},
	{"nothing", nil, elf.EM_X86_64, false},

	{"bl (linked, backwards)", le32(0x97fffff0), elf.EM_AARCH64, true},
	{"bl (clang-14 object)", []byte{0x00, 0x00, 0x00, 0x94}, elf.EM_AARCH64, true},
	{"blr x8", []byte{0x00, 0x01, 0x3f, 0xd6}, elf.EM_AARCH64, true},
	{"blr x30", le32(0xd63f03c0), elf.EM_AARCH64, true},
	{"ret", []byte{0xc0, 0x03, 0x5f, 0xd6}, elf.EM_AARCH64, false},
	{"br x8", le32(0xd61f0100), elf.EM_AARCH64, false},
	{"b (not bl)", le32(0x17fffff0), elf.EM_AARCH64, false},
	{"add w0, w8, #1", []byte{0x00, 0x05, 0x00, 0x11}, elf.EM_AARCH64, false},
	{"blr x8 then a byte", []byte{0x00, 0x01, 0x3f, 0xd6, 0x00}, elf.EM_AARCH64, false},
	{"3 bytes", []byte{0x01, 0x3f, 0xd6}, elf.EM_AARCH64, false},

	{"E8 on another machine", []byte{0xe8, 0, 0, 0, 0}, elf.EM_386, false},
}

func le32(w uint32) []byte { return binary.LittleEndian.AppendUint32(nil, w) }

func TestCallBefore(t *testing.T) {
	for _, c := range callCases {
		if got := CallBefore(c.code, c.machine); got != c.call {
			t.Errorf("%s (% x): call before = %v, want %v", c.name, c.code, got, c.call)
		}
	}
}

// noinlineCaller returns its return address in its caller, which the Go
// compiler emits as a call: a real return address of this very binary.
//
//go:noinline
func noinlineCaller() uint64 {
	pcs := make([]uintptr, 1)
	runtime.Callers(2, pcs)
	return uint64(pcs[0])
}

// In this process: a return address is one, the entry of a function is
// not, nor is an address outside every executable mapping; whether the
// bytes were read from memory with the snapshot or from the file later.
func TestIsReturnAddressInThisProcess(t *testing.T) {
	ret := noinlineCaller()
	entry := uint64(reflect.ValueOf(TestCallBefore).Pointer())
	var onStack uint64
	data := uint64(reflect.ValueOf(&onStack).Pointer())
	exe, _ := os.Executable()
	for _, check := range [][]uint64{nil, {ret, entry, data}} {
		r := NewResolver(DefaultCacheSize)
		snap, err := r.Snapshot(os.Getpid(), check...)
		if err != nil {
			t.Fatal(err)
		}
		if len(snap.code) != len(check) {
			t.Errorf("bytes of %d addresses read, want %d", len(snap.code), len(check))
		}
		if !snap.IsReturnAddress(ret) {
			t.Errorf("return address %#x into this test: not a return address", ret)
		}
		if snap.IsReturnAddress(entry) {
			t.Errorf("TestCallBefore's entry %#x taken for a return address", entry)
		}
		if snap.IsReturnAddress(data) {
			t.Error("a data address taken for a return address")
		}
		if want := filepath.Base(exe); snap.Executable != want {
			t.Errorf("executable %q, want %q", snap.Executable, want)
		}
	}
}

// The check reads a few bytes of the mapped file each time it is asked:
// nothing is kept per binary.
func BenchmarkIsReturnAddress(b *testing.B) {
	ret := noinlineCaller()
	snap, err := NewResolver(DefaultCacheSize).Snapshot(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if !snap.IsReturnAddress(ret) {
			b.Fatal("not a return address")
		}
	}
}

// Any bytes on any machine: an answer, never a panic, and the answer
// depends only on the last maxCallLen bytes.
func FuzzCallBefore(f *testing.F) {
	for _, c := range callCases {
		f.Add(c.code, uint16(c.machine))
	}
	f.Fuzz(func(t *testing.T, code []byte, machine uint16) {
		got := CallBefore(code, elf.Machine(machine))
		if len(code) > maxCallLen {
			if tail := CallBefore(code[len(code)-maxCallLen:], elf.Machine(machine)); tail != got {
				t.Errorf("% x: %v, its last %d bytes: %v", code, got, maxCallLen, tail)
			}
		}
	})
}
