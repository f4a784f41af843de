package event

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

func comm(s string) (c [16]byte) {
	copy(c[:], s)
	return c
}

var testTime = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

func timewaitEvent() Event {
	return Event{
		Time:       testTime,
		Kind:       KindTimewait,
		PID:        4321,
		TID:        4322,
		Comm:       comm("nginx"),
		Netns:      4026531840,
		CgroupID:   1234567890123,
		Saddr:      netip.MustParseAddr("10.0.0.1"),
		Sport:      41234,
		Daddr:      netip.MustParseAddr("10.0.0.2"),
		Dport:      443,
		Role:       RoleClient,
		OpenerPID:  1234,
		OpenerComm: comm("curl"),
		Lifetime:   12345678 * time.Nanosecond,
		BytesSent:  100,
		BytesRecv:  2000,
		Proc:       Proc{PPID: 4000, ExeDev: 259<<20 | 1, ExeIno: 131077, Comm: comm("nginx")},
	}
}

func connectErrorEvent() Event {
	return Event{
		Time:  testTime,
		Kind:  KindConnectError,
		PID:   77,
		TID:   78,
		Comm:  comm("python3"),
		Netns: 4026531840,
		IPv6:  true,
		Saddr: netip.IPv6Unspecified(),
		Daddr: netip.MustParseAddr("2001:db8::1"),
		Dport: 8080,
		Errno: syscall.EADDRNOTAVAIL,
	}
}

func bindErrorEvent() Event {
	return Event{
		Time:  testTime,
		Kind:  KindBindError,
		PID:   99,
		TID:   100,
		Comm:  comm("java"),
		Netns: 4026531840,
		Saddr: netip.IPv4Unspecified(),
		Errno: syscall.EADDRINUSE,
	}
}

