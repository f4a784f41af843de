package headroom

import (
	"net/netip"
	"testing"
	"time"

	"github.com/twtrace/twtrace/pkg/inventory"
)

// BenchmarkCompute: 30,000 timewaits toward 3 destinations, 10,000 ports
// each, in the default range, interleaved as a dump of the kernel's hash
// tables interleaves them.
func BenchmarkCompute(b *testing.B) {
	src := netip.MustParseAddr("10.0.0.1")
	dsts := []netip.AddrPort{
		netip.MustParseAddrPort("10.0.0.2:80"),
		netip.MustParseAddrPort("10.0.0.3:80"),
		netip.MustParseAddrPort("10.0.0.2:443"),
	}
	ns := &inventory.Namespace{
		NamespaceRef: inventory.NamespaceRef{Inode: netns},
		Sysctls: inventory.Sysctls{
			PortRange: inventory.PortSpan{Lo: 32768, Hi: 60999},
			TwReuse:   1, TwReuseDelay: time.Second, Timestamps: 1,
		},
	}
	for i := range 30000 {
		d := dsts[i%3]
		ns.Sockets = append(ns.Sockets, inventory.Socket{
			State: inventory.TimeWait, Substate: inventory.TimeWait,
			Saddr: src, Sport: uint16(32768 + (i*7919)%28232), Daddr: d.Addr(), Dport: d.Port(),
			Remaining: time.Duration(i%60000) * time.Millisecond, RemainingKnown: true, Timestamps: true,
		})
	}
	ns.Sockets = append(ns.Sockets, listener("0.0.0.0:8080"), listener("0.0.0.0:40000"))
	b.ReportAllocs()
	for b.Loop() {
		r := Compute(ns)
		if len(r.Destinations) != 3 {
			b.Fatalf("%d destinations", len(r.Destinations))
		}
	}
}

// BenchmarkComputeGrouped is a scan's quarter of a million timewait
// sockets toward 40 destinations, in the wide range the scale fixture
// uses, as the decoder groups them: what each read of top and the agent
// computes. Its allocations are per destination, not per socket.
func BenchmarkComputeGrouped(b *testing.B) {
	const n, dests = 250_000, 40
	ns := &inventory.Namespace{
		NamespaceRef: inventory.NamespaceRef{Inode: netns},
		Sysctls:      inventory.Sysctls{PortRange: inventory.PortSpan{Lo: 1024, Hi: 65535}, Timestamps: 1},
	}
	for i := range n {
		ns.Sockets = append(ns.Sockets, inventory.Socket{
			State: inventory.TimeWait, Substate: inventory.TimeWait,
			Saddr: netip.MustParseAddr("127.0.0.1"), Sport: uint16(1024 + i/dests),
			Daddr: netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + i%dests)}), Dport: 80,
			Remaining: time.Duration(i%60000) * time.Millisecond, RemainingKnown: true, Timestamps: true,
		})
	}
	inventory.Compact(ns)
	if len(ns.Conns) != n || len(ns.Groups) != dests {
		b.Fatalf("%d conns in %d groups", len(ns.Conns), len(ns.Groups))
	}
	b.ReportAllocs()
	for b.Loop() {
		if r := Compute(ns); len(r.Destinations) != dests || r.Namespace.Timewait != n {
			b.Fatalf("%d destinations, %d timewait", len(r.Destinations), r.Namespace.Timewait)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/socket")
}
