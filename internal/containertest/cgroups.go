package containertest

import (
	"bufio"
	"errors"
	"fmt"
	"github.com/twtrace/twtrace/internal/mountinfo"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// ProcCgroup is one line of /proc/PID/cgroup: the hierarchy id, its
// controllers ("" for the cgroup v2 line, "name=systemd" for a named v1
// hierarchy) and the process's path in it.
type ProcCgroup struct {
	ID          int
	Controllers string
	Path        string
}

// ParseProcCgroup reads /proc/PID/cgroup's format ("ID:CONTROLLERS:PATH"
// per line). The path may itself hold colons, so only the first two split.
func ParseProcCgroup(r io.Reader) ([]ProcCgroup, error) {
	var out []ProcCgroup
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		fields := strings.SplitN(line, ":", 3)
		if len(fields) != 3 {
			return nil, fmt.Errorf("cgroup line %q: want ID:CONTROLLERS:PATH", line)
		}
		id, err := strconv.Atoi(fields[0])
		if err != nil || id < 0 {
			return nil, fmt.Errorf("cgroup line %q: hierarchy id is not a number", line)
		}
		out = append(out, ProcCgroup{ID: id, Controllers: fields[1], Path: fields[2]})
	}
	return out, sc.Err()
}

// ReadProcCgroup returns the cgroups of a live process.
func ReadProcCgroup(pid int) ([]ProcCgroup, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseProcCgroup(f)
}

// CgroupMount is a mounted cgroup hierarchy: where it is mounted and which
// root of the hierarchy the mount shows.
type CgroupMount struct {
	Dir     string // mount point
	Root    string // the hierarchy's directory shown at Dir ("/" normally)
	Version int    // 1 or 2
	Options string // super options: the v1 controllers ("rw,cpu", "rw,name=systemd")
}

// ParseCgroupMounts picks the cgroup and cgroup2 mounts out of
// /proc/self/mountinfo's format: "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS
// [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS". Octal escapes (\040) in paths
// are decoded.
func ParseCgroupMounts(r io.Reader) ([]CgroupMount, error) {
	var out []CgroupMount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if sep < 0 || len(fields) < sep+4 {
			if len(fields) == 0 {
				continue
			}
			return nil, fmt.Errorf("mountinfo line %q: no \"- FSTYPE SOURCE OPTIONS\" part", sc.Text())
		}
		m := CgroupMount{Root: mountinfo.Unescape(fields[3]), Dir: mountinfo.Unescape(fields[4]), Options: fields[sep+3]}
		switch fields[sep+1] {
		case "cgroup":
			m.Version = 1
		case "cgroup2":
			m.Version = 2
		default:
			continue
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// cgroupDirs returns, for a cgroup path such as "/kubepods/besteffort/pod1/c1",
// the directory it names in every mounted hierarchy whose mount shows the
// hierarchy's root.
func cgroupDirs(cgroupPath string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	mounts, err := ParseCgroupMounts(f)
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, m := range mounts {
		if m.Root == "/" {
			dirs = append(dirs, filepath.Join(m.Dir, cgroupPath))
		}
	}
	return dirs, nil
}

// missingCgroupDirs lists the directories a container with this cgroup
// path will create: the path and its parents, in every hierarchy, that do
// not exist yet, deepest first. Removing exactly these afterwards leaves
// the host's cgroup trees as they were.
func missingCgroupDirs(t *testing.T, cgroupPath string) []string {
	t.Helper()
	if cgroupPath == "" {
		return nil
	}
	tops, err := cgroupDirs("/")
	if err != nil {
		t.Fatalf("finding the cgroup hierarchies: %v", err)
	}
	var missing []string
	for _, top := range tops {
		var inThis []string
		for dir := filepath.Join(top, cgroupPath); dir != top && len(dir) > len(top); dir = filepath.Dir(dir) {
			if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
				inThis = append(inThis, dir)
			}
		}
		missing = append(missing, inThis...)
	}
	return missing
}

// removeCgroupDirs removes cgroup directories deepest first; a cgroup
// directory goes with rmdir (its files are the kernel's). A parent that
// another test has since made children in stays; one still holding
// processes of ours is an error.
func removeCgroupDirs(t *testing.T, dirs []string) {
	t.Helper()
	for _, dir := range dirs {
		err := os.Remove(dir)
		switch {
		case err == nil, errors.Is(err, fs.ErrNotExist):
		case errors.Is(err, unix.ENOTEMPTY), errors.Is(err, unix.EBUSY) && hasChildCgroup(dir):
			t.Logf("leaving cgroup %s: another test uses it", dir)
		default:
			t.Errorf("removing cgroup %s: %v", dir, err)
		}
	}
}

func hasChildCgroup(dir string) bool {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			return true
		}
	}
	return false
}

// CleanCgroups removes, when the test ends, the cgroup directories of
// cgroupsPath (and its parents) that do not exist now: for a container a
// runtime other than RunC starts (runc deletes only its own cgroup).
func CleanCgroups(t *testing.T, cgroupsPath string) {
	t.Helper()
	created := missingCgroupDirs(t, cgroupsPath)
	t.Cleanup(func() { removeCgroupDirs(t, created) })
}
