package main

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/base64"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cpioRead parses a newc archive the way the kernel's initramfs unpacker
// does and returns its entries in order, failing on any misalignment.
type cpioRead struct {
	name   string
	mode   uint32
	data   string
	rmajor uint32
	rminor uint32
}

func parseCPIO(t *testing.T, b []byte) []cpioRead {
	t.Helper()
	var out []cpioRead
	off := 0
	field := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+6+8*i+8]), 16, 32)
		if err != nil {
			t.Fatalf("offset %d field %d: %v", off, i, err)
		}
		return uint32(v)
	}
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off%4 != 0 || off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("no header at offset %d", off)
		}
		mode, size, rmaj, rmin, namesize := field(1), field(6), field(9), field(10), field(11)
		name := string(b[off+110 : off+110+int(namesize)-1])
		if b[off+110+int(namesize)-1] != 0 {
			t.Fatalf("%s: name not NUL-terminated", name)
		}
		data := align(off + 110 + int(namesize))
		if name == "TRAILER!!!" {
			return out
		}
		out = append(out, cpioRead{name, mode, string(b[data : data+int(size)]), rmaj, rmin})
		off = align(data + int(size))
	}
}

func TestCPIOLayout(t *testing.T) {
	var buf bytes.Buffer
	cw := newCPIOWriter(&buf)
	for _, err := range []error{
		cw.Dir("bin", 0o755),
		cw.Bytes("bin/a", 0o644, []byte("x")),        // data needs 3 bytes of padding
		cw.Bytes("bin/abcd", 0o755, []byte("12345")), // name and data both padded
		cw.Bytes("empty", 0o600, nil),
		cw.Symlink("bin/sh", "busybox"),
		cw.Char("/dev/console", 0o600, 5, 1), // a leading slash is dropped
		cw.Close(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	got := parseCPIO(t, buf.Bytes())
	want := []cpioRead{
		{"bin", cpioDir | 0o755, "", 0, 0},
		{"bin/a", cpioFile | 0o644, "x", 0, 0},
		{"bin/abcd", cpioFile | 0o755, "12345", 0, 0},
		{"empty", cpioFile | 0o600, "", 0, 0},
		{"bin/sh", cpioSymlink | 0o777, "busybox", 0, 0},
		{"dev/console", cpioChar | 0o600, "", 5, 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("entries\n got %+v\nwant %+v", got, want)
	}
}

// The image holds busybox, the binary, /init, the arguments one a line,
// the environment, the module tree at its own path (not its hidden
// folders or bin/), and every folder before what it holds.
func TestImage(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "mod")
	for _, f := range []string{"go.mod", "docs/a.md", "pkg/x/x.go", ".git/HEAD", "bin/big", ".cache/k"} {
		p := filepath.Join(tree, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(f), 0o644)
	}
	bb, bin := filepath.Join(dir, "busybox"), filepath.Join(dir, "x.test")
	os.WriteFile(bb, []byte("BB"), 0o755)
	os.WriteFile(bin, []byte("TEST"), 0o755)
	im := &image{
		busybox: bb, binary: bin, outDev: "/dev/hvc0",
		args:    []string{"-test.run=^TestA$", "a b"},
		env:     []string{"CI=true"},
		workdir: filepath.Join(tree, "pkg/x"),
		tree:    tree,
		outputs: []output{{path: "/out/cover/c.out"}},
		token:   "@@tok@@",
	}
	file := filepath.Join(dir, "initrd")
	if err := writeImage(file, im); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]cpioRead{}
	for _, e := range parseCPIO(t, raw) {
		if _, dup := seen[e.name]; dup {
			t.Errorf("%s twice", e.name)
		}
		if parent := filepath.Dir(e.name); parent != "." {
			if p, ok := seen[parent]; !ok || p.mode&0o170000 != cpioDir && p.mode&0o170000 != cpioSymlink {
				t.Errorf("%s before its folder", e.name)
			}
		}
		seen[e.name] = e
	}
	mod := strings.TrimPrefix(tree, "/")
	for name, data := range map[string]string{
		"bin/busybox":       "BB",
		"vmexec/x.test":     "TEST",
		"vmexec/args":       "-test.run=^TestA$\na b\n",
		"vmexec/env":        "CI=true\n",
		mod + "/go.mod":     "go.mod",
		mod + "/docs/a.md":  "docs/a.md",
		mod + "/pkg/x/x.go": "pkg/x/x.go",
	} {
		if e, ok := seen[name]; !ok || e.data != data {
			t.Errorf("%s: %q, want %q", name, e.data, data)
		}
	}
	for _, name := range []string{mod + "/.git/HEAD", mod + "/bin/big", mod + "/.cache/k"} {
		if _, ok := seen[name]; ok {
			t.Errorf("%s is in the image", name)
		}
	}
	for _, name := range []string{"out/cover", "dev/console", "init", "bin/sh"} {
		if _, ok := seen[name]; !ok {
			t.Errorf("%s is missing", name)
		}
	}
	if init := seen["init"].data; !strings.Contains(init, "token='@@tok@@'") || !strings.Contains(init, "cd '"+im.workdir+"'") || !strings.Contains(init, "out='/dev/hvc0'\n") {
		t.Errorf("/init does not use the token, the working folder or the output device:\n%s", init)
	}
}

// The guest's stream, cut at every byte: the output comes out whole and
// without the reports, whose token may be split between reads.
func TestReportsAnySplit(t *testing.T) {
	const tok = "@@tok@@"
	dir := t.TempDir()
	file := filepath.Join(dir, "sub", "cpu.out")
	content := bytes.Repeat([]byte("profile\x00\xff"), 30)
	enc := base64.StdEncoding.EncodeToString(content)
	stream := tok + " START 6.1.0\n" +
		"=== RUN TestA\n@@to not a token @@\n--- PASS: TestA\nPASS" + // no newline before the report
		tok + " EXIT 7\n" +
		tok + " FILE " + file + "\n" + enc[:76] + "\n" + enc[76:] + "\n" + tok + " END\n" +
		tok + " DONE\n"
	wantOut := "=== RUN TestA\n@@to not a token @@\n--- PASS: TestA\nPASS"
	for cut := 0; cut <= len(stream); cut++ {
		os.RemoveAll(filepath.Join(dir, "sub"))
		var out bytes.Buffer
		r := newReports(tok, &out, func(p string) bool { return p == file })
		r.Write([]byte(stream[:cut]))
		r.Write([]byte(stream[cut:]))
		r.Flush()
		if out.String() != wantOut || r.err != nil || !r.exited || r.status != 7 || !r.done || r.release != "6.1.0" {
			t.Fatalf("cut %d: output %q, err %v, exited %v status %d done %v release %q",
				cut, out.String(), r.err, r.exited, r.status, r.done, r.release)
		}
		if got, err := os.ReadFile(file); err != nil || !bytes.Equal(got, content) {
			t.Fatalf("cut %d: copied file %q, %v", cut, got, err)
		}
	}
}

// DONE repeats the exit status: when the EXIT line was lost on the serial
// port the status still arrives, and the output says it was recovered;
// with EXIT present, DONE's copy changes nothing.
func TestReportsStatusFromDone(t *testing.T) {
	const tok = "@@tok@@"
	for _, c := range []struct {
		stream, out string
		status      int
	}{
		{"PASS\n" + tok + " DONE 3\n", "PASS\nvmexec: the guest's EXIT report was lost; its DONE report carried the status\n", 3},
		{"PASS\n" + tok + " EXIT 0\n" + tok + " DONE 0\n", "PASS\n", 0},
	} {
		var out bytes.Buffer
		r := newReports(tok, &out, nil)
		r.Write([]byte(c.stream))
		r.Flush()
		if !r.exited || r.status != c.status || !r.done || out.String() != c.out {
			t.Errorf("%q: exited %v status %d done %v output %q; want status %d, output %q", c.stream, r.exited, r.status, r.done, out.String(), c.status, c.out)
		}
	}
	// DONE without a status (the guest never ran the test) is no status.
	r := newReports(tok, io.Discard, nil)
	r.Write([]byte(tok + " DONE\n"))
	if r.exited || !r.done {
		t.Errorf("bare DONE: exited %v done %v", r.exited, r.done)
	}
}

// Output that ends in part of the token is output after all.
func TestReportsPartialTokenAtEnd(t *testing.T) {
	var out bytes.Buffer
	r := newReports("@@tok@@", &out, nil)
	r.Write([]byte("panic: x\n@@to"))
	if out.String() != "panic: x\n" {
		t.Fatalf("before the end: %q", out.String())
	}
	r.Flush()
	if out.String() != "panic: x\n@@to" || r.exited {
		t.Fatalf("at the end: %q, exited %v", out.String(), r.exited)
	}
}

// A file the test was not asked to write is refused.
func TestReportsRefuseUnaskedFile(t *testing.T) {
	var out bytes.Buffer
	r := newReports("@@t@@", &out, func(string) bool { return false })
	r.Write([]byte("@@t@@ FILE /etc/passwd\naGk=\n@@t@@ END\n"))
	if r.err == nil || len(r.received) != 0 {
		t.Fatalf("err %v, received %v", r.err, r.received)
	}
}

func TestOutputs(t *testing.T) {
	got := outputs([]string{
		"-test.paniconexit0", "-test.timeout=10m0s",
		"-test.cpuprofile=cpu.out", "-test.outputdir=/o",
		"-test.coverprofile", "/abs/c.out", // a separate value
		"-test.gocoverdir=/tmp/cov", "-test.run=x",
	}, "/pkg")
	want := []output{{path: "/o/cpu.out"}, {path: "/abs/c.out"}, {path: "/tmp/cov", dir: true}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("outputs %+v, want %+v", got, want)
	}
	if got := outputs([]string{"-test.trace=t.out"}, "/pkg"); !reflect.DeepEqual(got, []output{{path: "/pkg/t.out"}}) {
		t.Fatalf("without -test.outputdir: %+v", got)
	}
}

func TestGuestEnv(t *testing.T) {
	c := &config{extraEnv: "HOME, EXTRA"}
	got := c.guestEnv([]string{
		"CI=true", "TWTRACE_X=1", "TWTRACE_VM_KERNEL=6.1", "PATH=/usr/bin", "GOGC=50",
		"EXTRA=a b", "HOME=/root", "TWTRACE_Y=two\nlines", "GOFLAGS=-mod=mod",
	})
	want := []string{"CI=true", "TWTRACE_X=1", "GOGC=50", "EXTRA=a b", "HOME=/root"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("guest env %q, want %q", got, want)
	}
}

func TestCheckStatic(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	host := map[string]*guestArch{"amd64": archAMD64, "arm64": archARM64}[runtime.GOARCH]
	// This test binary is static when built with CGO_ENABLED=0, as make
	// vmtest builds it; /bin/sh is dynamically linked on Debian.
	if os.Getenv("CGO_ENABLED") == "0" && host != nil {
		if err := checkStatic(self, host); err != nil {
			t.Errorf("%s: %v", self, err)
		}
	}
	if err := checkStatic("/bin/sh", archAMD64); err != nil && !strings.Contains(err.Error(), "dynamically linked") && !strings.Contains(err.Error(), "not EM_X86_64") {
		t.Errorf("/bin/sh: %v", err)
	}
	if err := checkStatic(filepath.Join(t.TempDir(), "none"), archAMD64); err == nil {
		t.Error("a missing file passed")
	}
	dir := t.TempDir()
	arm, armDyn := filepath.Join(dir, "arm"), filepath.Join(dir, "arm-dyn")
	writeELF(t, arm, elf.EM_AARCH64, false)
	writeELF(t, armDyn, elf.EM_AARCH64, true)
	if err := checkStatic(arm, archARM64); err != nil {
		t.Errorf("a static aarch64 binary for arm64: %v", err)
	}
	if err := checkStatic(arm, archAMD64); err == nil || !strings.Contains(err.Error(), "is for EM_AARCH64, not EM_X86_64") {
		t.Errorf("a static aarch64 binary for amd64: %v", err)
	}
	if err := checkStatic(armDyn, archARM64); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("a dynamic aarch64 binary: %v", err)
	}
}

