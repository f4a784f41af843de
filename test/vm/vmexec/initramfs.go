package main

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// guestDir holds what the wrapper hands the guest: the test binary, its
// arguments, its environment and the list of files to copy back.
const guestDir = "vmexec"

// image is what goes into the initramfs.
type image struct {
	busybox string   // static busybox binary on the host
	outDev  string   // the guest's device of the second channel, e.g. /dev/ttyS1
	kconfig string   // the kernel's build configuration, or ""
	binary  string   // static test binary on the host
	args    []string // the test binary's arguments
	env     []string // KEY=VALUE, passed to the test binary
	workdir string   // absolute: the test binary runs there, as on the host
	tree    string   // absolute: a folder copied to the same path ("" for none)
	outputs []output // files and folders the test writes, copied back
	token   string   // starts every line of the guest's reports
}

// output is a file (or, dir set, every file in a folder) that the test
// binary writes in the guest and that is copied back to the same path.
type output struct {
	path string
	dir  bool
}

// Largest file of the tree put into the image: sources and docs are what
// tests read, not build outputs.
const maxTreeFile = 16 << 20

// Folders of the tree left out, whatever their depth.
func skipTreeDir(name string) bool {
	return strings.HasPrefix(name, ".") || name == "bin" || name == "node_modules"
}

// writeImage writes the initramfs as an uncompressed newc cpio archive.
func writeImage(file string, im *image) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	cw := newCPIOWriter(bw)
	err = im.write(cw)
	if err == nil {
		err = cw.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// dirs is the set of folders already added, so that every parent is added
// once and before its children.
type dirs map[string]bool

func (d dirs) add(cw *cpioWriter, dir string) error {
	dir = strings.Trim(path.Clean("/"+dir), "/")
	if dir == "" || d[dir] {
		return nil
	}
	if err := d.add(cw, path.Dir(dir)); err != nil {
		return err
	}
	d[dir] = true
	return cw.Dir(dir, 0o755)
}

func (im *image) write(cw *cpioWriter) error {
	d := dirs{"tmp": true}
	if err := cw.Dir("tmp", 0o1777); err != nil {
		return err
	}
	for _, dir := range []string{"bin", "dev", "etc", "proc", "root", "run", "sys", "usr", guestDir} {
		if err := d.add(cw, dir); err != nil {
			return err
		}
	}
	// One /bin for every path a script may name; /init installs the applets.
	for _, l := range [][2]string{{"sbin", "bin"}, {"usr/bin", "../bin"}, {"usr/sbin", "../bin"}, {"bin/sh", "busybox"}} {
		if err := cw.Symlink(l[0], l[1]); err != nil {
			return err
		}
	}
	// The kernel opens /dev/console for /init before devtmpfs is mounted.
	if err := cw.Char("dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	if err := cw.Char("dev/null", 0o666, 1, 3); err != nil {
		return err
	}
	if err := addHostFile(cw, "bin/busybox", im.busybox, 0o755); err != nil {
		return err
	}
	if im.kconfig != "" {
		if err := addHostFile(cw, path.Join(guestDir, "kconfig"), im.kconfig, 0o644); err != nil {
			return err
		}
	}
	bin := path.Join(guestDir, filepath.Base(im.binary))
	if err := addHostFile(cw, bin, im.binary, 0o755); err != nil {
		return err
	}
	files := []struct {
		name string
		perm uint32
		data string
	}{
		{"init", 0o755, im.initScript("/" + bin)},
		{"etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"},
		{"etc/group", 0o644, "root:x:0:\nnogroup:x:65534:\n"},
		{"etc/hosts", 0o644, "127.0.0.1\tlocalhost\n::1\tlocalhost\n"},
		{path.Join(guestDir, "args"), 0o644, lines(im.args)},
		{path.Join(guestDir, "env"), 0o644, lines(im.env)},
	}
	for _, f := range files {
		if err := cw.Bytes(f.name, f.perm, []byte(f.data)); err != nil {
			return err
		}
	}
	if im.tree != "" {
		if err := addTree(cw, d, im.tree); err != nil {
			return err
		}
	}
	if err := d.add(cw, im.workdir); err != nil {
		return err
	}
	for _, o := range im.outputs {
		parent := filepath.Dir(o.path)
		if o.dir {
			parent = o.path
		}
		if err := d.add(cw, parent); err != nil {
			return err
		}
	}
	return nil
}

func lines(l []string) string {
	if len(l) == 0 {
		return ""
	}
	return strings.Join(l, "\n") + "\n"
}

func addHostFile(cw *cpioWriter, name, file string, perm uint32) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	return cw.File(name, perm, st.ModTime().Unix(), st.Size(), f)
}

