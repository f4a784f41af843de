package inventory

import (
	"bufio"
	"fmt"
	"github.com/twtrace/twtrace/internal/mountinfo"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Namespaces lists every network namespace of the host that a process, a
// thread or a bind mount keeps alive: our own first, the others by inode.
// A namespace's ref names its lowest PID; its Path is the /run/netns bind
// mount when there is one (it outlives processes), else the lowest PID's
// /proc/PID/ns/net (/proc/PID/task/TID/ns/net when only a thread is in it),
// else another nsfs bind mount. Processes that exit meanwhile, and those we
// may not inspect (ptrace access rules: one holding capabilities we lack),
// are skipped.
func Namespaces() ([]NamespaceRef, error) {
	own, err := statNetns("/proc/self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("reading our own network namespace: %w", err)
	}
	refs := map[uint32]*NamespaceRef{}
	if err := walkProcesses(refs); err != nil {
		return nil, err
	}
	if err := walkMounts(refs); err != nil {
		return nil, err
	}
	out := make([]NamespaceRef, 0, len(refs))
	for _, ref := range refs {
		if ref.PID != 0 {
			ref.Comm = readComm(ref.PID)
		}
		out = append(out, *ref)
	}
	slices.SortFunc(out, func(a, b NamespaceRef) int {
		switch {
		case a.Inode == b.Inode:
			return 0
		case a.Inode == own:
			return -1
		case b.Inode == own:
			return 1
		case a.Inode < b.Inode:
			return -1
		}
		return 1
	})
	return out, nil
}

// walkProcesses adds the namespace of every process, and of every thread
// whose namespace differs from its process's.
func walkProcesses(refs map[uint32]*NamespaceRef) error {
	d, err := os.Open("/proc")
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("listing /proc: %w", err)
	}
	pids := make([]int, 0, len(names))
	for _, name := range names {
		if pid, err := strconv.Atoi(name); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids) // the first PID seen in a namespace is its lowest
	add := func(ino uint32, path string, pid int) {
		ref, ok := refs[ino]
		switch {
		case !ok:
			refs[ino] = &NamespaceRef{Inode: ino, Path: path, PID: pid}
		case len(ref.alts) < maxAlts:
			ref.alts = append(ref.alts, path)
		}
	}
	for _, pid := range pids {
		proc := "/proc/" + strconv.Itoa(pid)
		ino, err := statNetns(proc + "/ns/net")
		if err != nil {
			// Gone, a zombie, or one ptrace rules keep us from (EACCES:
			// a process with capabilities we lack).
			continue
		}
		add(ino, proc+"/ns/net", pid)

		// A thread may have setns()ed elsewhere. The task directory's link
		// count is 2 + the number of threads: list it only when the
		// process has more than one.
		var st unix.Stat_t
		if err := unix.Stat(proc+"/task", &st); err != nil || st.Nlink <= 3 {
			continue
		}
		d, err := os.Open(proc + "/task")
		if err != nil {
			continue
		}
		tids, _ := d.Readdirnames(-1)
		d.Close()
		for _, tid := range tids {
			if tid == strconv.Itoa(pid) {
				continue
			}
			path := proc + "/task/" + tid + "/ns/net"
			if tino, err := statNetns(path); err == nil && tino != ino {
				add(tino, path, pid)
			}
		}
	}
	return nil
}

// walkMounts adds the namespaces bind-mounted in our mount namespace.
func walkMounts(refs map[uint32]*NamespaceRef) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	mounts, err := nsfsMounts(f)
	if err != nil {
		return err
	}
	for _, mp := range mounts {
		ino, err := statNetns(mp)
		if err != nil {
			continue // unmounted meanwhile, or another namespace's type
		}
		name := ""
		if dir := filepath.Dir(mp); dir == "/run/netns" || dir == "/var/run/netns" {
			name = filepath.Base(mp)
		}
		ref, ok := refs[ino]
		switch {
		case !ok:
			refs[ino] = &NamespaceRef{Inode: ino, Path: mp, Name: name}
		case name != "" && ref.Name == "":
			ref.Name, ref.Path = name, mp
		}
	}
	return nil
}

// nsfsMounts returns the mount points of network namespaces in a
// mountinfo file: "36 25 0:4 net:[4026532288] /run/netns/a rw - nsfs nsfs rw".
func nsfsMounts(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 5 || sep+1 >= len(fields) || fields[sep+1] != "nsfs" || !strings.HasPrefix(fields[3], "net:[") {
			continue
		}
		out = append(out, mountinfo.Unescape(fields[4]))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mountinfo: %w", err)
	}
	return out, nil
}

// statNetns returns the inode of the network namespace path refers to.
func statNetns(path string) (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return uint32(st.Ino), nil
}

func readComm(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return "" // exited meanwhile
	}
	return strings.TrimSuffix(string(b), "\n")
}
