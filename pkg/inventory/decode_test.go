package inventory

import (
	"bytes"
	"encoding/binary"
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

	got, err := decodeRecords(encode(t, tw, listener, mapped), 250, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Socket{
		{State: TimeWait, Substate: FinWait2, Saddr: netip.MustParseAddr("10.0.0.1"), Sport: 40001,
			Daddr: netip.MustParseAddr("192.0.2.7"), Dport: 443, Remaining: 30 * time.Second, RemainingKnown: true, Timestamps: true},
		{State: Listen, Substate: Listen, IPv6: true, Saddr: netip.IPv6Unspecified(), Sport: 8080, Daddr: netip.IPv6Unspecified(), Bound: true},
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
	got, _ = decodeRecords(encode(t, tw), 0, nil)
	if got[0].RemainingKnown || got[0].Remaining != 0 {
		t.Errorf("with HZ unknown: %+v", got[0])
	}
	if _, err := decodeRecords(make([]byte, recordSize+1), 250, nil); err == nil {
		t.Error("a partial record decoded")
	}
	if _, err := decodeRecords(encode(t, record(1, "::", "::")), 250, nil); err == nil {
		t.Error("a record of family AF_UNIX decoded")
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
		out, err := decodeRecords(raw, hz, nil)
		if err != nil {
			return
		}
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

// Decoding allocates nothing once the output slice has room.
func BenchmarkDecode(b *testing.B) {
	const n = 5000
	recs := make([]inventorySockRecord, n)
	for i := range recs {
		recs[i] = record(afInet6, "2001:db8::1", "2001:db8::2")
		recs[i].Sport, recs[i].Dport = uint16(i), 443
		recs[i].State, recs[i].Substate, recs[i].Flags = uint8(TimeWait), uint8(TimeWait), flagTimer|flagTimestamps
	}
	raw := encode(b, recs...)
	out := make([]Socket, 0, n)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if out, err = decodeRecords(raw, 250, out[:0]); err != nil || len(out) != n {
			b.Fatal(len(out), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/socket")
}

// The iterator's output is decoded a chunk at a time: reads that end
// inside a record (one byte at a time, half a buffer) lose nothing, a
// chunk smaller than the output is enough, and output that ends inside a
// record is an error.
func TestDecodeAllInChunks(t *testing.T) {
	var recs []inventorySockRecord
	for i := range 100 {
		r := record(afInet, "10.0.0.1", "10.0.0.2")
		r.Sport, r.Dport = uint16(40000+i), 80
		r.State, r.Substate = uint8(TimeWait), uint8(TimeWait)
		recs = append(recs, r)
	}
	raw := encode(t, recs...)
	for name, rd := range map[string]func() io.Reader{
		"whole":    func() io.Reader { return bytes.NewReader(raw) },
		"one byte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(raw)) },
		"halves":   func() io.Reader { return iotest.HalfReader(bytes.NewReader(raw)) },
	} {
		s := &Scanner{buf: make([]byte, 0, 5*recordSize+7), hz: 250}
		out, err := s.decodeAll(rd(), make([]Socket, 3))
		if err != nil || len(out) != 103 {
			t.Fatalf("%s: %d sockets, %v; want 3 + 100", name, len(out), err)
		}
		for i, sk := range out[3:] {
			if sk.Sport != uint16(40000+i) || sk.State != TimeWait {
				t.Fatalf("%s: socket %d = %+v", name, i, sk)
			}
		}
	}
	s := &Scanner{buf: make([]byte, 0, 64), hz: 250}
	if _, err := s.decodeAll(bytes.NewReader(raw[:len(raw)-1]), nil); err == nil {
		t.Fatal("output ending inside a record decoded without error")
	}
}
