package load

import (
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseSysctl: whatever the flag says, a parsed setting names a file
// under /proc/sys/net and nothing else (no "..", no absolute escape).
func FuzzParseSysctl(f *testing.F) {
	for _, s := range []string{"net.ipv4.tcp_tw_reuse=0", "net.ipv4.ip_local_port_range=40000 40009",
		"net.core.somaxconn = 4096", "kernel.pid_max=1", "net..x=1", "net.ipv4/../../x=1", "=", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := ParseSysctl(s)
		if err != nil {
			return
		}
		p := sc.Path()
		if filepath.Clean(p) != p || !strings.HasPrefix(p, "/proc/sys/net/") {
			t.Fatalf("%q parsed to path %q", s, p)
		}
		if strings.TrimSpace(sc.Value) != sc.Value {
			t.Fatalf("%q: value %q not trimmed", s, sc.Value)
		}
	})
}