func TestAppendJSON(t *testing.T) {
	tests := []struct {
		name string
		e    func() Event
		want string
	}{
		{
			name: "timewait",
			e:    timewaitEvent,
			want: `{"time":"2024-05-06T07:08:09.123456789Z","event":"timewait","pid":4321,"comm":"nginx","ppid":4000,"leader_comm":"nginx","exe_dev":"259:1","exe_inode":131077,"netns":4026531840,"cgroup_id":1234567890123,"family":"ipv4","saddr":"10.0.0.1","sport":41234,"daddr":"10.0.0.2","dport":443,"role":"client","opener_pid":1234,"opener_comm":"curl","lifetime_ms":12.346,"bytes_sent":100,"bytes_received":2000}`,
		},
		{
			name: "timewait unknown opener, local time",
			e: func() Event {
				e := timewaitEvent()
				e.Time = time.Date(2024, 5, 6, 9, 8, 9, 0, time.FixedZone("CEST", 2*3600))
				e.Role, e.OpenerPID, e.OpenerComm, e.Lifetime = RoleUnknown, 0, [16]byte{}, 0
				return e
			},
			want: `{"time":"2024-05-06T07:08:09Z","event":"timewait","pid":4321,"comm":"nginx","ppid":4000,"leader_comm":"nginx","exe_dev":"259:1","exe_inode":131077,"netns":4026531840,"cgroup_id":1234567890123,"family":"ipv4","saddr":"10.0.0.1","sport":41234,"daddr":"10.0.0.2","dport":443,"role":"unknown","opener_pid":0,"opener_comm":"","lifetime_ms":null,"bytes_sent":100,"bytes_received":2000}`,
		},
		{
			name: "connect_error unbound ipv6",
			e:    connectErrorEvent,
			want: `{"time":"2024-05-06T07:08:09.123456789Z","event":"connect_error","pid":77,"comm":"python3","ppid":0,"leader_comm":"","exe_dev":"","exe_inode":0,"netns":4026531840,"cgroup_id":0,"family":"ipv6","saddr":"","sport":0,"daddr":"2001:db8::1","dport":8080,"errno":"EADDRNOTAVAIL","tid":78}`,
		},
		{
			name: "connect_error bound source",
			e: func() Event {
				e := connectErrorEvent()
				e.Saddr, e.Sport = netip.MustParseAddr("2001:db8::2"), 5000
				return e
			},
			want: `{"time":"2024-05-06T07:08:09.123456789Z","event":"connect_error","pid":77,"comm":"python3","ppid":0,"leader_comm":"","exe_dev":"","exe_inode":0,"netns":4026531840,"cgroup_id":0,"family":"ipv6","saddr":"2001:db8::2","sport":5000,"daddr":"2001:db8::1","dport":8080,"errno":"EADDRNOTAVAIL","tid":78}`,
		},
		{
			name: "bind_error keeps 0.0.0.0",
			e:    bindErrorEvent,
			want: `{"time":"2024-05-06T07:08:09.123456789Z","event":"bind_error","pid":99,"comm":"java","ppid":0,"leader_comm":"","exe_dev":"","exe_inode":0,"netns":4026531840,"cgroup_id":0,"family":"ipv4","saddr":"0.0.0.0","sport":0,"daddr":"","dport":0,"errno":"EADDRINUSE","tid":100}`,
		},
		{
			name: "unexpected errno",
			e: func() Event {
				e := bindErrorEvent()
				e.Errno = syscall.Errno(4000)
				return e
			},
			want: `{"time":"2024-05-06T07:08:09.123456789Z","event":"bind_error","pid":99,"comm":"java","ppid":0,"leader_comm":"","exe_dev":"","exe_inode":0,"netns":4026531840,"cgroup_id":0,"family":"ipv4","saddr":"0.0.0.0","sport":0,"daddr":"","dport":0,"errno":"4000","tid":100}`,
		},
		{
			name: "timewait confirmed, FIN_WAIT2 substate",
			e: func() Event {
				e := timewaitEvent()
				e.Confirmed, e.Substate = true, SubstateFinWait2
				return e
			},
			want: `{"time":"2024-05-06T07:08:09.123456789Z","event":"timewait","pid":4321,"comm":"nginx","ppid":4000,"leader_comm":"nginx","exe_dev":"259:1","exe_inode":131077,"netns":4026531840,"cgroup_id":1234567890123,"family":"ipv4","saddr":"10.0.0.1","sport":41234,"daddr":"10.0.0.2","dport":443,"role":"client","opener_pid":1234,"opener_comm":"curl","lifetime_ms":12.346,"bytes_sent":100,"bytes_received":2000,"substate":"FIN_WAIT2","confirmed":true}`,
		},
		{
			name: "timewait_overflow",
			e: func() Event {
				e := timewaitEvent()
				e.Kind, e.Substate = KindOverflow, SubstateTimeWait
				return e
			},
			want: `{"time":"2024-05-06T07:08:09.123456789Z","event":"timewait_overflow","pid":4321,"comm":"nginx","ppid":4000,"leader_comm":"nginx","exe_dev":"259:1","exe_inode":131077,"netns":4026531840,"cgroup_id":1234567890123,"family":"ipv4","saddr":"10.0.0.1","sport":41234,"daddr":"10.0.0.2","dport":443,"role":"client","opener_pid":1234,"opener_comm":"curl","lifetime_ms":12.346,"bytes_sent":100,"bytes_received":2000,"substate":"TIME_WAIT"}`,
		},
		{
			name: "timewait_end",
			e: func() Event {
				e := timewaitEvent()
				e.Kind, e.Reason, e.Substate, e.Confirmed = KindTimewaitEnd, ReasonRST, SubstateTimeWait, true
				e.Lifetime = 60 * time.Second
				return e
			},
			want: `{"time":"2024-05-06T07:08:09.123456789Z","event":"timewait_end","pid":4321,"comm":"nginx","ppid":4000,"leader_comm":"nginx","exe_dev":"259:1","exe_inode":131077,"netns":4026531840,"cgroup_id":1234567890123,"family":"ipv4","saddr":"10.0.0.1","sport":41234,"daddr":"10.0.0.2","dport":443,"role":"client","opener_pid":1234,"opener_comm":"curl","reason":"rst","lifetime_ms":60000.000,"substate":"TIME_WAIT","confirmed":true}`,
		},
		{
			name: "timewait_reuse",
			e: func() Event {
				e := timewaitEvent()
				e.Kind, e.Substate, e.Confirmed = KindReuse, SubstateTimeWait, true
				e.PID, e.TID, e.Comm = 555, 556, comm("client")
				e.Lifetime = 1500 * time.Millisecond
				return e
			},
			want: `{"time":"2024-05-06T07:08:09.123456789Z","event":"timewait_reuse","pid":555,"comm":"client","ppid":4000,"leader_comm":"nginx","exe_dev":"259:1","exe_inode":131077,"netns":4026531840,"cgroup_id":1234567890123,"family":"ipv4","saddr":"10.0.0.1","sport":41234,"daddr":"10.0.0.2","dport":443,"tid":556,"previous_pid":1234,"previous_comm":"curl","age_ms":1500.000,"substate":"TIME_WAIT","confirmed":true}`,
		},
		{
			name: "connect_error other errno, confirmed",
			e: func() Event {
				e := connectErrorEvent()
				e.Errno, e.Confirmed = syscall.ENETUNREACH, true
				return e
			},
			want: `{"time":"2024-05-06T07:08:09.123456789Z","event":"connect_error","pid":77,"comm":"python3","ppid":0,"leader_comm":"","exe_dev":"","exe_inode":0,"netns":4026531840,"cgroup_id":0,"family":"ipv6","saddr":"","sport":0,"daddr":"2001:db8::1","dport":8080,"errno":"ENETUNREACH","tid":78,"confirmed":true}`,
		},
		{
			name: "unknown kind has only the common fields",
			e:    func() Event { return Event{Time: testTime, Kind: 9} },
			want: `{"time":"2024-05-06T07:08:09.123456789Z","event":"unknown","pid":0,"comm":"","ppid":0,"leader_comm":"","exe_dev":"","exe_inode":0,"netns":0,"cgroup_id":0,"family":"ipv4","saddr":"","sport":0,"daddr":"","dport":0}`,
		},
		{
			name: "zone is escaped",
			e: func() Event {
				e := bindErrorEvent()
				e.IPv6, e.Saddr = true, netip.MustParseAddr("fe80::1").WithZone("a\"b\x1b")
				return e
			},
			want: `{"time":"2024-05-06T07:08:09.123456789Z","event":"bind_error","pid":99,"comm":"java","ppid":0,"leader_comm":"","exe_dev":"","exe_inode":0,"netns":4026531840,"cgroup_id":0,"family":"ipv6","saddr":"fe80::1%a\"b\u001b","sport":0,"daddr":"","dport":0,"errno":"EADDRINUSE","tid":100}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.e()
			got := string(AppendJSON([]byte("prefix "), &e))
			if want := "prefix " + tt.want + "\n"; got != want {
				t.Errorf("AppendJSON:\n got %s\nwant %s", got, want)
			}
			if !json.Valid([]byte(strings.TrimPrefix(got, "prefix "))) {
				t.Errorf("not valid JSON: %s", got)
			}
		})
	}
}

func TestAppendJSONCommEscaping(t *testing.T) {
	tests := []struct {
		comm string
		want string // the JSON text of the "comm" value
		dec  string // what a JSON decoder reads back
	}{
		{"plain", `"plain"`, "plain"},
		{"\x1b[31mevil\n", `"\u001b[31mevil\n"`, "\x1b[31mevil\n"},
		{`a"b\c`, `"a\"b\\c"`, `a"b\c`},
		{"t\tr\rb\bf\f", `"t\tr\rb\u0008f\u000c"`, "t\tr\rb\bf\f"},
		{"del\x7f", `"del\u007f"`, "del\x7f"},
		{"bad\xff\xfeutf8", `"bad\ufffd\ufffdutf8"`, "bad\ufffd\ufffdutf8"},
		{"cut\xe2\x82", `"cut\ufffd\ufffd"`, "cut\ufffd\ufffd"},
		{"csi\u009b2J", `"csi\u009b2J"`, "csi\u009b2J"},
		{"ls\u2028ps\u2029", `"ls\u2028ps\u2029"`, "ls\u2028ps\u2029"},
		{"héllo→世", `"héllo→世"`, "héllo→世"},
		{"", `""`, ""},
		{"exactly15bytes!", `"exactly15bytes!"`, "exactly15bytes!"},
		{"sixteen-bytes-xx", `"sixteen-bytes-xx"`, "sixteen-bytes-xx"}, // no NUL at all
		{"nul\x00hidden", `"nul"`, "nul"},
	}
	for _, tt := range tests {
		e := timewaitEvent()
		e.Comm = comm(tt.comm)
		e.OpenerComm = comm(tt.comm)
		out := AppendJSON(nil, &e)
		if !json.Valid(out) {
			t.Errorf("comm %q: invalid JSON %s", tt.comm, out)
			continue
		}
		if want := `"comm":` + tt.want + `,`; !bytes.Contains(out, []byte(want)) {
			t.Errorf("comm %q: output lacks %s:\n%s", tt.comm, want, out)
		}
		if want := `"opener_comm":` + tt.want + `,`; !bytes.Contains(out, []byte(want)) {
			t.Errorf("comm %q: output lacks %s:\n%s", tt.comm, want, out)
		}
		var v struct{ Comm, OpenerComm string }
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatal(err)
		}
		if v.Comm != tt.dec {
			t.Errorf("comm %q: decoded %q, want %q", tt.comm, v.Comm, tt.dec)
		}
	}
}

