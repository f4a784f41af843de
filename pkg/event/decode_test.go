package event

import (
	"encoding/binary"
	"testing"
)

// sampleRecord is a timewait record laid out as struct event.
func sampleRecord() []byte {
	raw := make([]byte, RecordSize)
	le := binary.LittleEndian
	le.PutUint64(raw[0:], 2_000_000)
	le.PutUint64(raw[8:], 1_000_000)
	le.PutUint32(raw[40:], 4242)
	le.PutUint16(raw[60:], afInet)
	le.PutUint16(raw[62:], 40001)
	le.PutUint16(raw[64:], 8080)
	raw[66] = byte(KindTimewait)
	raw[67] = byte(RoleClient)
	copy(raw[68:], []byte{127, 0, 0, 1})
	copy(raw[84:], []byte{127, 0, 0, 2})
	copy(raw[100:], "curl")
	le.PutUint32(raw[144:], 4000)       // proc.ppid
	le.PutUint32(raw[148:], 259<<20|3)  // proc.exe_dev
	le.PutUint64(raw[152:], 1234567890) // proc.exe_ino
	copy(raw[160:], "loop.sh")          // proc.comm
	return raw
}

// The identity of the process rides at the end of the record.
func TestDecodeProc(t *testing.T) {
	var e Event
	if err := Decode(sampleRecord(), Clock{}, &e); err != nil {
		t.Fatal(err)
	}
	want := Proc{PPID: 4000, ExeDev: 259<<20 | 3, ExeIno: 1234567890, Comm: [16]byte{'l', 'o', 'o', 'p', '.', 's', 'h'}}
	if e.Proc != want {
		t.Fatalf("Proc = %+v, want %+v", e.Proc, want)
	}
	if got := e.Proc.ExeDevString(); got != "259:3" {
		t.Errorf("ExeDevString = %q, want 259:3", got)
	}
	for _, c := range []struct {
		dev  uint32
		want string
	}{{0, ""}, {1, "0:1"}, {8 << 20, "8:0"}, {0xffffffff, "4095:1048575"}} {
		p := Proc{ExeDev: c.dev}
		if got := p.ExeDevString(); got != c.want {
			t.Errorf("ExeDevString(%#x) = %q, want %q", c.dev, got, c.want)
		}
	}
}

func TestDecodeRejectsShortAndUnknown(t *testing.T) {
	var e Event
	if err := Decode(sampleRecord()[:RecordSize-1], Clock{}, &e); err != ErrShortRecord {
		t.Fatalf("short record: %v, want ErrShortRecord", err)
	}
	raw := sampleRecord()
	raw[66] = 9
	if err := Decode(raw, Clock{}, &e); err == nil {
		t.Fatal("unknown kind decoded without error")
	}
	raw = sampleRecord()
	raw[60] = 1
	if err := Decode(raw, Clock{}, &e); err == nil {
		t.Fatal("unknown family decoded without error")
	}
}

func TestDecodeDoesNotAllocate(t *testing.T) {
	raw := sampleRecord()
	var e Event
	if n := testing.AllocsPerRun(1000, func() { Decode(raw, Clock{}, &e) }); n != 0 {
		t.Fatalf("Decode allocates %v times per event", n)
	}
}

func BenchmarkDecode(b *testing.B) {
	raw := sampleRecord()
	var e Event
	b.ReportAllocs()
	for b.Loop() {
		if err := Decode(raw, Clock{}, &e); err != nil {
			b.Fatal(err)
		}
	}
}
