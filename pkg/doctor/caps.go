package doctor

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Caps are the calling thread's effective capabilities.
type Caps struct {
	Euid int
	// Effective is the effective set, bit n for capability n.
	Effective uint64
	// Err is why capget failed; Effective is then empty.
	Err error
}

// ReadCaps reads the calling thread's capabilities with capget(2).
func ReadCaps() Caps {
	c := Caps{Euid: os.Geteuid()}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		c.Err = fmt.Errorf("capget: %w", err)
		return c
	}
	c.Effective = uint64(data[1].Effective)<<32 | uint64(data[0].Effective)
	return c
}

func (c Caps) has(capability int) bool {
	if c.Err != nil {
		return c.Euid == 0 // as pkg/tracer and pkg/inventory decide
	}
	return c.Effective&(1<<capability) != 0
}

// CanLoad: the capabilities that load and attach tracing programs
// (CAP_SYS_ADMIN implies CAP_BPF and CAP_PERFMON).
func (c Caps) CanLoad() bool {
	return c.has(unix.CAP_SYS_ADMIN) || c.has(unix.CAP_BPF) && c.has(unix.CAP_PERFMON)
}

// CanEnterNamespaces: setns() into another network namespace, which
// snapshot and top do, needs CAP_SYS_ADMIN.
func (c Caps) CanEnterNamespaces() bool { return c.has(unix.CAP_SYS_ADMIN) }

// twtraceCaps are the capabilities twtrace uses, in the order they are
// named.
var twtraceCaps = []struct {
	bit  int
	name string
}{
	{unix.CAP_BPF, "CAP_BPF"},
	{unix.CAP_PERFMON, "CAP_PERFMON"},
	{unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"},
}

// checkPrivileges: every twtrace command runs with CAP_SYS_ADMIN (root);
// watch alone with CAP_BPF and CAP_PERFMON.
func checkPrivileges(c Caps) (Check, Capabilities) {
	caps := Capabilities{Euid: c.Euid, Effective: []string{}, Missing: []string{}}
	for _, tc := range twtraceCaps {
		if c.has(tc.bit) {
			caps.Effective = append(caps.Effective, tc.name)
		} else {
			caps.Missing = append(caps.Missing, tc.name)
		}
	}
	who := "not root"
	if c.Euid == 0 {
		who = "root"
	}
	ck := Check{Name: CheckPrivileges, Required: true}
	switch {
	case c.Err != nil && c.Euid == 0:
		ck.Status = StatusOK
		ck.Detail = fmt.Sprintf("root (capabilities unreadable: %v)", oneLine(c.Err))
	case c.Err != nil:
		ck.Status = StatusFail
		ck.Detail = fmt.Sprintf("not root, and capabilities unreadable (%v): run as root", oneLine(c.Err))
	case c.CanEnterNamespaces():
		ck.Status = StatusOK
		ck.Detail = fmt.Sprintf("%s: %s effective", who, list(caps.Effective))
		caps.Missing = caps.Missing[:0] // CAP_SYS_ADMIN covers the others
	case c.CanLoad():
		ck.Status = StatusFail
		ck.Detail = "missing CAP_SYS_ADMIN: watch can run (CAP_BPF and CAP_PERFMON are effective), snapshot and top cannot (they enter other network namespaces)"
	default:
		ck.Status = StatusFail
		prefix := "missing "
		if c.Euid == 0 {
			prefix = "root without effective capabilities: missing "
		}
		ck.Detail = prefix + list(caps.Missing) +
			": run as root, or grant CAP_BPF and CAP_PERFMON (watch) and CAP_SYS_ADMIN (snapshot, top)"
	}
	return ck, caps
}

// list is "A", "A and B", "A, B and C".
func list(items []string) string {
	switch len(items) {
	case 0:
		return "none"
	case 1:
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " and " + items[len(items)-1]
}