// TestAppendJSONDecodes checks the output against a real JSON decoder, so a
// field name typo or a number in quotes cannot hide behind the golden
// strings above.
func TestAppendJSONDecodes(t *testing.T) {
	e := timewaitEvent()
	e.IPv6 = true
	e.Saddr = netip.MustParseAddr("2001:db8::a")
	e.Daddr = netip.MustParseAddr("2001:db8::b")
	e.CgroupID = 1<<63 + 5
	var got struct {
		Time          time.Time `json:"time"`
		Event         string    `json:"event"`
		PID           uint32    `json:"pid"`
		Comm          string    `json:"comm"`
		PPID          uint32    `json:"ppid"`
		LeaderComm    string    `json:"leader_comm"`
		ExeDev        string    `json:"exe_dev"`
		ExeInode      uint64    `json:"exe_inode"`
		Netns         uint32    `json:"netns"`
		CgroupID      uint64    `json:"cgroup_id"`
		Family        string    `json:"family"`
		Saddr         string    `json:"saddr"`
		Sport         uint16    `json:"sport"`
		Daddr         string    `json:"daddr"`
		Dport         uint16    `json:"dport"`
		Role          string    `json:"role"`
		OpenerPID     uint32    `json:"opener_pid"`
		OpenerComm    string    `json:"opener_comm"`
		LifetimeMS    float64   `json:"lifetime_ms"`
		BytesSent     uint64    `json:"bytes_sent"`
		BytesReceived uint64    `json:"bytes_received"`
	}
	dec := json.NewDecoder(bytes.NewReader(AppendJSON(nil, &e)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	if !got.Time.Equal(e.Time) {
		t.Errorf("time = %v, want %v", got.Time, e.Time)
	}
	checks := []struct {
		field     string
		got, want any
	}{
		{"event", got.Event, "timewait"},
		{"pid", got.PID, e.PID},
		{"comm", got.Comm, "nginx"},
		{"ppid", got.PPID, uint32(4000)},
		{"leader_comm", got.LeaderComm, "nginx"},
		{"exe_dev", got.ExeDev, "259:1"},
		{"exe_inode", got.ExeInode, uint64(131077)},
		{"netns", got.Netns, e.Netns},
		{"cgroup_id", got.CgroupID, e.CgroupID},
		{"family", got.Family, "ipv6"},
		{"saddr", got.Saddr, "2001:db8::a"},
		{"sport", got.Sport, e.Sport},
		{"daddr", got.Daddr, "2001:db8::b"},
		{"dport", got.Dport, e.Dport},
		{"role", got.Role, "client"},
		{"opener_pid", got.OpenerPID, e.OpenerPID},
		{"opener_comm", got.OpenerComm, "curl"},
		{"lifetime_ms", got.LifetimeMS, 12.346},
		{"bytes_sent", got.BytesSent, e.BytesSent},
		{"bytes_received", got.BytesReceived, e.BytesRecv},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.field, c.got, c.want)
		}
	}

	ce := connectErrorEvent()
	var errs struct {
		Errno string `json:"errno"`
		TID   uint32 `json:"tid"`
		Saddr string `json:"saddr"`
	}
	if err := json.Unmarshal(AppendJSON(nil, &ce), &errs); err != nil {
		t.Fatal(err)
	}
	if errs.Errno != "EADDRNOTAVAIL" || errs.TID != 78 || errs.Saddr != "" {
		t.Errorf("connect_error decoded as %+v", errs)
	}
}

