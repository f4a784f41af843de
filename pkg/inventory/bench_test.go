package inventory

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/testnet"
)

// BenchmarkScan scans a namespace: setns there and back, the iterator,
// decoding, the sysctls and the counters. The iterator walks the whole
// (host-wide) established hash whatever the namespace holds: "empty" is
// that fixed cost, "timewait-5000" adds 5000 timewait sockets.
func BenchmarkScan(b *testing.B) {
	for _, bc := range []struct {
		name string
		n    int
	}{{"empty", 0}, {"timewait-5000", 5000}} {
		b.Run(bc.name, func(b *testing.B) {
			s := openScanner(b)
			ns := newNetns(b)
			ns.Sysctl(b, "ipv4/ip_local_port_range", "20000 39999")
			ns.Sysctl(b, "ipv4/tcp_tw_reuse", "0")
			p := park(b, ns)
			want := 0
			if bc.n > 0 {
				closeFirst(b, ns, bc.n)
				want = bc.n + 1 // and the listener
			}
			var tws int
			if !testnet.WaitFor(30*time.Second, func() bool {
				tws = len(timewaits(scan(b, s, p.ref), TimeWait))
				return tws == bc.n
			}) {
				b.Fatalf("%d TIME_WAIT sockets, want %d", tws, bc.n)
			}

			b.ReportAllocs()
			var sockets int
			for b.Loop() {
				sockets = scan(b, s, p.ref).Len()
			}
			if sockets != want {
				b.Fatalf("scanned %d sockets, want %d", sockets, want)
			}
			if sockets > 0 {
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*sockets), "ns/socket")
			}
		})
	}
}

// BenchmarkNamespaces lists the host's namespaces: a stat per process, and
// per thread of multi-threaded processes.
func BenchmarkNamespaces(b *testing.B) {
	b.ReportAllocs()
	var refs []NamespaceRef
	for b.Loop() {
		var err error
		if refs, err = Namespaces(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(refs)), "namespaces")
}

// closeFirst makes n loopback connections inside ns that the client closes
// first: n TIME_WAIT sockets.
func closeFirst(b *testing.B, ns *testnet.Netns, n int) {
	ns.Do(b, func() error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		b.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					io.Copy(io.Discard, c)
					c.Close()
				}()
			}
		}()
		for range n {
			// Dialled on this goroutine, so on its thread, in ns.
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return err
			}
			c.Close()
		}
		return nil
	})
}
