package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twtrace/twtrace/pkg/load"
)

// The tests run the real binary, built once by TestMain.
var (
	twload   string // path of the binary; "" if it could not be built
	buildErr error
	noGo     bool // no go command to build with
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "twload-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	twload, buildErr = build(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// build builds this package into dir.
func build(dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		noGo = true
		return "", err
	}
	bin := filepath.Join(dir, "twload")
	out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v: %s", err, out)
	}
	return bin, nil
}

// needBinary skips the test without a go command to build twload, except
// under CI=true, and fails it if the build failed.
func needBinary(t *testing.T) {
	t.Helper()
	switch {
	case twload != "":
	case noGo && os.Getenv("CI") != "true":
		t.Skipf("cannot build twload: %v", buildErr)
	default:
		t.Fatal(buildErr)
	}
}

// needRoot skips the test without root, except under CI=true.
func needRoot(t *testing.T) {
	t.Helper()
	needBinary(t)
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and not root: --netns-new cannot be tested")
		}
		t.Skip("needs root for --netns-new")
	}
}

// isolated prepends --netns-new to args as root, so that the run's
// TIME_WAIT sockets die with its namespace.
func isolated(args ...string) []string {
	if os.Geteuid() == 0 {
		return append([]string{"--netns-new"}, args...)
	}
	return args
}

// twloadRun runs the binary and returns its exit status, stdout and stderr.
func twloadRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(twload, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	case err != nil:
		t.Fatal(err)
	}
	return 0, stdout.String(), stderr.String()
}

// runJSON runs the binary with -o json, expects success, and decodes the
// report.
func runJSON(t *testing.T, args ...string) load.Result {
	t.Helper()
	code, stdout, stderr := twloadRun(t, append(args, "-o", "json")...)
	if code != 0 {
		t.Fatalf("twload %s: exit status %d: %s", strings.Join(args, " "), code, stderr)
	}
	return decodeReport(t, stdout)
}

// decodeReport checks that out is exactly one JSON object with the
// documented fields, and decodes it.
func decodeReport(t *testing.T, out string) load.Result {
	t.Helper()
	if strings.Count(out, "\n") != 1 {
		t.Errorf("report is not one line: %q", out)
	}
	var fields map[string]any
	if err := json.Unmarshal([]byte(out), &fields); err != nil {
		t.Fatalf("report %q: %v", out, err)
	}
	want := []string{"mode", "clients", "family", "addr", "duration_s", "attempts", "connections", "connects_per_s", "errors", "server_accepted"}
	if got := slices.Sorted(maps.Keys(fields)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Errorf("report fields %v, want %v", got, want)
	}
	var res load.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	return res
}

func checkExact(t *testing.T, res load.Result, attempts, connections int64, errs map[string]int64) {
	t.Helper()
	if res.Attempts != attempts || res.Connections != connections {
		t.Errorf("attempts %d, connections %d; want %d, %d", res.Attempts, res.Connections, attempts, connections)
	}
	if !maps.Equal(res.Errors, errs) {
		t.Errorf("errors %v, want %v", res.Errors, errs)
	}
	if res.ServerAccepted == nil {
		t.Error("no server_accepted")
	} else if *res.ServerAccepted != connections {
		t.Errorf("server accepted %d, want %d", *res.ServerAccepted, connections)
	}
}

func TestNetnsExactCounts(t *testing.T) {
	needRoot(t)
	for _, mode := range []string{"client-close", "server-close"} {
		for _, family := range []string{"ipv4", "ipv6"} {
			t.Run(mode+"/"+family, func(t *testing.T) {
				args := []string{"--netns-new", "--mode", mode, "--connections", "500", "--duration", "0"}
				if family == "ipv6" {
					args = append(args, "-6")
				}
				res := runJSON(t, args...)
				checkExact(t, res, 500, 500, map[string]int64{})
				if string(res.Mode) != mode || res.Family != family || res.Clients != 4 {
					t.Errorf("mode %q, family %q, clients %d; want %q, %q, 4", res.Mode, res.Family, res.Clients, mode, family)
				}
			})
		}
	}
}

// A namespace with 10 ephemeral ports and no TIME_WAIT reuse: the built-in
// server's listener takes one (its port is ephemeral too), the client the
// other 9, and then connect fails with EADDRNOTAVAIL. (The range must have
// an even size: connect searches only an even number of its ports.)
func TestNetnsSysctlPortExhaustion(t *testing.T) {
	needRoot(t)
	res := runJSON(t, "--netns-new", "--sysctl", "net.ipv4.ip_local_port_range=40000 40009",
		"--sysctl", "net.ipv4.tcp_tw_reuse=0", "--clients", "1", "--connections", "15", "--duration", "0")
	checkExact(t, res, 15, 9, map[string]int64{"EADDRNOTAVAIL": 6})
}

// A failure in the namespace is the child's: its message and status get
// through the parent.
func TestNetnsChildFailure(t *testing.T) {
	needRoot(t)
	code, stdout, stderr := twloadRun(t, "--netns-new", "--sysctl", "net.ipv4.no_such_setting=1", "-n", "1")
	if code != exitError || stdout != "" {
		t.Errorf("exit status %d, stdout %q; want %d and nothing", code, stdout, exitError)
	}
	if !strings.HasPrefix(stderr, "twload: sysctl net.ipv4.no_such_setting: ") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("stderr %q, want one line about the sysctl", stderr)
	}
}

