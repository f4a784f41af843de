// Command vmexec runs a go test binary inside a QEMU virtual machine booted
// with another kernel: it is a `go test -exec` wrapper.
//
//	CGO_ENABLED=0 go test -exec "$PWD/bin/vmexec -kernel 6.1" ./pkg/tracer
//
// go test runs it as `vmexec [flags] /tmp/.../pkg.test -test.flags...` in
// the package's folder. It packs busybox, the (static) test binary, an
// /init script, the arguments and the environment into an initramfs, boots
// the kernel in software emulation (TCG), streams what the test binary
// prints, copies back the files it was asked to write (profiles, coverage)
// and exits with its exit status, so that go test prints its usual verdict.
//
// The test binary's ELF machine picks the guest: x86-64 binaries boot in
// qemu-system-x86_64, aarch64 ones (GOARCH=arm64) in qemu-system-aarch64's
// virt machine, with a kernel for the same architecture:
//
//	CGO_ENABLED=0 GOARCH=arm64 go test -exec "$PWD/bin/vmexec -kernel arm64-6.12" ./pkg/tracer
//
// See docs/vmtest.md.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Environment variables that set the flags' defaults, so that
// `go test -exec bin/vmexec` needs no quoting.
const (
	envKernel  = "TWTRACE_VM_KERNEL"
	envCache   = "TWTRACE_VM_CACHE"
	envBusybox = "TWTRACE_VM_BUSYBOX"
	envQemu    = "TWTRACE_VM_QEMU"
	envTimeout = "TWTRACE_VM_TIMEOUT"
	envMem     = "TWTRACE_VM_MEM"
	envSMP     = "TWTRACE_VM_SMP"
	envEnv     = "TWTRACE_VM_ENV"
	envAppend  = "TWTRACE_VM_APPEND"
	envConsole = "TWTRACE_VM_CONSOLE"
	envAccel   = "TWTRACE_VM_ACCEL"
)

// Variables passed to the guest besides CI and TWTRACE_* (not
// TWTRACE_VM_*): the Go runtime's.
var passEnv = []string{"GOGC", "GODEBUG", "GOMAXPROCS", "GOMEMLIMIT", "GOTRACEBACK"}

// Flags of the testing package that name a file the test binary writes,
// and the one that names a folder; relative paths are under -test.outputdir.
var (
	fileFlags = []string{"cpuprofile", "memprofile", "blockprofile", "mutexprofile", "trace", "coverprofile", "testlogfile"}
	dirFlags  = []string{"gocoverdir"}
)

const exitVM = 3 // the VM did not report the test's status

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type config struct {
	kernel, cache, busybox, qemu, accel, appendArgs, extraEnv, tree string
	timeout                                                         time.Duration
	mem, smp                                                        int
	console                                                         bool
}

func run(argv []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vmexec", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: vmexec [flags] TESTBINARY [ARGS...]\n"+
			"  a go test -exec wrapper: go test -exec \"$PWD/bin/vmexec -kernel 6.1\" ./pkg/...\n")
		fs.PrintDefaults()
	}
	var c config
	timeout, err := envDuration(envTimeout, 20*time.Minute)
	if err != nil {
		fmt.Fprintln(stderr, "vmexec:", err)
		return 2
	}
	mem, err := envInt(envMem, 2048)
	if err != nil {
		fmt.Fprintln(stderr, "vmexec:", err)
		return 2
	}
	smp, err := envInt(envSMP, 2)
	if err != nil {
		fmt.Fprintln(stderr, "vmexec:", err)
		return 2
	}
	fs.StringVar(&c.kernel, "kernel", os.Getenv(envKernel), "the guest kernel: a vmlinuz file, or a series fetched into the cache (5.10, 6.1, 6.12, arm64-6.12) ($"+envKernel+")")
	fs.StringVar(&c.cache, "cache", os.Getenv(envCache), "the cache of kernels and busybox (default MODULE/.cache/vmtest) ($"+envCache+")")
	fs.StringVar(&c.busybox, "busybox", os.Getenv(envBusybox), "a static busybox for the test binary's architecture (default CACHE/busybox/busybox for x86-64, CACHE/busybox/arm64/busybox for arm64, then busybox in PATH) ($"+envBusybox+")")
	fs.StringVar(&c.qemu, "qemu", os.Getenv(envQemu), "the qemu binary (default qemu-system-x86_64 or qemu-system-aarch64, after the test binary's ELF machine) ($"+envQemu+")")
	fs.StringVar(&c.accel, "accel", envOr(envAccel, "tcg,thread=single"), "qemu's -accel: multi-threaded TCG hangs these kernels here ($"+envAccel+")")
	fs.DurationVar(&c.timeout, "timeout", timeout, "stop the VM after this long (default: -test.timeout + 2m if the test has one, else 20m) ($"+envTimeout+")")
	fs.IntVar(&c.mem, "mem", mem, "guest memory in MiB ($"+envMem+")")
	fs.IntVar(&c.smp, "smp", smp, "guest CPUs ($"+envSMP+")")
	fs.StringVar(&c.extraEnv, "env", os.Getenv(envEnv), "more variables to pass to the guest, comma-separated names ($"+envEnv+")")
	fs.StringVar(&c.appendArgs, "append", os.Getenv(envAppend), "more kernel command-line arguments ($"+envAppend+")")
	fs.StringVar(&c.tree, "tree", "", "a folder copied into the guest at the same path (default: the Go module around the working folder; \"none\": nothing)")
	fs.BoolVar(&c.console, "console", os.Getenv(envConsole) == "1", "copy the guest's kernel console to stderr ($"+envConsole+"=1)")
	if err := fs.Parse(argv); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	explicit := os.Getenv(envTimeout) != ""
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "timeout" })
	if d := testTimeout(fs.Args()[1:]); !explicit && d > 0 {
		// The test binary's own timeout panics with every goroutine's
		// stack: let it, and stop the VM only if that does not come.
		c.timeout = d + 2*time.Minute
	}
	code, err := c.exec(fs.Arg(0), fs.Args()[1:], stdout, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "vmexec:", err)
	}
	return code
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) (time.Duration, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("invalid %s %q: want a duration such as 30m", name, v)
	}
	return d, nil
}

