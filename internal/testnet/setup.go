package testnet

import (
	"fmt"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// KernelAtLeast reports whether the running kernel is major.minor or newer.
func KernelAtLeast(major, minor int) bool {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return false
	}
	var ma, mi int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(uts.Release[:]), "%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// RequireBPF skips a privileged test when preflight fails, except under
// CI=true, where a test that cannot load BPF must fail, never pass
// silently.
func RequireBPF(t testing.TB, preflight func() error) {
	t.Helper()
	if err := preflight(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and BPF is unavailable: %v", err)
		}
		t.Skipf("needs BPF: %v", err)
	}
}

// SmallRangeUsable is how many ports connect() can pick in a NewSmallRange
// namespace toward a destination with nothing in use: 100 in the range,
// 5 reserved, 1 bound by a listener.
const SmallRangeUsable = 94

// NewSmallRange is a namespace where ports run out fast and every figure is
// known: ip_local_port_range 40000-40099, ip_local_reserved_ports
// 40010-40014, tcp_tw_reuse 0, a listener on 127.0.0.1:40050 (inside the
// range), and n servers on 127.0.0.1 outside the range (ServerReadEOF:
// clients close first). A thread is parked inside so that /proc leads to
// it, and tcp_rfc1337=1: an RST cannot end a TIME_WAIT early (seen on
// loopback when a retransmitted FIN crosses the last ACK), so timewait
// counts are exact.
func NewSmallRange(t *testing.T, n int) (*Netns, []*Server) {
	t.Helper()
	ns := New(t)
	ns.Park(t)
	ns.Sysctl(t, "ipv4/tcp_rfc1337", "1")
	// Servers first: their ports come from the default range.
	servers := make([]*Server, n)
	for i := range servers {
		servers[i] = StartServer(t, ns, "127.0.0.1", ServerReadEOF)
	}
	ns.Sysctl(t, "ipv4/ip_local_port_range", "40000 40099")
	ns.Sysctl(t, "ipv4/ip_local_reserved_ports", "40010-40014")
	ns.Sysctl(t, "ipv4/tcp_tw_reuse", "0")
	var ln net.Listener
	ns.Do(t, func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:40050")
		return err
	})
	t.Cleanup(func() { ln.Close() })
	return ns, servers
}