func TestRateLimited(t *testing.T) {
	needBinary(t)
	res := runJSON(t, isolated("--rate", "200", "--connections", "20", "--duration", "0")...)
	checkExact(t, res, 20, 20, map[string]int64{})
}

func TestTextReport(t *testing.T) {
	needBinary(t)
	code, stdout, stderr := twloadRun(t, isolated("-m", "server-close", "-c", "2", "-n", "50")...)
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr)
	}
	if strings.Count(stdout, "\n") != 1 || stderr != "" {
		t.Errorf("stdout %q, stderr %q: want one line, and nothing on stderr", stdout, stderr)
	}
	for _, want := range []string{"server-close ipv4 127.0.0.1:", "2 clients", "50 attempts, 50 connections", "no errors", "server accepted 50"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("report %q lacks %q", stdout, want)
		}
	}
}

// SIGINT to the parent of --netns-new reaches the child, which stops and
// reports; the parent exits with the child's status.
func TestInterruptStillReports(t *testing.T) {
	needRoot(t)
	cmd := exec.Command(twload, "--netns-new", "--duration", "0", "--rate", "1000", "-o", "json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitListening(t, cmd.Process.Pid)
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v: %s", err, stderr.Bytes())
	}
	res := decodeReport(t, stdout.String())
	if len(res.Errors) != 0 || res.Attempts != res.Connections || *res.ServerAccepted != res.Connections {
		t.Errorf("attempts %d, connections %d, errors %v, server accepted %d",
			res.Attempts, res.Connections, res.Errors, *res.ServerAccepted)
	}
}

// waitListening waits until the child of process pid has a listening TCP
// socket in its namespace: by then it catches signals and generates load.
func waitListening(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, child := range children(pid) {
			tcp, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", child))
			for _, line := range strings.Split(string(tcp), "\n")[1:] {
				if f := strings.Fields(line); len(f) > 3 && f[3] == "0A" { // TCP_LISTEN
					return
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the child never listened")
}

// children lists the child processes of pid, started by any of its threads.
func children(pid int) []int {
	var pids []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				pids = append(pids, n)
			}
		}
	}
	return pids
}

// Bad invocations: exit 2 and one line naming the problem, before any load.
func TestBadFlagsExitTwo(t *testing.T) {
	needBinary(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "unknown flag: --bogus"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--clients", "0"}, "invalid number of clients 0"},
		{[]string{"--clients", "many"}, `invalid argument "many"`},
		{[]string{"--mode", "both"}, `--mode: invalid mode "both"`},
		{[]string{"--rate", "-5"}, "invalid rate -5"},
		{[]string{"--duration", "-1s"}, "invalid duration -1s"},
		{[]string{"--duration", "soon"}, `invalid argument "soon"`},
		{[]string{"--connections", "-1"}, "invalid number of connections -1"},
		{[]string{"-o", "yaml"}, `invalid --output "yaml"`},
		{[]string{"--addr", "localhost"}, `invalid address "localhost"`},
		{[]string{"--addr", "localhost:0"}, `invalid address "localhost:0"`},
		{[]string{"--netns-new", "--addr", "127.0.0.1:80"}, "--netns-new and --addr exclude each other"},
		{[]string{"--sysctl", "net.ipv4.tcp_tw_reuse=0"}, "--sysctl needs --netns-new"},
		{[]string{"--netns-new", "--sysctl", "kernel.pid_max=100"}, `invalid sysctl key "kernel.pid_max"`},
		{[]string{"--netns-new", "--sysctl", "net.ipv4.tcp_tw_reuse"}, "want key=value"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := twloadRun(t, tc.args...)
			if code != exitUsage {
				t.Errorf("exit status %d, want %d", code, exitUsage)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			if !strings.HasPrefix(stderr, "twload: ") || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q, want one line \"twload: ...%s...\"", stderr, tc.want)
			}
		})
	}
}

func TestWithoutFlag(t *testing.T) {
	got := withoutFlag([]string{"--netns-new", "-n", "5", "--netns-new=true", "--netns-newer", "--", "--netns-new"}, "netns-new")
	want := []string{"-n", "5", "--netns-newer", "--", "--netns-new"}
	if !slices.Equal(got, want) {
		t.Errorf("withoutFlag = %q, want %q", got, want)
	}
}

func TestSummary(t *testing.T) {
	accepted := int64(7)
	res := load.Result{
		Mode: load.ClientClose, Clients: 2, Family: "ipv6", Addr: "[::1]:8080", DurationSec: 1.5,
		Attempts: 10, Connections: 7, ConnectsPerSec: 4.7,
		Errors:         map[string]int64{"ECONNREFUSED": 1, "EADDRNOTAVAIL": 2},
		ServerAccepted: &accepted,
	}
	want := "client-close ipv6 [::1]:8080: 2 clients, 1.500s, 10 attempts, 7 connections (5/s), " +
		"errors EADDRNOTAVAIL=2, ECONNREFUSED=1; server accepted 7"
	if got := summary(res); got != want {
		t.Errorf("summary:\n got %q\nwant %q", got, want)
	}
	res.Errors, res.ServerAccepted = map[string]int64{}, nil
	if got := summary(res); !strings.HasSuffix(got, ", no errors") {
		t.Errorf("summary without errors or server: %q", got)
	}
}
