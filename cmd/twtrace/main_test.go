package main

import (
	"bytes"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/watch"
)

func init() {
	// The capability-dropping child below must check the thread it dropped on.
	runtime.LockOSThread()
}

const dropCapsEnv = "TWTRACE_TEST_DROP_CAPS"

func TestMain(m *testing.M) {
	testnet.RunClientIfAsked()
	if os.Getenv(dropCapsEnv) != "" {
		// Drop every effective capability of this thread, then run watch.
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err == nil {
			data[0].Effective, data[1].Effective = 0, 0
			unix.Capset(&hdr, &data[0])
		}
		args := []string{"watch", "--duration", "1s"}
		if a := os.Getenv(dropCapsEnv); a != "1" {
			args = strings.Fields(a)
		}
		os.Exit(run(args))
	}
	os.Exit(m.Run())
}

// runChild runs this test binary as twtrace with args and returns its exit
// status and stderr.
func runChild(t *testing.T, env string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestCLIHelper$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), env)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stderr.String()
}

// TestCLIHelper is the child's entry point: it runs twtrace on the
// arguments after "--" and exits with its status.
func TestCLIHelper(t *testing.T) {
	if os.Getenv("TWTRACE_TEST_CLI") == "" {
		t.Skip("helper process only")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(run(args))
}

// Bad flags: exit 2 with one line naming the problem, and no stack trace.
func TestBadFlagsExitTwo(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "unknown flag: --bogus"},
		{[]string{"watch", "-o", "yaml"}, `invalid --output "yaml"`},
		{[]string{"watch", "--daddr", "10.0.0.300"}, `--daddr "10.0.0.300"`},
		{[]string{"watch", "--dport", "70000"}, `--dport "70000"`},
		{[]string{"watch", "--pid", "abc"}, `--pid "abc"`},
		{[]string{"watch", "--events", "timewait,nope"}, `nope`},
		{[]string{"watch", "-4", "-6"}, "--ipv4"},
		{[]string{"watch", "--duration", "-1s"}, "invalid --duration"},
		{[]string{"watch", "--max-sockets", "-5"}, "invalid --max-sockets"},
		{[]string{"watch", "extra"}, "unknown command"},
		{[]string{"nosuchcommand"}, "unknown command"},
		{[]string{"top", "-o", "yaml"}, `invalid --output "yaml"`},
		{[]string{"top", "-o", "table"}, "needs a terminal"},
		{[]string{"top", "--interval", "10ms"}, "invalid --interval"},
		{[]string{"top", "--sort", "nope"}, `invalid sort "nope"`},
		{[]string{"top", "--rows", "0"}, "invalid --rows"},
		{[]string{"top", "--count", "-1"}, "invalid --count"},
		{[]string{"top", "--dport", "x"}, `--dport "x"`},
		{[]string{"top", "--duration", "1s"}, "unknown flag: --duration"},
		{[]string{"snapshot", "-o", "yaml"}, `invalid --output "yaml"`},
		{[]string{"snapshot", "--netns", "abc"}, `"abc"`},
		{[]string{"snapshot", "extra"}, "unknown command"},
		{[]string{"run"}, "requires at least 1 arg"},
		{[]string{"run", "--max-timewait", "-5", "--", "true"}, "invalid --max-timewait"},
		{[]string{"run", "--max-connect-rate", "-1.5", "--", "true"}, "invalid --max-connect-rate"},
		{[]string{"run", "--interval", "1ms", "--", "true"}, "invalid --interval"},
		{[]string{"run", "--user", "no-such-user-here", "--", "true"}, "--user no-such-user-here"},
		{[]string{"run", "--events", "nope", "--", "true"}, "nope"},
		{[]string{"agent", "--max-series", "0"}, "invalid --max-series"},
		{[]string{"agent", "--series-ttl", "10s"}, "invalid --series-ttl"},
		{[]string{"agent", "--inventory-interval", "100ms"}, "invalid --inventory-interval"},
		{[]string{"agent", "--max-destinations", "-1"}, "invalid --max-destinations"},
		{[]string{"agent", "--log-format", "xml"}, "invalid --log-format"},
		{[]string{"agent", "--listen", "no-port"}, "listening on no-port"},
		{[]string{"agent", "--web.config.file", "/nonexistent/web.yml"}, "invalid --web.config.file"},
		{[]string{"agent", "--by", "nope"}, "nope"},
		{[]string{"agent", "extra"}, "unknown command"},
	}
	for _, c := range cases {
		code, stderr := runChild(t, "TWTRACE_TEST_CLI=1", c.args...)
		if code != exitUsage {
			t.Errorf("twtrace %v: exit %d, want %d (stderr %q)", c.args, code, exitUsage, stderr)
		}
		first, _, _ := strings.Cut(stderr, "\n")
		if !strings.HasPrefix(first, "twtrace: ") || !strings.Contains(first, c.want) {
			t.Errorf("twtrace %v: first stderr line %q, want it to contain %q", c.args, first, c.want)
		}
		if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") {
			t.Errorf("twtrace %v: stack trace on stderr: %q", c.args, stderr)
		}
	}
}

// Without capabilities: exit 1 with one line naming CAP_BPF and
// CAP_PERFMON, for every command that loads BPF.
func TestMissingCapabilitiesExitOne(t *testing.T) {
	for _, args := range []string{"1", "top -o json --count 1", "snapshot", "run -- true"} {
		code, stderr := runChild(t, dropCapsEnv+"="+args)
		if code != exitError {
			t.Fatalf("%s: exit %d, want %d (stderr %q)", args, code, exitError, stderr)
		}
		if !strings.Contains(stderr, "CAP_BPF") || !strings.Contains(stderr, "CAP_PERFMON") || strings.Count(stderr, "\n") != 1 {
			t.Fatalf("%s: stderr %q: want one line naming CAP_BPF and CAP_PERFMON", args, stderr)
		}
	}
}

// Each loss watch counted is one line on stderr, in a fixed order; a
// counter at zero says nothing.
func TestLossLines(t *testing.T) {
	var l watch.Losses
	if got := lossLines(&l); len(got) != 0 {
		t.Fatalf("no loss: got %q", got)
	}
	l.Records, l.Missed, l.Unfinished = 3, 2, 1
	want := []string{
		"lost 3 records: the ring buffer was full (raise --ring-buffer-size)",
		"1 sockets closed without their end being seen (still closing, or missed by the kernel): up to that many timewait entries are missing",
		"the kernel skipped 2 runs of twtrace's programs (a BPF program was already running on that CPU): up to that many events are missing or misreported",
	}
	if got := lossLines(&l); !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}
