package cgroup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// errFull stops a walk at the table's bound.
var errFull = errors.New("cgroup table full")

// cgroupID is the id the kernel stamps on events for the cgroup at dir
// (bpf_get_current_cgroup_id: the cgroup's kernfs node id). The file
// handle of a kernfs directory is exactly that id, 8 bytes, on every
// kernel and word size; on 64-bit kernels it also equals the inode
// number (TestIDIsInode checks), which 32-bit kernels do not promise.
func cgroupID(dir string) (uint64, error) {
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, dir, 0)
	if err != nil {
		return 0, fmt.Errorf("getting the handle of %s: %w", dir, err)
	}
	if h.Size() != 8 {
		return 0, fmt.Errorf("handle of %s is %d bytes, not a kernfs id", dir, h.Size())
	}
	return binary.NativeEndian.Uint64(h.Bytes()), nil
}

// table is one walk's result: every cgroup of the hierarchy by id.
// Lookups read it without a lock; a walk builds a new one and swaps it
// in, so a cgroup removed since the last walk drops out.
type table struct {
	ids    map[uint64]Info
	rootID uint64
	full   bool // the walk stopped at Options.MaxCgroups
}

// walk maps every directory under the mount point to its id and Info.
// base is the mount's root within the hierarchy ("/" unless the mount
// shows a subtree), so paths are the hierarchy's, not the mount's.
func walk(m mount, limit int) (*table, error) {
	t := &table{ids: make(map[uint64]Info)}
	err := filepath.WalkDir(m.point, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// A cgroup removed during the walk is not an error of ours.
			if errors.Is(err, fs.ErrNotExist) && p != m.point {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		id, err := cgroupID(p)
		if err != nil {
			if errors.Is(err, unix.ENOENT) && p != m.point {
				return fs.SkipDir
			}
			return err
		}
		rel, _ := filepath.Rel(m.point, p)
		if p == m.point {
			t.rootID = id
			rel = ""
		}
		if len(t.ids) >= limit {
			t.full = true
			return errFull
		}
		full := path.Join("/", m.root, rel)
		t.ids[id] = Info{Path: full, Layout: ParseLayout(full)}
		return nil
	})
	if err != nil && !errors.Is(err, errFull) {
		return nil, fmt.Errorf("walking the cgroup v2 hierarchy at %s: %w", m.point, err)
	}
	return t, nil
}
