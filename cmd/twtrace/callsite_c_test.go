package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/report"
)

// perRequestSource is the C client of these tests, and the line of its
// connect() call (marked "the call site").
func perRequestSource(t *testing.T) (src string, line int) {
	t.Helper()
	src, err := filepath.Abs("testdata/per_request.c")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		if strings.Contains(sc.Text(), "/* the call site */") {
			return src, n
		}
	}
	t.Fatalf("%s: no line marked as the call site", src)
	return "", 0
}

// buildPerRequest compiles the C client with clang-14 and flags, as name.
// C compiles without warnings here too.
func buildPerRequest(t *testing.T, name string, flags ...string) string {
	t.Helper()
	clang := testnet.RequireHost(t, "clang-14")[0]
	src, _ := perRequestSource(t)
	exe := filepath.Join(t.TempDir(), name)
	args := append([]string{"-Wall", "-Wextra", "-Werror"}, flags...)
	cmd := exec.Command(clang, append(args, "-o", exe, src)...)
	cmd.Dir = filepath.Dir(exe) // as a build directory would be: DWARF names the source src
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("clang-14 %v: %v\n%s", flags, err, out)
	}
	return exe
}

// runPerRequest runs the C client under `twtrace run --report` (every
// connect's stack taken), 20 connections toward a server of a private
// namespace, and returns the report's one row (more: the client's
// further arguments). The client lingers a
// second after its connections: its stack is read while it lives (a
// process quicker than the announcement of its stack is the business of
// TestTopCallSiteShortLived).
func runPerRequest(t *testing.T, exe string, more ...string) report.Row {
	t.Helper()
	ns, s := churnNetns(t)
	args := append([]string{"--", exe, s.Addr.Addr().String(), fmt.Sprint(s.Addr.Port()), "20", "1000"}, more...)
	res := twtraceRun(t, ns, args...)
	if res.code != 0 || res.report == nil || len(res.report.Rows) != 1 {
		t.Fatalf("exit %d, report %+v; stdout %s, stderr %s", res.code, res.report, res.stdout, res.stderr)
	}
	row := res.report.Rows[0]
	if row.Connects != 20 {
		t.Errorf("%d connects, want 20", row.Connects)
	}
	return row
}

// A C program built with frame pointers: glibc's connect() sets up no
// frame, so the walk alone goes from libc to main; the return address at
// the stack pointer puts open_per_request back, and the call site is its
// connect() call, exactly.
func TestRunCallSiteOfCWithFramePointers(t *testing.T) {
	requireBPF(t)
	exe := buildPerRequest(t, "per_request_fp", "-O1", "-g", "-fno-omit-frame-pointer")
	src, line := perRequestSource(t)
	row := runPerRequest(t, exe)
	want := fmt.Sprintf("open_per_request (%s:%d)", src, line)
	if row.CallSite != want || row.CallSiteNote != "" || row.ClientLibrary != "" || row.CallSites != nil {
		t.Fatalf("call site %q (note %q, library %q, sites %+v), want %q; stack %+v",
			row.CallSite, row.CallSiteNote, row.ClientLibrary, row.CallSites, want, row.Stack)
	}
	st := row.Stack
	// Frame 0 is in libc; its name is known unless the client exited
	// before its mappings were read (then its executable alone is placed).
	if len(st) < 3 || st[0].Module == "per_request_fp" || st[1].Function != "open_per_request" || st[1].Line != line ||
		st[1].Module != "per_request_fp" || st[2].Function != "main" || st[2].Module != "per_request_fp" {
		t.Errorf("stack %+v: want libc's connect, open_per_request at line %d, main", st, line)
	}
}

// The same program with a second thread: glibc's connect() makes room on
// the stack before the system call, so the word at the stack pointer is
// the sockaddr pointer, not a return address, and nothing puts
// open_per_request back. The walk's frame past libc is main, the caller's
// caller: not named as the call site, and the note says why.
func TestRunCallSiteOfThreadedC(t *testing.T) {
	requireBPF(t)
	exe := buildPerRequest(t, "per_request_mt", "-O1", "-g", "-fno-omit-frame-pointer", "-pthread")
	row := runPerRequest(t, exe, "threaded")
	note := "the caller of connect() is hidden by libc's frameless wrapper"
	if row.CallSite != "" || row.CallSiteNote != note {
		t.Errorf("call site %q, note %q; want \"\", %q; stack %+v", row.CallSite, row.CallSiteNote, note, row.Stack)
	}
	// The stack is true, one frame short: libc, then main.
	if len(row.Stack) < 2 || row.Stack[1].Function != "main" {
		t.Errorf("stack %+v: want libc's connect, then main", row.Stack)
	}
}