func TestErrnoName(t *testing.T) {
	for errno, want := range map[syscall.Errno]string{
		syscall.EADDRNOTAVAIL: "EADDRNOTAVAIL",
		syscall.EADDRINUSE:    "EADDRINUSE",
		0:                     "0",
		syscall.ENETUNREACH:   "ENETUNREACH",
		4000:                  "4000", // no such errno
	} {
		if got := ErrnoName(errno); got != want {
			t.Errorf("ErrnoName(%d) = %q, want %q", errno, got, want)
		}
		if got := string(appendErrno(nil, errno)); got != want {
			t.Errorf("appendErrno(%d) = %q, want %q", errno, got, want)
		}
	}
}

func TestAppendJSONAllocs(t *testing.T) {
	tw, ce, be := timewaitEvent(), connectErrorEvent(), bindErrorEvent()
	tw.Comm = comm("\x1b[31mevil\n\xff")
	tw.Lifetime = 1<<63 - 1 // the slowest float to format
	be.Errno = 110
	buf := make([]byte, 0, 1024)
	for _, e := range []*Event{&tw, &ce, &be} {
		if n := testing.AllocsPerRun(100, func() { buf = AppendJSON(buf[:0], e) }); n != 0 {
			t.Errorf("%v: AppendJSON made %v allocations, want 0", e.Kind, n)
		}
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	e := timewaitEvent()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendJSON(buf[:0], &e)
	}
	b.SetBytes(int64(len(buf)))
}

