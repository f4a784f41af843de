package symbol

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// requireHost declares that a test builds programs with tools of the host
// (go, clang-14) and returns their paths. In a VM guest, which holds only
// the test binary, the test skips; on a host a missing tool skips it too,
// except under CI=true, where it fails.
func requireHost(t *testing.T, tools ...string) []string {
	t.Helper()
	if os.Getenv("TWTRACE_VM_GUEST") == "1" {
		t.Skipf("host-only: needs %v, which a VM guest does not hold", tools)
	}
	paths := make([]string, len(tools))
	for i, tool := range tools {
		p, err := exec.LookPath(tool)
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("CI=true and %s is missing: %v", tool, err)
			}
			t.Skipf("needs %s: %v", tool, err)
		}
		paths[i] = p
	}
	return paths
}

// reported is what a test program printed about its call site: a return
// address, its line and file, and the calls inlined there (Go), innermost
// last.
type reported struct {
	pc      uint64
	line    int
	file    string
	inlined []Frame
}

// running is a started test program, alive until its stdin is closed.
type running struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	said  reported
}

func start(t *testing.T, exe string) *running {
	t.Helper()
	cmd := exec.Command(exe)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &running{cmd: cmd, stdin: stdin}
	t.Cleanup(func() { p.exit(t) })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("reading what %s reports: %v", exe, err)
	}
	fields := strings.Fields(line)
	if len(fields) < 3 || len(fields)%2 == 0 {
		t.Fatalf("%s reported %q", exe, line)
	}
	p.said.pc, err = strconv.ParseUint(fields[0], 0, 64)
	if err == nil {
		p.said.line, err = strconv.Atoi(fields[1])
	}
	p.said.file = fields[2]
	for i := 3; i < len(fields) && err == nil; i += 2 {
		f := Frame{Function: fields[i], File: p.said.file}
		f.Line, err = strconv.Atoi(fields[i+1])
		p.said.inlined = append(p.said.inlined, f)
	}
	if err != nil {
		t.Fatalf("%s reported %q: %v", exe, line, err)
	}
	return p
}

// exit closes the program's stdin and waits for it to end.
func (p *running) exit(t *testing.T) {
	if p.cmd.ProcessState != nil {
		return
	}
	p.stdin.Close()
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("test program: %v", err)
	}
}

// codeRange reads mm->start_code and mm->end_code, fields 26 and 27 of
// /proc/PID/stat (after the parenthesised command name, which may hold
// spaces, they are fields 24 and 25 of the rest).
func codeRange(t *testing.T, pid int) (start, end uint64) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	rest := data[strings.LastIndexByte(string(data), ')')+2:]
	fields := strings.Fields(string(rest))
	if start, err = strconv.ParseUint(fields[23], 10, 64); err == nil {
		end, err = strconv.ParseUint(fields[24], 10, 64)
	}
	if err != nil || start == 0 {
		t.Fatalf("start_code of pid %d: %q: %v", pid, fields[23], err)
	}
	return start, end
}

func fileID(t *testing.T, path string) FileID {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	return FileID{Dev: sys.Dev, Inode: sys.Ino}
}

func build(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
}

// checkProgram runs a built test program and resolves the address it
// reports three ways: while it lives (maps), then — its biases compared —
// after it has exited (executable and start_code only).
func checkProgram(t *testing.T, exe, function string, wantLine bool) {
	p := start(t, exe)
	pid := p.cmd.Process.Pid
	outer := Frame{Function: function, Module: filepath.Base(exe), Address: p.said.pc}
	if wantLine {
		outer.File, outer.Line = p.said.file, p.said.line
	}
	var want []Frame
	for _, f := range slices.Backward(p.said.inlined) {
		f.Module, f.Address = outer.Module, outer.Address
		want = append(want, f)
	}
	want = append(want, outer)

	r := NewResolver(DefaultCacheSize)
	snap, err := r.Snapshot(pid)
	if err != nil {
		t.Fatal(err)
	}
	live := r.Resolve(snap, []uint64{p.said.pc})
	got := slices.Clone(live)
	for i := range got {
		got[i].FileAddress = 0
	}
	if !slices.Equal(got, want) {
		t.Fatalf("live: frames %+v, want %+v", got, want)
	}

	startCode, endCode := codeRange(t, pid)
	reg := snap.find(p.said.pc)
	bias, _ := reg.bin.BiasFromStartCode(startCode)
	if mapped := p.said.pc - live[0].FileAddress; bias != mapped {
		t.Errorf("bias from start_code %#x = %#x, from the mapping %#x", startCode, bias, mapped)
	}

	p.exit(t)
	exited, err := NewResolver(DefaultCacheSize).ExeSnapshot(pid, fileID(t, exe), exe, startCode, endCode)
	if err != nil {
		t.Fatal(err)
	}
	if after := r.Resolve(exited, []uint64{p.said.pc}); !slices.Equal(after, live) {
		t.Errorf("exited: frames %+v, want %+v", after, live)
	}
}

