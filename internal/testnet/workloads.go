package testnet

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Workloads as people run them: a shell loop of short-lived clients, and
// a pre-fork pool whose workers each open a few connections. Every
// client is the test binary (see StartClient).

// poolEnv makes the re-executed test binary a pool's parent.
const poolEnv = "TWTRACE_TEST_POOL"

// PoolComm is a pool parent's comm.
const PoolComm = "twt-pool"

// ShellLoop runs spec n times, one client process after the other, from
// a shell loop in ns (/bin/sh: busybox's in the VM guests), and returns
// the shell's pid and each client's result.
func ShellLoop(t *testing.T, ns *Netns, spec ClientSpec, n int) (int, []ClientResult) {
	t.Helper()
	raw, _ := json.Marshal(spec)
	script := `i=0; while [ $i -lt ` + strconv.Itoa(n) + ` ]; do "$0" || exit 1; i=$((i+1)); done`
	cmd := exec.Command("/bin/sh", "-c", script, os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+string(raw))
	shell, out := runIn(t, ns, cmd)
	return shell, decodeResults(t, out, n)
}

// Pool starts a pool parent in ns that forks (fork and exec of the test
// binary) k workers at once, each running spec, waits for them, and
// returns its pid and their results.
func Pool(t *testing.T, ns *Netns, spec ClientSpec, k int) (int, []ClientResult) {
	t.Helper()
	raw, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), poolEnv+"="+strconv.Itoa(k), helperEnv+"="+string(raw))
	parent, out := runIn(t, ns, cmd)
	return parent, decodeResults(t, out, k)
}

// runIn runs cmd in ns to its end and returns its pid and its stdout.
func runIn(t *testing.T, ns *Netns, cmd *exec.Cmd) (int, []byte) {
	t.Helper()
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	ns.Do(t, func() error {
		if err := cmd.Start(); err != nil {
			return err
		}
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("%s: %w", cmd.Args, err)
		}
		return nil
	})
	return cmd.Process.Pid, stdout.Bytes()
}

func decodeResults(t *testing.T, out []byte, n int) []ClientResult {
	t.Helper()
	var res []ClientResult
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r ClientResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("client output %q: %v", sc.Bytes(), err)
		}
		res = append(res, r)
	}
	if len(res) != n {
		t.Fatalf("%d clients reported, want %d", len(res), n)
	}
	return res
}

// runPool is a pool parent: it starts its workers (the same binary, as a
// client) together and passes their results on.
func runPool(k int) int {
	name := append([]byte(PoolComm), 0)
	if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&name[0])), 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "prctl:", err)
		return 2
	}
	env := make([]string, 0, len(os.Environ()))
	for _, kv := range os.Environ() {
		if len(kv) < len(poolEnv) || kv[:len(poolEnv)] != poolEnv {
			env = append(env, kv)
		}
	}
	outs := make([][]byte, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range k {
		wg.Go(func() {
			cmd := exec.Command(os.Args[0])
			cmd.Env = env
			cmd.Stderr = os.Stderr
			outs[i], errs[i] = cmd.Output()
		})
	}
	wg.Wait()
	// A real pool's parent outlives its workers: stay long enough for a
	// tracer reading every 300 ms to find its name.
	time.Sleep(time.Second)
	status := 0
	for i := range k {
		if errs[i] != nil {
			fmt.Fprintln(os.Stderr, "worker:", errs[i])
			status = 1
		}
		os.Stdout.Write(outs[i])
	}
	return status
}