func FuzzAppendJSON(f *testing.F) {
	f.Add([]byte("curl"), []byte("nginx"), []byte("bash"), []byte{10, 0, 0, 1}, []byte{10, 0, 0, 2}, uint16(1), uint16(2), uint8(1), int64(5), "")
	f.Add([]byte("\x1b[31mevil\n"), []byte("\xff\xfe\"\\"), []byte("\x07\xc3"), make([]byte, 16), []byte{}, uint16(0), uint16(65535), uint8(2), int64(-1), "")
	f.Add([]byte("csi\u009b\u2028"), []byte{}, []byte{}, []byte("\xfe\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"), make([]byte, 16), uint16(7), uint16(8), uint8(3), int64(0), "eth0\"\x00")
	f.Fuzz(func(t *testing.T, c, oc, lc, saddr, daddr []byte, sport, dport uint16, kind uint8, lifetime int64, zone string) {
		e := Event{
			Time:     time.Unix(0, lifetime).AddDate(int(int16(sport))*200, 0, 0), // years beyond 0-9999 too
			Kind:     Kind(kind),
			Sport:    sport,
			Dport:    dport,
			Lifetime: time.Duration(lifetime),
			Errno:    syscall.Errno(lifetime),
			IPv6:     len(saddr) == 16,
		}
		copy(e.Comm[:], c)
		copy(e.OpenerComm[:], oc)
		copy(e.Proc.Comm[:], lc)
		e.Proc.PPID, e.Proc.ExeDev, e.Proc.ExeIno = uint32(lifetime), uint32(lifetime>>32), uint64(lifetime)
		if a, ok := netip.AddrFromSlice(saddr); ok {
			e.Saddr = a
			if a.Is6() && zone != "" {
				e.Saddr = a.WithZone(zone)
			}
		}
		e.Daddr, _ = netip.AddrFromSlice(daddr)

		out := AppendJSON(nil, &e)
		if !json.Valid(out) {
			t.Fatalf("invalid JSON: %q", out)
		}
		if out[len(out)-1] != '\n' || bytes.Count(out, []byte{'\n'}) != 1 {
			t.Fatalf("not exactly one line: %q", out)
		}
		var v struct {
			Comm       string `json:"comm"`
			OpenerComm string `json:"opener_comm"`
			LeaderComm string `json:"leader_comm"`
			ExeDev     string `json:"exe_dev"`
			ExeInode   uint64 `json:"exe_inode"`
		}
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatal(err)
		}
		for _, p := range []struct {
			raw *[16]byte
			got string
		}{{&e.Comm, v.Comm}, {&e.OpenerComm, v.OpenerComm}, {&e.Proc.Comm, v.LeaderComm}} {
			if e.Kind != KindTimewait && p.raw == &e.OpenerComm {
				continue
			}
			s := CommString(p.raw)
			if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 }) && p.got != s {
				t.Errorf("comm %q read back as %q", s, p.got)
			}
			// Whatever the bytes, a decoder must read what encoding/json
			// itself would have written.
			ref, _ := json.Marshal(s)
			var want string
			if err := json.Unmarshal(ref, &want); err != nil {
				t.Fatal(err)
			}
			if p.got != want {
				t.Errorf("comm %q read back as %q, encoding/json gives %q", s, p.got, want)
			}
		}
		if v.ExeDev != e.Proc.ExeDevString() || v.ExeInode != e.Proc.ExeIno {
			t.Errorf("exe %q %d read back as %q %d", e.Proc.ExeDevString(), e.Proc.ExeIno, v.ExeDev, v.ExeInode)
		}
	})
}