func envInt(name string, def int) (int, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	var n int
	if _, err := fmt.Sscan(v, &n); err != nil || n <= 0 {
		return 0, fmt.Errorf("invalid %s %q: want a positive number", name, v)
	}
	return n, nil
}

// exec runs the test binary in the VM; it returns the exit status for
// vmexec and, when the VM did not report one, why.
func (c *config) exec(binary string, args []string, stdout, stderr io.Writer) (int, error) {
	wd, err := os.Getwd()
	if err != nil {
		return 2, err
	}
	module := moduleRoot(wd)
	if c.cache == "" && module != "" {
		c.cache = filepath.Join(module, ".cache", "vmtest")
	}
	v, im, err := c.prepare(binary, args, wd, module)
	if err != nil {
		return 2, err
	}
	dir, err := os.MkdirTemp("", "vmexec-")
	if err != nil {
		return 2, err
	}
	defer os.RemoveAll(dir)
	v.dir = dir
	v.initrd = filepath.Join(dir, "initrd.cpio")
	if err := writeImage(v.initrd, im); err != nil {
		return 2, fmt.Errorf("writing the initramfs: %v", err)
	}
	return c.boot(v, im, stdout, stderr)
}

// prepare finds what the VM needs (kernel, busybox and qemu for the test
// binary's architecture) and describes its initramfs.
func (c *config) prepare(binary string, args []string, wd, module string) (*vm, *image, error) {
	binary, err := filepath.Abs(binary)
	if err != nil {
		return nil, nil, err
	}
	// The test binary's ELF machine picks the guest's architecture.
	machine, err := staticELF(binary)
	if err != nil {
		return nil, nil, fmt.Errorf("%v: build the tests with CGO_ENABLED=0", err)
	}
	arch, err := archOf(machine)
	if err != nil {
		return nil, nil, err
	}
	kernel, err := c.findKernel()
	if err != nil {
		return nil, nil, err
	}
	if err := checkKernelArch(kernel, arch, filepath.Base(binary)); err != nil {
		return nil, nil, err
	}
	busybox, err := c.findBusybox(arch)
	if err != nil {
		return nil, nil, err
	}
	qemu, err := exec.LookPath(c.qemuFor(arch))
	if err != nil {
		return nil, nil, fmt.Errorf("no qemu: %v (apt-get install %s)", err, arch.qemuPkg)
	}
	for _, a := range args {
		if strings.ContainsAny(a, "\n") {
			return nil, nil, fmt.Errorf("argument %q holds a newline, which cannot reach the guest", a)
		}
	}
	tree := module
	switch c.tree {
	case "none":
		tree = ""
	case "":
	default:
		if tree, err = filepath.Abs(c.tree); err != nil {
			return nil, nil, err
		}
	}
	token := make([]byte, 12)
	rand.Read(token)
	im := &image{
		busybox: busybox,
		outDev:  arch.outDev,
		kconfig: kernelConfig(kernel),
		binary:  binary,
		args:    args,
		env:     c.guestEnv(os.Environ()),
		workdir: wd,
		tree:    tree,
		outputs: outputs(args, wd),
		token:   "@@vmexec-" + hex.EncodeToString(token) + "@@",
	}
	v := &vm{
		arch:    arch,
		qemu:    qemu,
		accel:   c.accel,
		kernel:  kernel,
		append:  strings.TrimSpace("console=" + arch.console + " panic=-1 quiet random.trust_cpu=on " + c.appendArgs),
		mem:     c.mem,
		smp:     c.smp,
		timeout: c.timeout,
	}
	return v, im, nil
}