// writeELF writes a minimal ELF64 executable for machine, with a PT_INTERP
// program header if dynamic.
func writeELF(t *testing.T, file string, machine elf.Machine, dynamic bool) {
	t.Helper()
	le := binary.LittleEndian
	h := make([]byte, 64)
	copy(h, elf.ELFMAG)
	h[elf.EI_CLASS], h[elf.EI_DATA], h[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	le.PutUint16(h[16:], uint16(elf.ET_EXEC))
	le.PutUint16(h[18:], uint16(machine))
	le.PutUint32(h[20:], uint32(elf.EV_CURRENT))
	le.PutUint16(h[52:], 64) // e_ehsize
	le.PutUint16(h[54:], 56) // e_phentsize
	if dynamic {
		le.PutUint64(h[32:], 64) // e_phoff
		le.PutUint16(h[56:], 1)  // e_phnum
		ph := make([]byte, 56)
		le.PutUint32(ph[0:], uint32(elf.PT_INTERP))
		le.PutUint64(ph[8:], 120) // p_offset: the path below
		le.PutUint64(ph[32:], 8)  // p_filesz
		le.PutUint64(ph[40:], 8)  // p_memsz
		h = append(append(h, ph...), "/ld.so\x00\x00"...)
	}
	if err := os.WriteFile(file, h, 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestArchOf(t *testing.T) {
	for m, want := range map[elf.Machine]*guestArch{elf.EM_X86_64: archAMD64, elf.EM_AARCH64: archARM64} {
		if got, err := archOf(m); got != want || err != nil {
			t.Errorf("%v: %v, %v; want %s", m, got, err, want.name)
		}
	}
	if got, err := archOf(elf.EM_RISCV); err == nil || !strings.Contains(err.Error(), "no guest for EM_RISCV binaries") {
		t.Errorf("EM_RISCV: %v, %v", got, err)
	}
}

// Kernel images are told apart by their headers, gzip'd or not.
func TestKernelArch(t *testing.T) {
	dir := t.TempDir()
	bz := make([]byte, 0x400)
	copy(bz[0x202:], "HdrS")
	img := make([]byte, 0x400)
	copy(img[56:], "ARM\x64")
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	for _, c := range []struct {
		name string
		data []byte
		want *guestArch
	}{
		{"bzImage", bz, archAMD64},
		{"Image", img, archARM64},
		{"Image.gz", gz(img), archARM64},
		{"bzImage.gz", gz(bz), archAMD64},
		{"short", []byte("ARM"), nil},
		{"other", make([]byte, 0x400), nil},
		{"bad.gz", []byte{0x1f, 0x8b, 0, 0}, nil},
	} {
		p := filepath.Join(dir, c.name)
		os.WriteFile(p, c.data, 0o644)
		if got, err := kernelArch(p); got != c.want || err != nil {
			t.Errorf("%s: %v, %v; want %v", c.name, got, err, c.want)
		}
	}
	if _, err := kernelArch(filepath.Join(dir, "none")); err == nil {
		t.Error("a missing file passed")
	}
	// The kernels the cache holds, if any.
	wd, _ := os.Getwd()
	cache := filepath.Join(moduleRoot(wd), ".cache", "vmtest", "kernels")
	for series, want := range map[string]*guestArch{"5.10": archAMD64, "6.1": archAMD64, "6.12": archAMD64, "arm64-6.12": archARM64} {
		p := filepath.Join(cache, series, "vmlinuz")
		if _, err := os.Stat(p); err != nil {
			continue
		}
		t.Logf("%s: %s", series, p)
		if got, err := kernelArch(p); got != want || err != nil {
			t.Errorf("%s: %v, %v; want %s", p, got, err, want.name)
		}
	}
}

func TestCheckKernelArch(t *testing.T) {
	dir := t.TempDir()
	img := make([]byte, 0x400)
	copy(img[56:], "ARM\x64")
	p := filepath.Join(dir, "vmlinuz")
	os.WriteFile(p, img, 0o644)
	if err := checkKernelArch(p, archARM64, "x.test"); err != nil {
		t.Errorf("arm64 kernel, arm64 binary: %v", err)
	}
	err := checkKernelArch(p, archAMD64, "x.test")
	if want := "kernel " + p + " is for arm64 but x.test is for amd64: build the tests with GOARCH=arm64, or boot an amd64 kernel"; err == nil || err.Error() != want {
		t.Errorf("arm64 kernel, amd64 binary: %v\nwant %s", err, want)
	}
	os.WriteFile(p, []byte("unknown"), 0o644)
	if err := checkKernelArch(p, archAMD64, "x.test"); err != nil {
		t.Errorf("a kernel of unknown format: %v", err)
	}
}

// The qemu arguments: those of x86-64 are what they were before arm64
// came; arm64 boots virt with its console on the PL011 and the second
// channel on a virtio console.
func TestQemuArgs(t *testing.T) {
	v := &vm{arch: archAMD64, accel: "tcg,thread=single", kernel: "/k", initrd: "/i", append: "console=ttyS0", mem: 2048, smp: 2}
	want := []string{
		"-accel", "tcg,thread=single", "-cpu", "max",
		"-smp", "2", "-m", "2048",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", "/k", "-initrd", "/i", "-append", "console=ttyS0",
		"-chardev", "socket,id=con,path=/c", "-serial", "chardev:con",
		"-chardev", "socket,id=out,path=/o", "-serial", "chardev:out",
	}
	if got := v.args("/c", "/o"); !reflect.DeepEqual(got, want) {
		t.Errorf("amd64:\n got %q\nwant %q", got, want)
	}
	v.arch = archARM64
	want = []string{
		"-accel", "tcg,thread=single", "-machine", "virt", "-cpu", "max,pauth-impdef=on",
		"-smp", "2", "-m", "2048",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", "/k", "-initrd", "/i", "-append", "console=ttyS0",
		"-chardev", "socket,id=con,path=/c", "-serial", "chardev:con",
		"-chardev", "socket,id=out,path=/o",
		"-device", "virtio-serial-pci,id=vser", "-device", "virtconsole,bus=vser.0,chardev=out",
	}
	if got := v.args("/c", "/o"); !reflect.DeepEqual(got, want) {
		t.Errorf("arm64:\n got %q\nwant %q", got, want)
	}
	// The arguments must not share a backing array between two calls.
	if a := v.args("/c", "/o"); &a[0] == &archARM64.machineArgs[0] {
		t.Error("args aliases the architecture's arguments")
	}
}

// The default busybox is the cache's for the architecture; -qemu, when
// set, wins over the architecture's qemu.
func TestFindBusyboxAndQemu(t *testing.T) {
	cache := t.TempDir()
	os.MkdirAll(filepath.Join(cache, "busybox", "arm64"), 0o755)
	writeELF(t, filepath.Join(cache, "busybox", "busybox"), elf.EM_X86_64, false)
	writeELF(t, filepath.Join(cache, "busybox", "arm64", "busybox"), elf.EM_AARCH64, false)
	t.Setenv("PATH", t.TempDir()) // no busybox in PATH
	c := &config{cache: cache}
	for _, a := range guestArches {
		got, err := c.findBusybox(a)
		if want := filepath.Join(cache, a.busybox); got != want || err != nil {
			t.Errorf("%s: %q, %v; want %q", a.name, got, err, want)
		}
		if got := c.qemuFor(a); got != a.qemu {
			t.Errorf("%s: qemu %q", a.name, got)
		}
	}
	os.Remove(filepath.Join(cache, "busybox", "arm64", "busybox"))
	if _, err := c.findBusybox(archARM64); err == nil || !strings.Contains(err.Error(), "make vmtest-kernels KERNELS=arm64-6.12") {
		t.Errorf("no arm64 busybox: %v", err)
	}
	c.busybox = filepath.Join(cache, "busybox", "busybox")
	if _, err := c.findBusybox(archARM64); err == nil || !strings.Contains(err.Error(), "not EM_AARCH64") {
		t.Errorf("-busybox for x86-64 with an arm64 test: %v", err)
	}
	c.qemu = "/opt/qemu"
	if got := c.qemuFor(archARM64); got != "/opt/qemu" {
		t.Errorf("-qemu: %q", got)
	}
}

// The configuration beside the kernel: Debian's /boot naming first, then
// the cache's.
func TestKernelConfig(t *testing.T) {
	dir := t.TempDir()
	if got := kernelConfig(filepath.Join(dir, "vmlinuz")); got != "" {
		t.Fatalf("no configuration: %q", got)
	}
	os.WriteFile(filepath.Join(dir, "config"), nil, 0o644)
	if got := kernelConfig(filepath.Join(dir, "vmlinuz")); got != filepath.Join(dir, "config") {
		t.Fatalf("cache layout: %q", got)
	}
	os.WriteFile(filepath.Join(dir, "config-6.1.0-9-cloud-amd64"), nil, 0o644)
	if got := kernelConfig(filepath.Join(dir, "vmlinuz-6.1.0-9-cloud-amd64")); got != filepath.Join(dir, "config-6.1.0-9-cloud-amd64") {
		t.Fatalf("/boot layout: %q", got)
	}
}

func TestTestTimeout(t *testing.T) {
	for _, c := range []struct {
		args []string
		want time.Duration
	}{
		{[]string{"-test.paniconexit0", "-test.timeout=10m0s", "-test.v=true"}, 10 * time.Minute},
		{[]string{"-test.timeout=0s"}, 0},
		{[]string{"-test.run=x"}, 0},
	} {
		if got := testTimeout(c.args); got != c.want {
			t.Errorf("%q: %v, want %v", c.args, got, c.want)
		}
	}
}