// The same program without frame pointers (and without DWARF): the walk
// cannot leave libc, so the stack is unavailable and the executable is
// named; no frame is guessed. Every frame the stack has in the program is
// one of the two true callers, open_per_request or main.
func TestRunCallSiteOfCWithoutFramePointers(t *testing.T) {
	requireBPF(t)
	exe := buildPerRequest(t, "per_request_nofp", "-O2", "-fomit-frame-pointer")
	row := runPerRequest(t, exe)
	note := "stack unavailable (no frame pointers?) in executable per_request_nofp"
	if row.CallSite != "" || row.CallSiteNote != note || row.CallSites != nil {
		t.Errorf("call site %q, note %q, sites %+v; want \"\", %q; stack %+v",
			row.CallSite, row.CallSiteNote, row.CallSites, note, row.Stack)
	}
	for _, f := range row.Stack {
		if f.Module == "per_request_nofp" && f.Function != "open_per_request" && f.Function != "main" {
			t.Errorf("frame %+v claims a function the stack does not pass through", f)
		}
	}
	if len(row.Stack) != 1 || row.Stack[0].Module == "per_request_nofp" {
		t.Errorf("stack %+v: want frame 0 alone, in libc", row.Stack)
	}
}

// topPerRequest runs the C client in a private namespace while `twtrace
// top -o json --count 2` watches it (top's sampling: the first 8 stacks of
// a process and destination, then 1 in 64), and returns the client's row
// of the second frame.
func topPerRequest(t *testing.T, exe string) report.Row {
	t.Helper()
	ns, s := churnNetns(t)
	cmd, stdout, rd := startTopCLI(t, ns)
	// The client lives until top is done: its stack is read while it
	// lives (the race with a quick exit is TestTopCallSiteShortLived's).
	client := exec.Command(exe, s.Addr.Addr().String(), fmt.Sprint(s.Addr.Port()), "20")
	stdin, err := client.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := client.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	ns.Do(t, client.Start)
	defer client.Wait()
	defer stdin.Close()
	said, _ := bufio.NewReader(out).ReadString('\n')
	pid, err := strconv.ParseUint(strings.TrimSpace(said), 10, 32)
	if err != nil {
		t.Fatalf("client printed %q", said)
	}
	f := lastTopFrame(t, cmd, stdout, rd)
	for _, r := range f.Rows {
		if r.PID == uint32(pid) {
			if r.Connects != 20 {
				t.Errorf("%d connects, want 20", r.Connects)
			}
			return r
		}
	}
	t.Fatalf("no row of pid %d in %+v", pid, f.Rows)
	return report.Row{}
}

// Under top, as under run: with frame pointers the connect() line, exactly.
func TestTopCallSiteOfCWithFramePointers(t *testing.T) {
	requireBPF(t)
	exe := buildPerRequest(t, "per_request_fp", "-O1", "-g", "-fno-omit-frame-pointer")
	src, line := perRequestSource(t)
	row := topPerRequest(t, exe)
	if want := fmt.Sprintf("open_per_request (%s:%d)", src, line); row.CallSite != want || row.CallSiteNote != "" {
		t.Errorf("call site %q (note %q), want %q; stack %+v", row.CallSite, row.CallSiteNote, want, row.Stack)
	}
}

// Under top, without frame pointers: unavailable, the executable named.
func TestTopCallSiteOfCWithoutFramePointers(t *testing.T) {
	requireBPF(t)
	exe := buildPerRequest(t, "per_request_nofp", "-O2", "-fomit-frame-pointer")
	row := topPerRequest(t, exe)
	note := "stack unavailable (no frame pointers?) in executable per_request_nofp"
	if row.CallSite != "" || row.CallSiteNote != note {
		t.Errorf("call site %q, note %q; want \"\", %q; stack %+v", row.CallSite, row.CallSiteNote, note, row.Stack)
	}
	for _, f := range row.Stack {
		if f.Module == "per_request_nofp" && f.Function != "open_per_request" && f.Function != "main" {
			t.Errorf("frame %+v claims a function the stack does not pass through", f)
		}
	}
}