// boot runs the VM and relays the test's output and exit status.
func (c *config) boot(v *vm, im *image, stdout, stderr io.Writer) (int, error) {
	console := &tail{max: 256 << 10}
	if c.console {
		console.tee = stderr
	}
	accept := func(p string) bool {
		for _, o := range im.outputs {
			if p == o.path || o.dir && strings.HasPrefix(p, o.path+"/") {
				return true
			}
		}
		return false
	}
	rep := newReports(im.token, stdout, accept)
	start := time.Now()
	out, err := v.run(rep, console)
	if err != nil {
		return 2, fmt.Errorf("starting qemu: %v", err)
	}
	if rep.err != nil {
		return exitVM, rep.err
	}
	if rep.exited {
		if !rep.done {
			fmt.Fprintf(stderr, "vmexec: the VM stopped before copying back what the test wrote\n")
		}
		if rep.status != 0 {
			fmt.Fprintf(stderr, "vmexec: exit status %d in the guest (Linux %s)\n", rep.status, rep.release)
		}
		return rep.status, nil
	}
	// No exit status: say why, with the end of the console.
	why := describe(out, rep, console, c.timeout, time.Since(start))
	for _, l := range console.lines(40) {
		fmt.Fprintln(stderr, "vmexec: console:", l)
	}
	if out.qemuOut != "" && out.qemuErr != nil {
		fmt.Fprintln(stderr, "vmexec: qemu:", strings.TrimSpace(out.qemuOut))
	}
	return exitVM, fmt.Errorf("%s (kernel %s)", why, v.kernel)
}

// describe says in one line why the VM reported no exit status.
func describe(out *outcome, rep *reports, console *tail, timeout, took time.Duration) string {
	panicLine := ""
	for _, l := range console.lines(400) {
		if strings.Contains(l, "Kernel panic") {
			panicLine = strings.TrimSpace(l)
			break
		}
	}
	started := "before the test started"
	if rep.release != "" {
		started = "while the test ran"
	}
	switch {
	case out.timedOut:
		return fmt.Sprintf("timed out after %v %s: no exit status from the VM (-timeout, $%s)", timeout, started, envTimeout)
	case out.signal != nil:
		return fmt.Sprintf("stopped the VM on %v %s", out.signal, started)
	case panicLine != "":
		return fmt.Sprintf("the guest kernel panicked %s: %s", started, panicLine)
	case out.qemuErr != nil:
		return fmt.Sprintf("qemu failed after %v %s: %v", took.Round(time.Millisecond), started, out.qemuErr)
	}
	return fmt.Sprintf("the VM powered off after %v %s without the test's exit status", took.Round(time.Millisecond), started)
}

// moduleRoot is the folder holding go.mod at or above dir, or "".
func moduleRoot(dir string) string {
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

func (c *config) findKernel() (string, error) {
	k := c.kernel
	if k == "" {
		return "", fmt.Errorf("no kernel: set -kernel or $%s to a vmlinuz file or a series that make vmtest-kernels fetched (5.10, 6.1, 6.12, arm64-6.12)", envKernel)
	}
	if strings.Contains(k, "/") {
		if _, err := os.Stat(k); err != nil {
			return "", fmt.Errorf("kernel: %v", err)
		}
		return filepath.Abs(k)
	}
	if c.cache == "" {
		return "", fmt.Errorf("kernel %s: no cache folder (not in a Go module): set -cache or $%s", k, envCache)
	}
	p := filepath.Join(c.cache, "kernels", k, "vmlinuz")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("kernel %s is not in %s: run make vmtest-kernels KERNELS=%s", k, filepath.Join(c.cache, "kernels"), k)
	}
	return p, nil
}