// addTree copies root's regular files (not its hidden folders, bin/ or
// files over maxTreeFile) to the same absolute path in the image.
func addTree(cw *cpioWriter, d dirs, root string) error {
	var files []string
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			if p != root && skipTreeDir(e.Name()) {
				return filepath.SkipDir
			}
			return nil
		}
		if !e.Type().IsRegular() {
			return nil
		}
		info, err := e.Info()
		if err != nil || info.Size() > maxTreeFile {
			return nil
		}
		files = append(files, p)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(files)
	for _, p := range files {
		if err := d.add(cw, filepath.Dir(p)); err != nil {
			return err
		}
		info, err := os.Stat(p)
		if err != nil {
			return err
		}
		if err := addHostFile(cw, strings.TrimPrefix(p, "/"), p, uint32(info.Mode().Perm())); err != nil {
			return err
		}
	}
	return nil
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// initScript is /init: it prepares a system like the host's as far as the
// tests see it, runs the test binary with its output on a second
// channel (im.outDev: the second serial port on x86-64, a virtio console
// on arm64; through a pipe: the test must not see a terminal), then
// reports its exit status and the files it wrote, and powers off. The
// kernel's console is the first serial port: its messages never mix with
// the test's output. Every report line starts with the token.
func (im *image) initScript(bin string) string {
	var copyBack strings.Builder
	for _, o := range im.outputs {
		if o.dir {
			fmt.Fprintf(&copyBack, "find %s -type f 2>/dev/null | while IFS= read -r f; do sendfile \"$f\"; done\n", shellQuote(o.path))
		} else {
			fmt.Fprintf(&copyBack, "sendfile %s\n", shellQuote(o.path))
		}
	}
	return `#!/bin/sh
# Written by vmexec (test/vm/vmexec): runs one go test binary and powers off.
export PATH=/bin HOME=/root
# Tests that need a host component (a container runtime, Prometheus, a
# compiler) see that they run in a guest, which holds none (see
# internal/testnet.RequireHost).
export TWTRACE_VM_GUEST=1
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
hostname vmexec
# Where Debian installs the kernel's configuration (twtrace reads CONFIG_HZ).
if [ -f /` + guestDir + `/kconfig ]; then
	mkdir -p /boot
	cp /` + guestDir + `/kconfig "/boot/config-$(uname -r)"
fi

# Held open on fd 3, so that what the host sends is not dropped.
out=` + shellQuote(im.outDev) + `
exec 3<>$out
stty -F $out raw -echo
token=` + shellQuote(im.token) + `
report() { printf '%s %s\n' "$token" "$*" >&3; }
# Power off only once the host has read everything: it answers DONE with
# "ok". A signal (SIGCHLD) ends read early: read again, 30 s at most.
finish() {
	# The status again: DONE is what the host waits for, so a lost EXIT
	# line still leaves it the status.
	report DONE ${status:-}
	i=0
	while [ $i -lt 30 ]; do
		if read -t 1 ack <&3 && [ "$ack" = ok ]; then
			break
		fi
		i=$((i + 1))
	done
	poweroff -f
}
sendfile() {
	[ -f "$1" ] || return 0
	report FILE "$1"
	base64 "$1" >&3
	report END
}

while IFS= read -r kv; do export "$kv"; done </` + guestDir + `/env
set --
while IFS= read -r a; do set -- "$@" "$a"; done </` + guestDir + `/args
cd ` + shellQuote(im.workdir) + ` || { echo "vmexec: cannot cd to ` + im.workdir + ` in the guest" >&3; status=126; report EXIT 126; finish; }
report START "$(uname -r)"

mkdir -p /run/vmexec
mkfifo /run/vmexec/out
cat /run/vmexec/out >&3 &
cat=$!
` + shellQuote(bin) + ` "$@" >/run/vmexec/out 2>&1 </dev/null 3>&-
status=$?
# Children the test left behind may hold the pipe open: wait 5 s for cat.
(sleep 5; kill $cat 2>/dev/null) &
dog=$!
wait $cat
kill $dog 2>/dev/null
report EXIT $status
` + copyBack.String() + `finish
`
}
