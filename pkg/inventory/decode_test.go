package inventory

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"testing"
	"testing/iotest"
	"time"
)

func encode(t testing.TB, recs ...inventorySockRecord) []byte {
	t.Helper()
	var buf bytes.Buffer
	for i := range recs {
		if err := binary.Write(&buf, binary.LittleEndian, &recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func record(family uint16, saddr, daddr string) inventorySockRecord {
	r := inventorySockRecord{Family: family}
	copy(r.Saddr[:], netip.MustParseAddr(saddr).AsSlice())
	copy(r.Daddr[:], netip.MustParseAddr(daddr).AsSlice())
	return r
}

// The decoder reads the offsets of the struct bpf2go generated from the C
// record; this pins field by field what each one means.
func TestDecodeMatchesBPFLayout(t *testing.T) {
	if got := binary.Size(inventorySockRecord{}); got != recordSize || recordSize != 48 {
		t.Fatalf("struct sock_record is %d bytes, recordSize %d, want 48", got, recordSize)
	}
	tw := record(afInet, "10.0.0.1", "192.0.2.7")
	tw.Sport, tw.Dport = 40001, 443
	tw.State, tw.Substate = uint8(TimeWait), uint8(FinWait2)
	tw.RemainingJiffies = 250 * 30 // 30 s at HZ 250
	tw.Flags = flagTimer | flagTimestamps

	listener := record(afInet6, "::", "::")
	listener.Sport = 8080
	listener.State, listener.Substate = uint8(Listen), uint8(Listen)
	listener.Flags = flagBound

	mapped := record(afInet6, "::ffff:127.0.0.1", "::ffff:127.0.0.2")
	mapped.Sport, mapped.Dport = 1, 2
	mapped.State, mapped.Substate = uint8(Established), uint8(Established)

	got, err := decodeRecords(encode(t, tw, listener, mapped), 250)
	if err != nil {
		t.Fatal(err)
	}
	// The listener is a Socket; the two connections are Conns, after it.
	want := []Socket{
		{State: Listen, Substate: Listen, IPv6: true, Saddr: netip.IPv6Unspecified(), Sport: 8080, Daddr: netip.IPv6Unspecified(), Bound: true},
		{State: TimeWait, Substate: FinWait2, Saddr: netip.MustParseAddr("10.0.0.1"), Sport: 40001,
			Daddr: netip.MustParseAddr("192.0.2.7"), Dport: 443, Remaining: 30 * time.Second, RemainingKnown: true, Timestamps: true},
		{State: Established, Substate: Established, Saddr: netip.MustParseAddr("127.0.0.1"), Sport: 1, Daddr: netip.MustParseAddr("127.0.0.2"), Dport: 2},
	}
	if len(got) != len(want) {
		t.Fatalf("decoded %d sockets, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("socket %d\n%+v\nwant\n%+v", i, got[i], want[i])
		}
	}

	// HZ unknown: the timer is reported unknown, not wrong.
	got, _ = decodeRecords(encode(t, tw), 0)
	if got[0].RemainingKnown || got[0].Remaining != 0 {
		t.Errorf("with HZ unknown: %+v", got[0])
	}
	if _, err := decodeRecords(make([]byte, recordSize+1), 250); err == nil {
		t.Error("a partial record decoded")
	}
	if _, err := decodeRecords(encode(t, record(1, "::", "::")), 250); err == nil {
		t.Error("a record of family AF_UNIX decoded")
	}
}

// decodeRecords decodes raw into a namespace and returns its sockets, the
// ungrouped ones first.
func decodeRecords(raw []byte, hz uint32) ([]Socket, error) {
	ns, err := decodeNamespace(raw, hz)
	if err != nil {
		return nil, err
	}
	return ns.All(), nil
}

func decodeNamespace(raw []byte, hz uint32) (*Namespace, error) {
	ns := &Namespace{}
	d := decoder{hz: hz}
	d.reset(ns)
	return ns, d.records(raw)
}

// Connections are grouped by destination (or, accepted, by listener and
// peer address): a group's sockets share its addresses and port, and
// sockets that belong to no group stay Sockets.
func TestDecodeGroups(t *testing.T) {
	rec := func(state State, flags uint8, saddr string, sport uint16, daddr string, dport uint16) inventorySockRecord {
		r := record(afInet, saddr, daddr)
		r.State, r.Substate, r.Flags, r.Sport, r.Dport = uint8(state), uint8(state), flags, sport, dport
		return r
	}
	raw := encode(t,
		rec(Listen, flagBound, "0.0.0.0", 8080, "0.0.0.0", 0),
		rec(TimeWait, 0, "10.0.0.1", 40000, "10.0.0.9", 443),
		rec(TimeWait, 0, "10.0.0.1", 40001, "10.0.0.9", 443),
		rec(Established, 0, "10.0.0.1", 40002, "10.0.0.9", 80),         // another destination
		rec(TimeWait, flagBound, "10.0.0.1", 8080, "10.0.0.7", 50000),  // accepted on 8080
		rec(TimeWait, flagBound, "10.0.0.1", 8080, "10.0.0.7", 50001),  // the same group
		rec(Established, flagBound, "10.0.0.1", 9000, "10.0.0.9", 443), // bind() then connect()
		rec(Close, 0, "10.0.0.1", 40003, "10.0.0.9", 443),              // no destination
		rec(Established, 0, "10.0.0.1", 40004, "0.0.0.0", 0),           // no peer
	)
	ns, err := decodeNamespace(raw, 250)
	if err != nil {
		t.Fatal(err)
	}
	if len(ns.Sockets) != 4 || len(ns.Conns) != 5 || len(ns.Groups) != 3 {
		t.Fatalf("%d sockets, %d conns in %d groups; want 4, 5 in 3", len(ns.Sockets), len(ns.Conns), len(ns.Groups))
	}
	ip := netip.MustParseAddr
	wantGroups := []Group{
		{Saddr: ip("10.0.0.1"), Daddr: ip("10.0.0.9"), Port: 443},
		{Saddr: ip("10.0.0.1"), Daddr: ip("10.0.0.9"), Port: 80},
		{Server: true, Saddr: ip("10.0.0.1"), Daddr: ip("10.0.0.7"), Port: 8080},
	}
	for i, g := range wantGroups {
		if ns.Groups[i] != g {
			t.Errorf("group %d = %+v, want %+v", i, ns.Groups[i], g)
		}
	}
	wantConns := []struct {
		group uint32
		port  uint16
	}{{0, 40000}, {0, 40001}, {1, 40002}, {2, 50000}, {2, 50001}}
	for i, w := range wantConns {
		if c := ns.Conns[i]; c.Group != w.group || c.Port != w.port {
			t.Errorf("conn %d = %+v, want group %d port %d", i, c, w.group, w.port)
		}
	}
	if s := ns.Socket(&ns.Conns[3]); !s.Bound || s.Sport != 8080 || s.Dport != 50000 || s.Daddr != ip("10.0.0.7") {
		t.Errorf("an accepted conn expands to %+v", s)
	}
}

func TestUnmapPair(t *testing.T) {
	for _, tc := range []struct {
		saddr, daddr string
		s4, d4       string
		ipv6         bool
	}{
		{"::ffff:10.0.0.1", "::ffff:10.0.0.2", "10.0.0.1", "10.0.0.2", false},
		{"::", "::ffff:10.0.0.2", "0.0.0.0", "10.0.0.2", false}, // connecting, source not yet chosen
		{"::ffff:10.0.0.1", "::", "10.0.0.1", "0.0.0.0", false}, // listener on a v4-mapped address
		{"::", "::", "::", "::", true},                          // dual-stack listener
		{"::1", "::ffff:10.0.0.2", "::1", "::ffff:10.0.0.2", true},
		{"2001:db8::1", "2001:db8::2", "2001:db8::1", "2001:db8::2", true},
	} {
		s, d, v6 := unmapPair(netip.MustParseAddr(tc.saddr), netip.MustParseAddr(tc.daddr))
		if s != netip.MustParseAddr(tc.s4) || d != netip.MustParseAddr(tc.d4) || v6 != tc.ipv6 {
			t.Errorf("unmapPair(%s, %s) = %s, %s, %v; want %s, %s, %v", tc.saddr, tc.daddr, s, d, v6, tc.s4, tc.d4, tc.ipv6)
		}
	}
}

func FuzzDecodeRecords(f *testing.F) {
	tw := record(afInet, "10.0.0.1", "192.0.2.7")
	tw.State, tw.Substate, tw.Flags, tw.RemainingJiffies = uint8(TimeWait), uint8(TimeWait), flagTimer, 1<<32-1
	f.Add(encode(f, tw, record(afInet6, "::ffff:1.2.3.4", "::")), uint32(250))
	f.Add(encode(f, record(afInet6, "::1", "::1")), uint32(0))
	f.Add([]byte{1, 2, 3}, uint32(1000))
	f.Fuzz(func(t *testing.T, raw []byte, hz uint32) {
		ns, err := decodeNamespace(raw, hz)
		if err != nil {
			return
		}
		for _, c := range ns.Conns {
			if int(c.Group) >= len(ns.Groups) {
				t.Fatalf("conn of group %d, of %d", c.Group, len(ns.Groups))
			}
		}
		out := ns.All()
		if len(out) != len(raw)/recordSize || len(raw)%recordSize != 0 {
			t.Fatalf("%d bytes decoded to %d sockets", len(raw), len(out))
		}
		for _, s := range out {
			if s.IPv6 != s.Saddr.Is6() || s.IPv6 != s.Daddr.Is6() {
				t.Fatalf("mixed families: %+v", s)
			}
			if (s.RemainingKnown && hz == 0) || (!s.RemainingKnown && s.Remaining != 0) || s.Remaining < 0 {
				t.Fatalf("timer %v (known %v) with HZ %d", s.Remaining, s.RemainingKnown, hz)
			}
		}
	})
}

// BenchmarkDecode decodes a quarter of a million timewait sockets toward
// 40 destinations (IPv4, as the scale fixture makes them, and IPv6), a
// scan's output: once the namespace's slices have grown, decoding
// allocates nothing (allocs/op 0).
func BenchmarkDecode(b *testing.B) {
	const n, dests = 250_000, 40
	for _, family := range []uint16{afInet, afInet6} {
		b.Run(map[uint16]string{afInet: "ipv4", afInet6: "ipv6"}[family], func(b *testing.B) {
			recs := make([]inventorySockRecord, n)
			for i := range recs {
				if family == afInet {
					recs[i] = record(afInet, "127.0.0.1", fmt.Sprintf("127.0.0.%d", 1+i%dests))
				} else {
					recs[i] = record(afInet6, "2001:db8::1", fmt.Sprintf("2001:db8::%x", 1+i%dests))
				}
				recs[i].Sport, recs[i].Dport = uint16(1024+i/dests), 80
				recs[i].State, recs[i].Substate, recs[i].Flags = uint8(TimeWait), uint8(TimeWait), flagTimer|flagTimestamps
				recs[i].RemainingJiffies = uint32(i % 15000)
			}
			raw := encode(b, recs...)
			ns := &Namespace{}
			d := decoder{hz: 250}
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				*ns = Namespace{Sockets: ns.Sockets[:0], Groups: ns.Groups[:0], Conns: ns.Conns[:0]}
				d.reset(ns)
				if err := d.records(raw); err != nil || len(ns.Conns) != n || len(ns.Groups) != dests {
					b.Fatal(len(ns.Conns), len(ns.Groups), err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
		})
	}
}

// The iterator's output is decoded a chunk at a time: reads that end
// inside a record (one byte at a time, half a buffer) lose nothing, a
// chunk smaller than the output is enough, and output that ends inside a
// record is an error.
func TestDecodeAllInChunks(t *testing.T) {
	raw := encode(t, timewaitRecords(100)...)
	for name, rd := range map[string]func() io.Reader{
		"whole":    func() io.Reader { return bytes.NewReader(raw) },
		"one byte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(raw)) },
		"halves":   func() io.Reader { return iotest.HalfReader(bytes.NewReader(raw)) },
	} {
		s := &Scanner{buf: make([]byte, 0, 5*recordSize+7), dec: decoder{hz: 250}}
		ns := &Namespace{}
		err := s.decodeAll(rd(), ns, false)
		if err != nil || len(ns.Conns) != 100 || len(ns.Groups) != 1 {
			t.Fatalf("%s: %d conns in %d groups, %v; want 100 in 1", name, len(ns.Conns), len(ns.Groups), err)
		}
		for i, c := range ns.Conns {
			if c.Port != uint16(40000+i) || c.State != TimeWait {
				t.Fatalf("%s: conn %d = %+v", name, i, c)
			}
		}
	}
	s := &Scanner{buf: make([]byte, 0, 64), dec: decoder{hz: 250}}
	if err := s.decodeAll(bytes.NewReader(raw[:len(raw)-1]), &Namespace{}, false); err == nil {
		t.Fatal("output ending inside a record decoded without error")
	}
}

// Reading the listeners only stops at the first chunk that holds another
// socket and keeps only the listeners, read in small chunks or whole.
func TestDecodeListenersOnly(t *testing.T) {
	var recs []inventorySockRecord
	for _, port := range []uint16{80, 443} {
		l := record(afInet, "0.0.0.0", "0.0.0.0")
		l.State, l.Substate, l.Sport, l.Flags = uint8(Listen), uint8(Listen), port, flagBound
		recs = append(recs, l)
	}
	raw := encode(t, append(recs, timewaitRecords(1000)...)...)
	for _, size := range []int{recordSize, 3 * recordSize, len(raw)} {
		rd := &countingReader{r: bytes.NewReader(raw)}
		s := &Scanner{buf: make([]byte, 0, size), dec: decoder{hz: 250}}
		ns := &Namespace{}
		if err := s.decodeAll(rd, ns, true); err != nil {
			t.Fatal(err)
		}
		if len(ns.Sockets) != 2 || ns.Sockets[0].Sport != 80 || ns.Sockets[1].Sport != 443 || len(ns.Conns) != 0 {
			t.Fatalf("chunks of %d: %d sockets %+v, %d conns; want the 2 listeners", size, len(ns.Sockets), ns.Sockets, len(ns.Conns))
		}
		if size < len(raw) && rd.n > 4*recordSize {
			t.Errorf("chunks of %d: read %d bytes, want the listeners and one chunk more", size, rd.n)
		}
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += n
	return n, err
}

// timewaitRecords are n timewait sockets from 10.0.0.1, ports 40000 on,
// toward 10.0.0.2:80.
func timewaitRecords(n int) []inventorySockRecord {
	recs := make([]inventorySockRecord, n)
	for i := range recs {
		recs[i] = record(afInet, "10.0.0.1", "10.0.0.2")
		recs[i].Sport, recs[i].Dport = uint16(40000+i), 80
		recs[i].State, recs[i].Substate = uint8(TimeWait), uint8(TimeWait)
	}
	return recs
}