func TestStrippedGoProgramResolves(t *testing.T) {
	gobin := requireHost(t, "go")[0]
	for _, c := range []struct {
		mode, linkmode string
	}{{"exe", "internal"}, {"pie", "internal"}, {"exe", "external"}, {"pie", "external"}} {
		t.Run(c.mode+" "+c.linkmode, func(t *testing.T) {
			if c.linkmode == "external" {
				requireHost(t, "gcc") // cgo's default C compiler links
			}
			exe := filepath.Join(t.TempDir(), "goopen")
			build(t, "../../internal/testprog/goopen", gobin, "build", "-buildmode="+c.mode,
				"-ldflags=-s -w -linkmode="+c.linkmode, "-o", exe, ".")
			checkProgram(t, exe, "main.openPerRequest", true)
		})
	}
}

// go test runs a binary it has already deleted: its maps say " (deleted)"
// and only /proc/PID/map_files still reaches the file.
func TestDeletedGoProgramResolves(t *testing.T) {
	gobin := requireHost(t, "go")[0]
	exe := filepath.Join(t.TempDir(), "goopen")
	build(t, "../../internal/testprog/goopen", gobin, "build", "-ldflags=-s -w", "-o", exe, ".")
	p := start(t, exe)
	if err := os.Remove(exe); err != nil {
		t.Fatal(err)
	}
	r := NewResolver(DefaultCacheSize)
	snap, err := r.Snapshot(p.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if reg := snap.find(p.said.pc); reg == nil || !reg.Deleted || reg.Path != exe {
		t.Fatalf("mapping of %#x = %+v, want %s marked deleted", p.said.pc, reg, exe)
	}
	frames := r.Resolve(snap, []uint64{p.said.pc})
	if len(frames) != 2 || frames[1].Function != "main.openPerRequest" ||
		frames[1].File != p.said.file || frames[1].Line != p.said.line {
		t.Errorf("frames %+v, want main.dial inlined in main.openPerRequest at %s:%d", frames, p.said.file, p.said.line)
	}
}

func TestCProgramResolves(t *testing.T) {
	clang := requireHost(t, "clang-14")[0]
	src, err := filepath.Abs("../../internal/testprog/copen/copen.c")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		flags     []string
		lines     bool   // DWARF: file and line
		linker    string // lld places the executable segment off a page boundary
		elsewhere bool   // built in another directory than the source's
	}{
		{"DWARF", []string{"-g", "-fno-omit-frame-pointer"}, true, "", false},
		{"symtab only", []string{"-g0"}, false, "", false},
		{"lld", []string{"-g", "-fno-omit-frame-pointer"}, true, "ld.lld-14", false},
		// DWARF 5 names the source by its absolute path: not joined to the
		// compilation directory (as Go's debug/dwarf does).
		{"built elsewhere", []string{"-g", "-fno-omit-frame-pointer"}, true, "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			exe := filepath.Join(t.TempDir(), "copen")
			args := append([]string{clang, "-Wall", "-Wextra", "-Werror", "-O1"}, c.flags...)
			if c.linker != "" {
				args = append(args, "--ld-path="+requireHost(t, c.linker)[0])
			}
			dir := filepath.Dir(src)
			if c.elsewhere {
				dir = filepath.Dir(exe)
			}
			build(t, dir, append(args, "-o", exe, src)...)
			checkProgram(t, exe, "open_per_request", c.lines)
		})
	}
}

// A symbol name is the binary's to choose: resolved raw, printed escaped.
func TestHostileSymbolNameIsEscaped(t *testing.T) {
	clang := requireHost(t, "clang-14")[0]
	src, err := filepath.Abs("../../internal/testprog/copen/copen.c")
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(t.TempDir(), "copen")
	build(t, filepath.Dir(src), clang, "-Wall", "-Werror", "-g0", "-DHOSTILE_NAME", "-o", exe, src)
	p := start(t, exe)
	r := NewResolver(DefaultCacheSize)
	snap, err := r.Snapshot(p.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	frames := r.Resolve(snap, []uint64{p.said.pc})
	if len(frames) != 1 || frames[0].Function != "open_per_request\x1b[2J\u202e" {
		t.Fatalf("frames %+v, want the raw hostile name", frames)
	}
	want := fmt.Sprintf(`open_per_request\x1b[2J\u202e (copen+%#x)`, frames[0].FileAddress)
	if got := frames[0].String(); got != want {
		t.Errorf("screen form %q, want %q", got, want)
	}
}

func TestCPlusPlusNameIsDemangled(t *testing.T) {
	clang := requireHost(t, "clang++-14")[0]
	src, err := filepath.Abs("../../internal/testprog/cppopen/cppopen.cc")
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(t.TempDir(), "cppopen")
	build(t, filepath.Dir(src), clang, "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-fno-omit-frame-pointer", "-o", exe, src)
	checkProgram(t, exe, "shop::Client::openPerRequest(int)", true)
}
