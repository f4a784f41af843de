package event

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// isTerminalControl reports runes a terminal may act on instead of showing:
// C0 (ESC among them), DEL and C1, plus U+FFFD as the mark of invalid UTF-8.
func isTerminalControl(r rune) bool {
	return r < 0x20 || (r >= 0x7f && r <= 0x9f) || r == utf8.RuneError
}

func TestEscapeComm(t *testing.T) {
	tests := []struct{ in, want string }{
		{"curl", "curl"},
		{"", ""},
		{"\x1b[31mevil\n", `\x1b[31mevil\x0a`},
		{`back\slash`, `back\\slash`},
		{"tab\there", `tab\x09here`},
		{"del\x7f", `del\x7f`},
		{"bad\xff\xfe", `bad\xff\xfe`},
		{"cut\xe2\x82", `cut\xe2\x82`},
		{"csi\u009b2J", `csi\xc2\x9b2J`},
		{"rtl\u202eexe", `rtl\xe2\x80\xaeexe`},
		{"nbsp\u00a0", `nbsp\xc2\xa0`},
		{"héllo→世", "héllo→世"},
		{"sixteen-bytes-xx", "sixteen-bytes-xx"},
		{"nul\x00hidden", "nul"},
	}
	for _, tt := range tests {
		c := comm(tt.in)
		if got := EscapeComm(&c); got != tt.want {
			t.Errorf("EscapeComm(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func newTestTable(buf *bytes.Buffer) *TableWriter {
	tw := NewTableWriter(buf)
	tw.loc = time.FixedZone("test", 2*3600)
	return tw
}

func TestTableWriter(t *testing.T) {
	const header = "TIME         EVENT             PID     COMM            NETNS      SOURCE                DESTINATION           DETAIL\n"
	tests := []struct {
		name string
		e    func() Event
		want string
	}{
		{
			name: "timewait",
			e:    timewaitEvent,
			want: "09:08:09.123 timewait          4321    nginx           4026531840 10.0.0.1:41234        10.0.0.2:443          role=client opener=1234/curl life=12.3ms tx=100 rx=2000\n",
		},
		{
			name: "timewait_end, FIN_WAIT2",
			e: func() Event {
				e := timewaitEvent()
				e.Kind, e.Reason, e.Substate, e.Lifetime = KindTimewaitEnd, ReasonExpired, SubstateFinWait2, 1020*time.Millisecond
				return e
			},
			want: "09:08:09.123 timewait_end      4321    nginx           4026531840 10.0.0.1:41234        10.0.0.2:443          role=client opener=1234/curl reason=expired life=1.02s substate=FIN_WAIT2\n",
		},
		{
			name: "timewait_overflow",
			e: func() Event {
				e := timewaitEvent()
				e.Kind, e.Substate = KindOverflow, SubstateTimeWait
				return e
			},
			want: "09:08:09.123 timewait_overflow 4321    nginx           4026531840 10.0.0.1:41234        10.0.0.2:443          role=client opener=1234/curl life=12.3ms tx=100 rx=2000\n",
		},
		{
			name: "timewait_reuse",
			e: func() Event {
				e := timewaitEvent()
				e.Kind, e.PID, e.Comm, e.Lifetime = KindReuse, 555, comm("client"), 1500*time.Millisecond
				return e
			},
			want: "09:08:09.123 timewait_reuse    555     client          4026531840 10.0.0.1:41234        10.0.0.2:443          previous=1234/curl age=1.50s\n",
		},
		{
			name: "timewait unknown opener and lifetime",
			e: func() Event {
				e := timewaitEvent()
				e.Role, e.OpenerPID, e.OpenerComm, e.Lifetime = RoleUnknown, 0, [16]byte{}, 0
				return e
			},
			want: "09:08:09.123 timewait          4321    nginx           4026531840 10.0.0.1:41234        10.0.0.2:443          role=unknown opener=? life=? tx=100 rx=2000\n",
		},
		{
			name: "timewait ipv6, long life, hostile comms",
			e: func() Event {
				e := timewaitEvent()
				e.IPv6 = true
				e.Saddr = netip.MustParseAddr("2001:db8::1")
				e.Daddr = netip.MustParseAddr("2001:db8::2")
				e.Role = RoleServer
				e.Comm = comm("\x1b[2J\x1b]0;x\x07")
				e.OpenerComm = comm("a b\\\n")
				e.Lifetime = time.Hour + 2*time.Minute + 3500*time.Millisecond
				return e
			},
			want: `09:08:09.123 timewait          4321    \x1b[2J\x1b]0;x\x07 4026531840 [2001:db8::1]:41234   [2001:db8::2]:443     role=server opener=1234/a b\\\x0a life=1h2m4s tx=100 rx=2000` + "\n",
		},
		{
			name: "connect_error unbound",
			e:    connectErrorEvent,
			want: "09:08:09.123 connect_error     77      python3         4026531840 -                     [2001:db8::1]:8080    EADDRNOTAVAIL\n",
		},
		{
			name: "connect_error bound to a port only",
			e: func() Event {
				e := connectErrorEvent()
				e.IPv6, e.Saddr, e.Sport = false, netip.IPv4Unspecified(), 5000
				e.Daddr = netip.MustParseAddr("192.0.2.1")
				return e
			},
			want: "09:08:09.123 connect_error     77      python3         4026531840 *:5000                192.0.2.1:8080        EADDRNOTAVAIL\n",
		},
		{
			name: "bind_error",
			e:    bindErrorEvent,
			want: "09:08:09.123 bind_error        99      java            4026531840 0.0.0.0:0             -                     EADDRINUSE\n",
		},
		{
			name: "unknown kind leaves no trailing blanks",
			e:    func() Event { return Event{Time: testTime, Kind: 9} },
			want: "09:08:09.123 unknown           0                       0          -                     -\n",
		},
		{
			name: "hostile zone",
			e: func() Event {
				e := bindErrorEvent()
				e.IPv6, e.Saddr = true, netip.MustParseAddr("fe80::1").WithZone("\x1b[1m")
				return e
			},
			want: `09:08:09.123 bind_error        99      java            4026531840 [fe80::1%\x1b[1m]:0   -                     EADDRINUSE` + "\n",
		},
	}
	var buf bytes.Buffer
	tw := newTestTable(&buf)
	if err := tw.WriteHeader(); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != header {
		t.Errorf("header:\n got %q\nwant %q", got, header)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf.Reset()
			e := tt.e()
			if err := tw.Write(&e); err != nil {
				t.Fatal(err)
			}
			if got := buf.String(); got != tt.want {
				t.Errorf("Write:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestTableColumnsAlign(t *testing.T) {
	var buf bytes.Buffer
	tw := newTestTable(&buf)
	_ = tw.WriteHeader()
	for _, e := range []Event{timewaitEvent(), bindErrorEvent()} {
		_ = tw.Write(&e)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	for _, col := range []string{"EVENT", "PID", "COMM", "NETNS", "SOURCE", "DESTINATION", "DETAIL"} {
		at := strings.Index(lines[0], col)
		for _, l := range lines[1:] {
			if l[at-1] != ' ' || l[at] == ' ' {
				t.Errorf("column %s does not start at %d in %q", col, at, l)
			}
		}
	}
}

func TestLifetime(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{time.Nanosecond, "0.0ms"},
		{850 * time.Microsecond, "0.8ms"},
		{12345 * time.Microsecond, "12.3ms"},
		{999 * time.Millisecond, "999.0ms"},
		{time.Second, "1.00s"},
		{59990 * time.Millisecond, "59.99s"},
		{time.Minute, "1m0s"},
		{61500 * time.Millisecond, "1m2s"},
		{25*time.Hour + 59*time.Second, "25h0m59s"},
	}
	for _, tt := range tests {
		if got := string(appendLifetime(nil, tt.d)); got != tt.want {
			t.Errorf("appendLifetime(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

// lineWriter records each Write separately.
type lineWriter struct{ writes []string }

func (w *lineWriter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func TestTableOneWritePerLine(t *testing.T) {
	var w lineWriter
	tw := NewTableWriter(&w)
	_ = tw.WriteHeader()
	for _, e := range []Event{timewaitEvent(), connectErrorEvent(), bindErrorEvent()} {
		_ = tw.Write(&e)
	}
	if len(w.writes) != 4 {
		t.Fatalf("%d writes for 4 lines", len(w.writes))
	}
	for _, s := range w.writes {
		if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
			t.Errorf("write is not one whole line: %q", s)
		}
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestTableWriteError(t *testing.T) {
	tw := NewTableWriter(failWriter{})
	e := timewaitEvent()
	if err := tw.WriteHeader(); err == nil {
		t.Error("WriteHeader: no error from a failing writer")
	}
	if err := tw.Write(&e); err == nil {
		t.Error("Write: no error from a failing writer")
	}
}

func FuzzEscapeComm(f *testing.F) {
	for _, s := range []string{"curl", "\x1b[31mevil\n", "\xff\xfe", "a\\b", "\u009b\u202e", "世界"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var c [16]byte
		copy(c[:], raw)
		got := EscapeComm(&c)
		if !utf8.ValidString(got) {
			t.Fatalf("EscapeComm(%q) = %q: invalid UTF-8", raw, got)
		}
		if i := strings.IndexFunc(got, isTerminalControl); i >= 0 {
			t.Fatalf("EscapeComm(%q) = %q: control character at %d", raw, got, i)
		}
		if back := unescape(t, got); back != CommString(&c) {
			t.Fatalf("EscapeComm(%q) = %q reads back as %q", raw, got, back)
		}
	})
}

// unescape inverts EscapeComm, to show that escaping loses nothing.
func unescape(t *testing.T, s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case i+1 < len(s) && s[i+1] == '\\':
			b.WriteByte('\\')
			i++
		case i+3 < len(s) && s[i+1] == 'x':
			n, err := strconv.ParseUint(s[i+2:i+4], 16, 8)
			if err != nil {
				t.Fatalf("bad escape in %q", s)
			}
			b.WriteByte(byte(n))
			i += 3
		default:
			t.Fatalf("dangling backslash in %q", s)
		}
	}
	return b.String()
}

func TestTableWriteAllocs(t *testing.T) {
	tw := NewTableWriter(io.Discard)
	for _, e := range []Event{timewaitEvent(), connectErrorEvent(), bindErrorEvent()} {
		if n := testing.AllocsPerRun(100, func() { _ = tw.Write(&e) }); n != 0 {
			t.Errorf("%v: Write made %v allocations, want 0", e.Kind, n)
		}
	}
}

// What owns the process ends DETAIL.
func TestTableWriteOwned(t *testing.T) {
	var buf bytes.Buffer
	tw := newTestTable(&buf)
	e := timewaitEvent()
	if err := tw.WriteOwned(&e, "payments/checkout-7d9f/api"); err != nil {
		t.Fatal(err)
	}
	const want = "09:08:09.123 timewait          4321    nginx           4026531840 10.0.0.1:41234        10.0.0.2:443          role=client opener=1234/curl life=12.3ms tx=100 rx=2000 in payments/checkout-7d9f/api\n"
	if got := buf.String(); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}
