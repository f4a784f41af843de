package main

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// guestArch is what differs between the guests of two architectures: the
// test binary's ELF machine picks one (see archOf), and the kernel must be
// for the same (see kernelArch).
type guestArch struct {
	name    string      // Debian's name: amd64, arm64
	machine elf.Machine // the test binary's and busybox's
	goarch  string      // GOARCH that builds for it
	qemu    string      // default qemu binary
	qemuPkg string      // the Debian package holding it
	// qemu's arguments before the common ones: the machine and CPU.
	machineArgs []string
	console     string // the kernel's console (console=...)
	// The second channel, for the test's output and the reports: qemu's
	// arguments that connect it to the chardev "out", and its device in
	// the guest.
	outArgs []string
	outDev  string
	// busybox's path under the cache, as test/vm/fetch.sh writes it.
	busybox string
}

var (
	// x86-64: two 16550 UARTs, ttyS0 (console) and ttyS1.
	archAMD64 = &guestArch{
		name: "amd64", machine: elf.EM_X86_64, goarch: "amd64",
		qemu: "qemu-system-x86_64", qemuPkg: "qemu-system-x86",
		machineArgs: []string{"-cpu", "max"},
		console:     "ttyS0",
		outArgs:     []string{"-serial", "chardev:out"},
		outDev:      "/dev/ttyS1",
		busybox:     filepath.Join("busybox", "busybox"),
	}
	// arm64: the virt machine has one PL011 UART (ttyAMA0, the console);
	// the second channel is a virtio console (hvc0) on virtio-serial-pci,
	// whose drivers Debian's cloud-arm64 kernel has built in
	// (CONFIG_VIRTIO_PCI=y, CONFIG_VIRTIO_CONSOLE=y). pauth-impdef keeps
	// the CPU's pointer authentication but with QEMU's cheap hash instead
	// of QARMA, which costs much time in TCG.
	archARM64 = &guestArch{
		name: "arm64", machine: elf.EM_AARCH64, goarch: "arm64",
		qemu: "qemu-system-aarch64", qemuPkg: "qemu-system-arm",
		machineArgs: []string{"-machine", "virt", "-cpu", "max,pauth-impdef=on"},
		console:     "ttyAMA0",
		outArgs:     []string{"-device", "virtio-serial-pci,id=vser", "-device", "virtconsole,bus=vser.0,chardev=out"},
		outDev:      "/dev/hvc0",
		busybox:     filepath.Join("busybox", "arm64", "busybox"),
	}
	guestArches = []*guestArch{archAMD64, archARM64}
)

// archOf is the guest architecture that runs a binary for machine m.
func archOf(m elf.Machine) (*guestArch, error) {
	for _, a := range guestArches {
		if a.machine == m {
			return a, nil
		}
	}
	return nil, fmt.Errorf("no guest for %v binaries (known: x86-64, aarch64)", m)
}

// staticELF returns the ELF machine of file, failing unless it is an
// executable without an interpreter: the guest has no C library.
func staticELF(file string) (elf.Machine, error) {
	f, err := elf.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return 0, fmt.Errorf("%s is dynamically linked", file)
		}
	}
	return f.Machine, nil
}

// checkStatic fails unless file is a static ELF executable for a.
func checkStatic(file string, a *guestArch) error {
	m, err := staticELF(file)
	if err != nil {
		return err
	}
	if m != a.machine {
		return fmt.Errorf("%s is for %v, not %v", file, m, a.machine)
	}
	return nil
}

// kernelArch is the architecture a kernel image is for, from its header,
// or nil when the format is not known: an x86 bzImage ("HdrS" at 0x202),
// an arm64 Image ("ARM\x64" at 56), or either compressed with gzip (the
// first bytes are unpacked).
func kernelArch(file string) (*guestArch, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	head := make([]byte, 0x210)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.ErrUnexpectedEOF {
		return nil, err
	}
	head = head[:n]
	if len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		z, err := gzip.NewReader(f)
		if err != nil {
			return nil, nil
		}
		head = make([]byte, 0x210)
		n, _ := io.ReadFull(z, head)
		head = head[:n]
	}
	switch {
	case len(head) >= 0x206 && bytes.Equal(head[0x202:0x206], []byte("HdrS")):
		return archAMD64, nil
	case len(head) >= 60 && bytes.Equal(head[56:60], []byte("ARM\x64")):
		return archARM64, nil
	}
	return nil, nil
}

// args are qemu's arguments for the guest of v.arch; conSock
// and outSock are the Unix sockets of the console and the second channel.
func (v *vm) args(conSock, outSock string) []string {
	a := append([]string{"-accel", v.accel}, v.arch.machineArgs...)
	a = append(a,
		"-smp", fmt.Sprint(v.smp), "-m", fmt.Sprint(v.mem),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", v.kernel, "-initrd", v.initrd, "-append", v.append,
		"-chardev", "socket,id=con,path="+conSock, "-serial", "chardev:con",
		"-chardev", "socket,id=out,path="+outSock,
	)
	return append(a, v.arch.outArgs...)
}