func FuzzDecode(f *testing.F) {
	rec := sampleRecord()
	le := binary.LittleEndian
	f.Add(rec)
	v6 := bytes.Clone(rec)
	le.PutUint16(v6[60:], afInet6)
	v6[66] = byte(KindConnectError)
	copy(v6[84:], netip.MustParseAddr("::ffff:10.0.0.2").AsSlice())
	copy(v6[100:], "\x1b]0;pwned\x07\xff")
	copy(v6[160:], "\x1b[2J\"\\\xfe")
	le.PutUint32(v6[148:], 0xffffffff)
	f.Add(v6)
	f.Add(rec[:RecordSize-1])
	f.Fuzz(func(t *testing.T, raw []byte) {
		var e Event
		if err := Decode(raw, Clock{}, &e); err != nil {
			return
		}
		if out := AppendJSON(nil, &e); !json.Valid(out) {
			t.Fatalf("invalid JSON for %x: %q", raw, out)
		}
		var buf bytes.Buffer
		if err := NewTableWriter(&buf).Write(&e); err != nil {
			t.Fatal(err)
		}
		line := buf.Bytes()
		if i := bytes.IndexFunc(line[:len(line)-1], isTerminalControl); i >= 0 {
			t.Fatalf("table line has control character at %d: %q", i, line)
		}
	})
}

// A recovered timewait entry says so; others carry no such field.
func TestAppendJSONRecovered(t *testing.T) {
	var e Event
	if err := Decode(sampleRecord(), Clock{}, &e); err != nil {
		t.Fatal(err)
	}
	if e.Recovered || strings.Contains(string(AppendJSON(nil, &e)), "recovered") {
		t.Fatalf("plain entry: Recovered=%v, %s", e.Recovered, AppendJSON(nil, &e))
	}
	raw := sampleRecord()
	raw[132] = 1
	if err := Decode(raw, Clock{}, &e); err != nil {
		t.Fatal(err)
	}
	line := string(AppendJSON(nil, &e))
	if !e.Recovered || !strings.HasSuffix(line, `,"recovered":true}`+"\n") {
		t.Fatalf("recovered entry: Recovered=%v, %s", e.Recovered, line)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil || m["recovered"] != true {
		t.Fatalf("%s: %v %v", line, m["recovered"], err)
	}
}