// kernelConfig is the build configuration beside vmlinuz, as Debian
// installs it (/boot/config-RELEASE beside /boot/vmlinuz-RELEASE) or as
// the cache holds it (config beside vmlinuz); "" if there is none. The
// guest gets it at /boot/config-RELEASE, where twtrace reads CONFIG_HZ.
func kernelConfig(vmlinuz string) string {
	dir, base := filepath.Split(vmlinuz)
	cands := []string{filepath.Join(dir, "config")}
	if release, ok := strings.CutPrefix(base, "vmlinuz-"); ok {
		cands = append([]string{filepath.Join(dir, "config-"+release)}, cands...)
	}
	for _, p := range cands {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// qemuFor is the qemu binary for a guest of architecture a: -qemu if set.
func (c *config) qemuFor(a *guestArch) string {
	if c.qemu != "" {
		return c.qemu
	}
	return a.qemu
}

// checkKernelArch fails when the kernel's image is for another
// architecture than the test binary (an unknown format passes: qemu will
// say).
func checkKernelArch(kernel string, a *guestArch, binary string) error {
	k, err := kernelArch(kernel)
	if err != nil {
		return fmt.Errorf("kernel: %v", err)
	}
	if k != nil && k != a {
		return fmt.Errorf("kernel %s is for %s but %s is for %s: build the tests with GOARCH=%s, or boot an %s kernel", kernel, k.name, binary, a.name, k.goarch, a.name)
	}
	return nil
}

func (c *config) findBusybox(a *guestArch) (string, error) {
	var cands []string
	switch {
	case c.busybox != "":
		cands = []string{c.busybox}
	default:
		if c.cache != "" {
			cands = append(cands, filepath.Join(c.cache, a.busybox))
		}
		if p, err := exec.LookPath("busybox"); err == nil {
			cands = append(cands, p)
		}
	}
	var errs []error
	for _, p := range cands {
		if _, err := os.Stat(p); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := checkStatic(p, a); err != nil {
			errs = append(errs, err)
			continue
		}
		return p, nil
	}
	if c.busybox != "" {
		return "", fmt.Errorf("busybox: %v", errors.Join(errs...))
	}
	if a != archAMD64 {
		return "", fmt.Errorf("no static %s busybox: run make vmtest-kernels KERNELS=%s-6.12", a.name, a.name)
	}
	return "", errors.New("no static busybox: run make vmtest-kernels, or apt-get install busybox-static")
}

// guestEnv is the part of env the guest gets: CI, TWTRACE_* (but not the
// wrapper's own TWTRACE_VM_*), the Go runtime's variables and those named
// by -env. Values holding a newline are left out.
func (c *config) guestEnv(env []string) []string {
	names := map[string]bool{"CI": true}
	for _, n := range passEnv {
		names[n] = true
	}
	for n := range strings.SplitSeq(c.extraEnv, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names[n] = true
		}
	}
	var out []string
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || strings.Contains(v, "\n") {
			continue
		}
		own := strings.HasPrefix(k, "TWTRACE_") && !strings.HasPrefix(k, "TWTRACE_VM_")
		if own || names[k] {
			out = append(out, kv)
		}
	}
	return out
}

// outputs lists the files (and folders) the test binary's arguments ask it
// to write, with absolute paths: relative ones are under -test.outputdir,
// or the working folder.
func outputs(args []string, wd string) []output {
	values := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-test.") && !strings.HasPrefix(a, "--test.") {
			continue
		}
		name, val, ok := strings.Cut(strings.TrimLeft(a, "-")[len("test."):], "=")
		if !ok {
			if !isPathFlag(name) || i+1 >= len(args) {
				continue
			}
			i++
			val = args[i]
		}
		values[name] = val
	}
	base := wd
	if d := values["outputdir"]; d != "" {
		base = abs(d, wd)
	}
	var out []output
	for _, f := range fileFlags {
		if v := values[f]; v != "" {
			out = append(out, output{path: abs(v, base)})
		}
	}
	for _, f := range dirFlags {
		if v := values[f]; v != "" {
			out = append(out, output{path: abs(v, wd), dir: true})
		}
	}
	return out
}

// testTimeout is the test binary's -test.timeout, or 0.
func testTimeout(args []string) time.Duration {
	var d time.Duration
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "-test.timeout="); ok {
			d, _ = time.ParseDuration(v)
		}
	}
	return d
}

func isPathFlag(name string) bool {
	if name == "outputdir" {
		return true
	}
	for _, f := range append(append([]string{}, fileFlags...), dirFlags...) {
		if f == name {
			return true
		}
	}
	return false
}

func abs(p, base string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(base, p)
}
