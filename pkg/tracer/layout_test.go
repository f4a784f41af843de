package tracer

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/twtrace/twtrace/pkg/event"
)

// The decoder reads offsets by hand (no reflection, no allocation); this
// pins them to the struct bpf2go generated from the C source.
func TestDecodeMatchesBPFLayout(t *testing.T) {
	if got := binary.Size(twtraceEvent{}); got != event.RecordSize {
		t.Fatalf("struct event is %d bytes, event.RecordSize says %d", got, event.RecordSize)
	}
	if got := binary.Size(twtraceProcId{}); got != event.ProcSize {
		t.Fatalf("struct proc_id is %d bytes, event.ProcSize says %d", got, event.ProcSize)
	}
	raw := twtraceEvent{
		TsNs: 5_000_000_000, OpenNs: 4_250_000_000, CgroupId: 77,
		BytesSent: 1234, BytesReceived: 5678,
		Pid: 100, Tid: 101, OpenerPid: 99, Netns: 4026531840, Err: 0,
		Family: 2, Sport: 40001, Dport: 8080, Kind: 1, Role: 1, Flags: 3,
		Reason: 4, Substate: 5,
		Proc:  twtraceProcId{Ppid: 98, ExeDev: 259<<20 | 2, ExeIno: 1 << 40},
		Stack: 0xfeedc0de12345678,
	}
	for i, c := range "loop.sh" {
		raw.Proc.Comm[i] = int8(c)
	}
	copy(raw.Saddr[:], []byte{127, 0, 0, 1})
	copy(raw.Daddr[:], []byte{10, 1, 2, 3})
	for i, c := range "curl" {
		raw.Comm[i] = int8(c)
	}
	for i, c := range "nginx" {
		raw.OpenerComm[i] = int8(c)
	}
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.LittleEndian, &raw); err != nil {
		t.Fatal(err)
	}
	boot := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var e event.Event
	if err := event.Decode(buf.Bytes(), event.Clock{BootWall: boot}, &e); err != nil {
		t.Fatal(err)
	}
	want := event.Event{
		Time: boot.Add(5 * time.Second), Kind: event.KindTimewait,
		PID: 100, TID: 101, Netns: 4026531840, CgroupID: 77,
		Saddr: netip.MustParseAddr("127.0.0.1"), Sport: 40001,
		Daddr: netip.MustParseAddr("10.1.2.3"), Dport: 8080,
		Role: event.RoleClient, OpenerPID: 99,
		Lifetime: 750 * time.Millisecond, BytesSent: 1234, BytesRecv: 5678,
		Recovered: true, Confirmed: true, Reason: event.ReasonReused, Substate: event.SubstateFinWait2,
		Proc:  event.Proc{PPID: 98, ExeDev: 259<<20 | 2, ExeIno: 1 << 40},
		Stack: 0xfeedc0de12345678,
	}
	copy(want.Proc.Comm[:], "loop.sh")
	copy(want.Comm[:], "curl")
	copy(want.OpenerComm[:], "nginx")
	if e != want {
		t.Fatalf("decoded\n%+v\nwant\n%+v", e, want)
	}

	// v4-mapped IPv6 becomes IPv4; a connect_error carries its errno.
	raw = twtraceEvent{Family: 10, Kind: 2, Err: int32(syscall.EADDRNOTAVAIL), Dport: 443, TsNs: 1}
	copy(raw.Daddr[:], netip.MustParseAddr("::ffff:192.0.2.7").AsSlice())
	buf.Reset()
	binary.Write(&buf, binary.LittleEndian, &raw)
	if err := event.Decode(buf.Bytes(), event.Clock{}, &e); err != nil {
		t.Fatal(err)
	}
	if e.IPv6 || e.Daddr != netip.MustParseAddr("192.0.2.7") || e.Saddr != netip.IPv4Unspecified() ||
		e.Errno != syscall.EADDRNOTAVAIL || e.Kind != event.KindConnectError || e.Lifetime != 0 {
		t.Fatalf("v4-mapped connect_error decoded as %+v", e)
	}
}

// pkg/event decodes kinds, end reasons and roles by number: they must be
// the numbers the C enums give them.
func TestEnumsMatchBPF(t *testing.T) {
	pairs := []struct {
		name     string
		got, bpf uint32
	}{
		{"timewait", uint32(event.KindTimewait), uint32(twtraceEventKindEVENT_TIMEWAIT)},
		{"connect_error", uint32(event.KindConnectError), uint32(twtraceEventKindEVENT_CONNECT_ERROR)},
		{"bind_error", uint32(event.KindBindError), uint32(twtraceEventKindEVENT_BIND_ERROR)},
		{"timewait_end", uint32(event.KindTimewaitEnd), uint32(twtraceEventKindEVENT_TIMEWAIT_END)},
		{"overflow", uint32(event.KindOverflow), uint32(twtraceEventKindEVENT_TW_OVERFLOW)},
		{"reuse", uint32(event.KindReuse), uint32(twtraceEventKindEVENT_TW_REUSE)},
		{"expired", uint32(event.ReasonExpired), uint32(twtraceEndReasonEND_EXPIRED)},
		{"rst", uint32(event.ReasonRST), uint32(twtraceEndReasonEND_RST)},
		{"syn", uint32(event.ReasonSYN), uint32(twtraceEndReasonEND_SYN)},
		{"reused", uint32(event.ReasonReused), uint32(twtraceEndReasonEND_REUSED)},
		{"killed", uint32(event.ReasonKilled), uint32(twtraceEndReasonEND_KILLED)},
		{"role unknown", uint32(event.RoleUnknown), uint32(twtraceRoleROLE_UNKNOWN)},
		{"role client", uint32(event.RoleClient), uint32(twtraceRoleROLE_CLIENT)},
		{"role server", uint32(event.RoleServer), uint32(twtraceRoleROLE_SERVER)},
	}
	for _, p := range pairs {
		if p.got != p.bpf {
			t.Errorf("%s is %d in pkg/event, %d in the BPF source", p.name, p.got, p.bpf)
		}
	}
}

// ProgramNames, which tools and the command's tests look programs up by,
// is every program of the generated object, no more.
func TestProgramNamesAreTheObjects(t *testing.T) {
	spec, err := loadTwtrace()
	if err != nil {
		t.Fatal(err)
	}
	var inObject []string
	for name := range spec.Programs {
		inObject = append(inObject, name)
	}
	slices.Sort(inObject)
	listed := slices.Sorted(slices.Values(ProgramNames))
	if !slices.Equal(listed, inObject) {
		t.Errorf("ProgramNames %v, the BPF object has %v", listed, inObject)
	}
}
