package testnet

import (
	"os"
	"os/exec"
	"testing"
)

// InVMGuest reports whether the test runs in a vmexec guest (test/vm),
// which holds only the test binary and busybox.
func InVMGuest() bool { return os.Getenv("TWTRACE_VM_GUEST") == "1" }

// RequireHost declares that a test needs host components (programs on
// PATH: a container runtime, Prometheus, a compiler) and returns their
// paths. In a VM guest the test is host-only: it skips, saying so (the
// list is in docs/vmtest.md). On a host, a missing component skips the
// test, except under CI=true, where it fails: CI installs every one.
func RequireHost(t testing.TB, programs ...string) []string {
	t.Helper()
	if InVMGuest() {
		t.Skipf("host-only: needs %v, which a VM guest does not hold", programs)
	}
	paths := make([]string, len(programs))
	for i, p := range programs {
		path, err := exec.LookPath(p)
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("CI=true and %s is missing: %v", p, err)
			}
			t.Skipf("needs %s: %v", p, err)
		}
		paths[i] = path
	}
	return paths
}
