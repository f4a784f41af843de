package report

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/twtrace/twtrace/pkg/headroom"
	"github.com/twtrace/twtrace/pkg/inventory"
)

// A namespace built by hand goes through headroom.Compute and
// FromNamespace into the snapshot table: settings, figures, the server
// side apart, every line within 80 columns for IPv4.
func TestSnapshotTable(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	ns := &inventory.Namespace{
		NamespaceRef: inventory.NamespaceRef{Inode: 4026532283, PID: 4121, Comm: "checkout"},
		Sysctls: inventory.Sysctls{PortRange: inventory.PortSpan{Lo: 40000, Hi: 40099},
			Reserved: []inventory.PortSpan{{Lo: 40010, Hi: 40014}}, TwReuse: 0, MaxTwBuckets: 100},
	}
	add := func(st, sub inventory.State, sport, dport uint16, bound bool) {
		ns.Sockets = append(ns.Sockets, inventory.Socket{State: st, Substate: sub, Saddr: lo, Sport: sport, Daddr: lo, Dport: dport, Bound: bound})
	}
	add(inventory.Listen, inventory.Listen, 8080, 0, true)
	add(inventory.Listen, inventory.Listen, 40050, 0, true)
	for p := uint16(40020); p < 40030; p++ {
		add(inventory.TimeWait, inventory.TimeWait, p, 8080, false)
	}
	add(inventory.TimeWait, inventory.FinWait2, 40031, 8080, false)
	add(inventory.TimeWait, inventory.TimeWait, 8080, 40040, true) // the server side
	r := headroom.Compute(ns)
	n, d, s := FromNamespace(ns, &r)
	if n.Usable != 94 || n.Timewait != 11 || n.FinWait2 != 1 || n.TwBucketsInUse != 12 || n.CeilingPerS != 1.6 {
		t.Errorf("namespace = %+v", n)
	}
	if len(d) != 1 || d[0].Timewait != 10 || d[0].FinWait2 != 1 || d[0].PortsInUse != 11 || d[0].PortsAvailable != 83 || d[0].HeadroomPct != 88.3 {
		t.Fatalf("destinations = %+v", d)
	}
	if len(s) != 1 || s[0].Port != 8080 || s[0].Timewait != 1 {
		t.Fatalf("servers = %+v", s)
	}
	snap := Snapshot{Namespaces: []Namespace{n}, Destinations: d, Servers: s, Errors: []string{"netns 9: permission denied"}}
	var b bytes.Buffer
	if err := WriteSnapshotTable(&b, &snap); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"netns 4026532283 (pid 4121 checkout)  timewait 11, fin_wait2 1",
		"range 40000-40099  reserved 40010-40014  usable 94 = 1.6 conn/s  tw_reuse=0",
		"127.0.0.1       127.0.0.1:8080            10     1     0     11     83   88%",
		"accepted on 127.0.0.1:8080: 1 timewait (holds no ephemeral port)",
		"twtrace: could not read netns 9: permission denied",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	for _, l := range strings.Split(out, "\n") {
		if utf8.RuneCountInString(l) > 80 {
			t.Errorf("line over 80 columns: %q", l)
		}
	}
}

func TestSpans(t *testing.T) {
	for _, c := range []struct {
		in   [][2]uint16
		want string
	}{{nil, "-"}, {[][2]uint16{{8080, 8080}}, "8080"}, {[][2]uint16{{1, 2}, {9000, 9010}}, "1-2,9000-9010"}} {
		if got := Spans(c.in); got != c.want {
			t.Errorf("Spans(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}
