package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"reflect"
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
		busybox: bb, binary: bin,
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
	if init := seen["init"].data; !strings.Contains(init, "token='@@tok@@'") || !strings.Contains(init, "cd '"+im.workdir+"'") {
		t.Errorf("/init does not use the token or the working folder:\n%s", init)
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
	// This test binary is static when built with CGO_ENABLED=0, as make
	// vmtest builds it; /bin/sh is dynamically linked on Debian.
	if os.Getenv("CGO_ENABLED") == "0" {
		if err := checkStatic(self); err != nil {
			t.Errorf("%s: %v", self, err)
		}
	}
	if err := checkStatic("/bin/sh"); err != nil && !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("/bin/sh: %v", err)
	}
	if err := checkStatic(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("a missing file passed")
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
