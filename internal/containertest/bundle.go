package containertest

import (
	"debug/elf"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/twtrace/twtrace/internal/testnet"
)

// applets are the busybox commands a container can call by name.
var applets = []string{"sh", "wget", "nc", "sleep", "cat", "echo", "ls", "true", "kill", "seq"}

// BundleOptions shape a container's spec.
type BundleOptions struct {
	// CgroupsPath is the spec's linux.cgroupsPath, e.g.
	// "/system.slice/docker-<64hex>.scope" (runc's cgroupfs driver).
	// "" leaves the choice to runc, which uses /<container id>.
	CgroupsPath string
	// NetnsPath joins an existing network namespace (/var/run/netns/x,
	// /proc/PID/ns/net); "" keeps the host's.
	NetnsPath string
	// Env is the process's environment beyond PATH.
	Env []string
}

// Bundle writes an OCI bundle in a test directory and returns its path:
// a root file system of busybox alone, and a spec running args. The spec
// sets no rlimits: without CAP_SYS_RESOURCE (which sandboxed hosts drop)
// runc can lower a limit but not raise one, so the container inherits the
// caller's limits instead.
func Bundle(t *testing.T, args []string, o BundleOptions) string {
	t.Helper()
	busybox := requireStaticBusybox(t, "runc")
	dir := t.TempDir()
	if err := writeRootfs(filepath.Join(dir, "rootfs"), busybox); err != nil {
		t.Fatalf("writing the bundle's busybox root file system: %v", err)
	}
	spec := newSpec(args, o)
	data, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		t.Fatalf("encoding the bundle's spec: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644); err != nil {
		t.Fatalf("writing the bundle's spec: %v", err)
	}
	return dir
}

// requireStaticBusybox declares the host components, busybox among them,
// and returns busybox's path. It must be statically linked (Debian's
// busybox-static): the root file systems hold no libraries.
func requireStaticBusybox(t *testing.T, components ...string) string {
	t.Helper()
	paths := testnet.RequireHost(t, append(components, "busybox")...)
	busybox := paths[len(paths)-1]
	f, err := elf.Open(busybox)
	if err != nil {
		t.Fatalf("reading %s: %v", busybox, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Fatalf("%s is dynamically linked; containers need a static busybox (busybox-static)", busybox)
		}
	}
	return busybox
}

// writeRootfs lays out /bin/busybox with its applets linked beside it, and
// the empty mount points the spec mounts on.
func writeRootfs(root, busybox string) error {
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), data, 0o755); err != nil {
		return err
	}
	for _, a := range applets {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(root, "etc", "hosts"), []byte(etcHosts), 0o644)
}

// etcHosts lets wget and nc resolve "localhost".
const etcHosts = "127.0.0.1 localhost\n::1 localhost\n"
