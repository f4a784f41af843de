package aggregate

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/twtrace/twtrace/pkg/event"
)

// record lays e out as struct event in bpf/record.h, the input of
// event.Decode: ts_ns at 0, open_ns 8, cgroup_id 16, bytes_sent 24,
// bytes_received 32, pid 40, tid 44, opener_pid 48, netns 52, err 56,
// family 60, sport 62, dport 64, kind 66, role 67, saddr 68, daddr 84,
// comm 100, opener_comm 116. e.Time is taken as nanoseconds after boot.
func record(e *event.Event) []byte {
	raw := make([]byte, event.RecordSize)
	le := binary.LittleEndian
	ts := uint64(e.Time.Sub(t0))
	le.PutUint64(raw[0:], ts)
	if e.Lifetime > 0 {
		le.PutUint64(raw[8:], ts-uint64(e.Lifetime))
	}
	le.PutUint64(raw[16:], e.CgroupID)
	le.PutUint64(raw[24:], e.BytesSent)
	le.PutUint64(raw[32:], e.BytesRecv)
	le.PutUint32(raw[40:], e.PID)
	le.PutUint32(raw[44:], e.TID)
	le.PutUint32(raw[48:], e.OpenerPID)
	le.PutUint32(raw[52:], e.Netns)
	le.PutUint32(raw[56:], uint32(e.Errno))
	le.PutUint16(raw[62:], e.Sport)
	le.PutUint16(raw[64:], e.Dport)
	raw[66] = byte(e.Kind)
	raw[67] = byte(e.Role)
	if e.IPv6 {
		le.PutUint16(raw[60:], 10) // AF_INET6
		s, d := e.Saddr.As16(), e.Daddr.As16()
		copy(raw[68:], s[:])
		copy(raw[84:], d[:])
	} else {
		le.PutUint16(raw[60:], 2) // AF_INET
		s := e.Saddr.As4()
		copy(raw[68:], s[:])
		if e.Daddr.IsValid() {
			d := e.Daddr.As4()
			copy(raw[84:], d[:])
		}
	}
	copy(raw[100:], e.Comm[:])
	copy(raw[116:], e.OpenerComm[:])
	return raw
}

// sampleEvents is n realistic events over about keys keys: mostly timewaits of
// every role with lifetimes and byte counts, some connect and bind errors,
// IPv4 and IPv6.
func sampleEvents(n, keys int) []event.Event {
	rng := rand.New(rand.NewPCG(7, 7))
	procs := max(keys/10, 1)
	events := make([]event.Event, n)
	for i := range events {
		p := rng.IntN(procs)
		dst := fmt.Sprintf("10.1.%d.%d:%d", p%7, rng.IntN(5), 8080+rng.IntN(2))
		if p%4 == 3 {
			dst = fmt.Sprintf("[2001:db8::%x]:%d", rng.IntN(5), 443+rng.IntN(2))
		}
		e := timewait(uint32(1000+p), fmt.Sprintf("worker-%d", p), dst, event.RoleClient,
			time.Hour+time.Duration(i)*time.Microsecond)
		e.Sport = uint16(32768 + rng.IntN(28000))
		e.OpenerPID, e.OpenerComm, e.CgroupID = e.PID, e.Comm, 4242
		switch x := rng.IntN(100); {
		case x < 15:
			e.Kind, e.Errno, e.Sport = event.KindConnectError, 99, 0
		case x < 20:
			e.Kind, e.Errno, e.Daddr, e.Dport = event.KindBindError, 98, netip.Addr{}, 0
		default:
			e.Role = event.Role(rng.IntN(2))
			e.Lifetime = time.Duration(rng.Int64N(int64(10 * time.Second)))
			e.BytesSent, e.BytesRecv = rng.Uint64N(1<<20), rng.Uint64N(1<<24)
		}
		events[i] = e
	}
	return events
}

func TestRecordRoundTrip(t *testing.T) {
	for _, e := range sampleEvents(200, 100) {
		var got event.Event
		if err := event.Decode(record(&e), event.Clock{BootWall: t0}, &got); err != nil {
			t.Fatal(err)
		}
		if got != e {
			t.Fatalf("decoded %+v\nfrom      %+v", got, e)
		}
	}
}

func TestAddDoesNotAllocate(t *testing.T) {
	events := sampleEvents(1000, 100)
	tb := New(1000)
	for i := range events {
		tb.Add(&events[i])
	}
	i := 0
	if n := testing.AllocsPerRun(10000, func() {
		tb.Add(&events[i%len(events)])
		i++
	}); n != 0 {
		t.Fatalf("Add of an existing key allocates %v times per event", n)
	}
}

func TestDecodeAndAddDoesNotAllocate(t *testing.T) {
	events := sampleEvents(1000, 100)
	records := make([][]byte, len(events))
	for i := range events {
		records[i] = record(&events[i])
	}
	tb := New(1000)
	for i := range events {
		tb.Add(&events[i])
	}
	clock := event.Clock{BootWall: t0}
	var e event.Event
	i := 0
	if n := testing.AllocsPerRun(10000, func() {
		if err := event.Decode(records[i%len(records)], clock, &e); err != nil {
			t.Fatal(err)
		}
		tb.Add(&e)
		i++
	}); n != 0 {
		t.Fatalf("Decode+Add allocates %v times per event", n)
	}
}

func BenchmarkAdd(b *testing.B) {
	events := sampleEvents(4096, 100)
	tb := New(1000)
	for i := range events {
		tb.Add(&events[i])
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		tb.Add(&events[i&4095])
		i++
	}
	b.ReportMetric(float64(tb.Len()), "keys")
}

func BenchmarkDecodeAndAdd(b *testing.B) {
	events := sampleEvents(4096, 100)
	records := make([][]byte, len(events))
	tb := New(1000)
	for i := range events {
		records[i] = record(&events[i])
		tb.Add(&events[i])
	}
	clock := event.Clock{BootWall: time.Now()}
	var e event.Event
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := event.Decode(records[i&4095], clock, &e); err != nil {
			b.Fatal(err)
		}
		tb.Add(&e)
		i++
	}
	b.ReportMetric(float64(tb.Len()), "keys")
}

// BenchmarkSnapshotDelta is the rest of a refresh: copy the table into a
// reused snapshot and compute the interval counts.
func BenchmarkSnapshotDelta(b *testing.B) {
	tb := New(1000)
	events := sampleEvents(20000, 1000)
	for i := range events {
		tb.Add(&events[i])
	}
	var prev, cur Snapshot
	tb.SnapshotTo(&prev)
	b.ReportMetric(float64(tb.Len()), "rows")
	b.ReportAllocs()
	for b.Loop() {
		tb.SnapshotTo(&cur)
		if err := cur.Delta(&prev); err != nil {
			b.Fatal(err)
		}
		prev, cur = cur, prev
	}
}
