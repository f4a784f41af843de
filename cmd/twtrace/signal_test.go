package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/tracer"
)

// ourNames are twtrace's program names (BTF gives the full name). `make
// test` runs packages one at a time, so no other twtrace loads meanwhile.
var ourNames = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range tracer.ProgramNames {
		m[n] = true
	}
	return m
}()

func ourPrograms(*testing.T) int { return testnet.CountPrograms(ourNames) }

// SIGTERM after the ready line: exit 0, stderr held exactly that one line,
// and nothing of twtrace stays loaded in the kernel.
func TestSignalDetachesAndExitsZero(t *testing.T) {
	if err := tracer.Preflight(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and BPF is unavailable: %v", err)
		}
		t.Skipf("needs BPF: %v", err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCLIHelper$", "--", "watch", "-o", "json")
		cmd.Env = append(os.Environ(), "TWTRACE_TEST_CLI=1")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		rd := bufio.NewReader(stderr)
		ready, err := rd.ReadString('\n')
		if err != nil || !strings.HasPrefix(ready, "twtrace: tracing") {
			t.Fatalf("ready line %q, err %v", ready, err)
		}
		// Every program of the tracepoint tier is loaded (those of bind()
		// without being attached), and the precise tier's where it runs.
		loaded := ourPrograms(t)
		cmd.Process.Signal(sig)
		rest, _ := rd.ReadString(0)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%v: exit %v, want 0", sig, err)
		}
		// The exit summary: the tier, and no loss.
		precise := strings.HasPrefix(rest, "twtrace: tier precise (")
		if !precise && !strings.HasPrefix(rest, "twtrace: tier tracepoint") || strings.Count(rest, "\n") != 1 {
			t.Errorf("%v: stderr after the ready line: %q, want the tier's line alone", sig, rest)
		}
		// All but the precise tier's 7 and, without stacks, the net/http
		// callers' 2.
		want := len(tracer.ProgramNames) - 7 - 2
		if precise {
			want += 7
		}
		if loaded != want {
			t.Errorf("%d twtrace programs loaded while tracing, want %d (%s)", loaded, want, strings.TrimSpace(rest))
		}
		// Program ids are freed after an RCU grace period.
		deadline := time.Now().Add(5 * time.Second)
		for ourPrograms(t) != 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := ourPrograms(t); n != 0 {
			t.Fatalf("%v: %d twtrace programs still loaded after exit", sig, n)
		}
	}
}

// The agent: ready after its first refresh, /metrics served, every probe
// loaded; SIGTERM: exit 0, a last "stopped" line, nothing left loaded.
func TestAgentSignalExitsZero(t *testing.T) {
	if err := tracer.Preflight(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and BPF is unavailable: %v", err)
		}
		t.Skipf("needs BPF: %v", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCLIHelper$", "--", "agent", "--listen", "127.0.0.1:0",
		"--inventory-interval", "1s", "--cri-endpoint", "none", "--log-format", "json")
	cmd.Env = append(os.Environ(), "TWTRACE_TEST_CLI=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	rd := bufio.NewScanner(stderr)
	addr := ""
	for rd.Scan() {
		var line struct{ Msg, Address string }
		if err := json.Unmarshal(rd.Bytes(), &line); err != nil {
			t.Fatalf("log line %q is not JSON: %v", rd.Text(), err)
		}
		if line.Msg == "serving" {
			addr = line.Address
		}
		if line.Msg == "ready" {
			break
		}
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scraping %q: %v", addr, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(body, []byte("twtrace_build_info{")) {
		t.Errorf("/metrics has no twtrace_build_info:\n%s", body)
	}
	if ourPrograms(t) == 0 {
		t.Error("no twtrace program loaded while the agent runs")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	var last string
	for rd.Scan() {
		last = rd.Text()
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("SIGTERM: exit %v, want 0", err)
	}
	if !strings.Contains(last, `"msg":"stopped"`) {
		t.Errorf("last log line %q, want stopped", last)
	}
	deadline := time.Now().Add(5 * time.Second)
	for ourPrograms(t) != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := ourPrograms(t); n != 0 {
		t.Fatalf("%d twtrace programs still loaded after the agent exited", n)
	}
}
