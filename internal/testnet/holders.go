package testnet

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// NetnsHolders lists what keeps network namespace inode alive that /proc
// shows: processes and threads in it (their ns/net paths) and nsfs mounts
// of it in our mount namespace. Empty once the namespace can be freed.
func NetnsHolders(inode uint32) []string {
	var found []string
	paths, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	tasks, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*/ns/net")
	for _, p := range append(paths, tasks...) {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && uint32(st.Ino) == inode {
			found = append(found, p)
		}
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for l := range strings.Lines(string(mi)) {
			if strings.Contains(l, fmt.Sprintf("net:[%d]", inode)) {
				found = append(found, "mount: "+strings.TrimSpace(l))
			}
		}
	}
	return found
}
