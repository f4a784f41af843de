package filter

import (
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/twtrace/twtrace/pkg/event"
)

func comm(s string) (c [16]byte) {
	copy(c[:], s)
	return c
}

// Three events that differ in every field a filter looks at.
var (
	timewait = event.Event{
		Kind:       event.KindTimewait,
		PID:        100,
		Comm:       comm("nginx"),
		Netns:      4026531840,
		Saddr:      netip.MustParseAddr("10.0.0.1"),
		Sport:      40000,
		Daddr:      netip.MustParseAddr("10.1.2.3"),
		Dport:      8080,
		Role:       event.RoleServer,
		OpenerPID:  200,
		OpenerComm: comm("envoy"),
	}
	connectError = event.Event{
		Kind:  event.KindConnectError,
		PID:   300,
		Comm:  comm("curl"),
		Netns: 4026532000,
		IPv6:  true,
		Saddr: netip.IPv6Unspecified(),
		Daddr: netip.MustParseAddr("2001:db8::5"),
		Dport: 443,
		Errno: syscall.EADDRNOTAVAIL,
	}
	bindError = event.Event{
		Kind:  event.KindBindError,
		PID:   400,
		Comm:  comm("java"),
		Netns: 4026531840,
		Saddr: netip.IPv4Unspecified(),
		Errno: syscall.EADDRINUSE,
	}
)

func TestMatch(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		// whether timewait, connectError, bindError match
		tw, ce, be bool
	}{
		{"no options", Options{}, true, true, true},
		{"events one", Options{Events: "timewait"}, true, false, false},
		{"events two, spaced", Options{Events: " connect_error , bind_error "}, false, true, true},
		{"pid", Options{PIDs: []string{"300"}}, false, true, false},
		{"pid is the opener", Options{PIDs: []string{"200"}}, true, false, false},
		{"pid any of", Options{PIDs: []string{"100", "400"}}, true, false, true},
		{"pid none", Options{PIDs: []string{"1"}}, false, false, false},
		{"comm", Options{Comms: []string{"curl"}}, false, true, false},
		{"comm is the opener", Options{Comms: []string{"envoy"}}, true, false, false},
		{"comm is exact", Options{Comms: []string{"ngin"}}, false, false, false},
		{"comm any of", Options{Comms: []string{"nginx", "java"}}, true, false, true},
		{"daddr ip", Options{Daddrs: []string{"10.1.2.3"}}, true, false, false},
		{"daddr ip is exact", Options{Daddrs: []string{"10.1.2.4"}}, false, false, false},
		{"daddr cidr", Options{Daddrs: []string{"10.0.0.0/8"}}, true, false, false},
		{"daddr unmasked cidr", Options{Daddrs: []string{"10.1.2.200/24"}}, true, false, false},
		{"daddr v4-mapped ip", Options{Daddrs: []string{"::ffff:10.1.2.3"}}, true, false, false},
		{"daddr v4-mapped cidr", Options{Daddrs: []string{"::ffff:10.0.0.0/104"}}, true, false, false},
		{"daddr ipv6 cidr", Options{Daddrs: []string{"2001:db8::/32"}}, false, true, false},
		{"daddr any of", Options{Daddrs: []string{"2001:db8::5", "10.1.2.3"}}, true, true, false},
		{"daddr all", Options{Daddrs: []string{"0.0.0.0/0", "::/0"}}, true, true, false},
		{"dport", Options{Dports: []string{"443"}}, false, true, false},
		{"dport range", Options{Dports: []string{"8000-8100"}}, true, false, false},
		{"dport range edges", Options{Dports: []string{"8080-8080", "1-443"}}, true, true, false},
		{"dport outside range", Options{Dports: []string{"8081-9000"}}, false, false, false},
		{"ipv4", Options{IPv4Only: true}, true, false, true},
		{"ipv6", Options{IPv6Only: true}, false, true, false},
		{"netns", Options{Netns: []string{"4026531840"}}, true, false, true},
		{"netns as readlink prints it", Options{Netns: []string{"net:[4026532000]"}}, false, true, false},
		{"and across flags", Options{PIDs: []string{"100", "300"}, Dports: []string{"443"}}, false, true, false},
		{"and with events", Options{Events: "bind_error", Comms: []string{"nginx"}}, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse(tt.o)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				e    *event.Event
				want bool
			}{{&timewait, tt.tw}, {&connectError, tt.ce}, {&bindError, tt.be}} {
				if got := f.Match(c.e); got != c.want {
					t.Errorf("Match(%v) = %v, want %v", c.e.Kind, got, c.want)
				}
			}
		})
	}
}

func TestMatchOpenerOnlyForTimewait(t *testing.T) {
	// Only a timewait has an opener: stray opener fields on other kinds
	// must not make them match.
	e := connectError
	e.OpenerPID, e.OpenerComm = 200, comm("envoy")
	for _, o := range []Options{{PIDs: []string{"200"}}, {Comms: []string{"envoy"}}} {
		f, err := Parse(o)
		if err != nil {
			t.Fatal(err)
		}
		if f.Match(&e) {
			t.Errorf("%+v matched a connect_error by its opener fields", o)
		}
	}
}

func TestMatchCommIgnoresBytesAfterNUL(t *testing.T) {
	f, err := Parse(Options{Comms: []string{"curl"}})
	if err != nil {
		t.Fatal(err)
	}
	e := connectError
	e.Comm = comm("curl\x00junk")
	if !f.Match(&e) {
		t.Error(`"curl\x00junk" did not match --comm curl`)
	}
	e.Comm = comm("sixteen-bytes-xx")
	if f.Match(&e) {
		t.Error("a comm without NUL matched --comm curl")
	}
}

func TestNilAndZeroFilter(t *testing.T) {
	var nilFilter *Filter
	for _, f := range []*Filter{nilFilter, {}} {
		if !f.Match(&timewait) || !f.Match(&bindError) {
			t.Errorf("%#v does not match everything", f)
		}
		if got := f.KindMask(); got != 0b1100110 {
			t.Errorf("%#v: KindMask() = %#b, want 0b1100110 (bind_error and timewait_end only on request)", f, got)
		}
	}
}

func TestKindMask(t *testing.T) {
	tests := []struct {
		events string
		want   uint32
	}{
		{"", 1<<1 | 1<<2 | 1<<5 | 1<<6},
		{"all", 0b1111110},
		{"timewait,all", 0b1111110},
		{"timewait_end", 1 << 4},
		{"timewait_overflow,timewait_reuse", 1<<5 | 1<<6},
		{"timewait", 1 << 1},
		{"connect_error", 1 << 2},
		{"bind_error", 1 << 3},
		{"bind_error,timewait", 1<<1 | 1<<3},
		{"timewait,timewait", 1 << 1},
		{"timewait,connect_error,bind_error", 1<<1 | 1<<2 | 1<<3},
	}
	for _, tt := range tests {
		f, err := Parse(Options{Events: tt.events})
		if err != nil {
			t.Fatal(err)
		}
		if got := f.KindMask(); got != tt.want {
			t.Errorf("Events %q: KindMask() = %#b, want %#b", tt.events, got, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		o    Options
		want string
	}{
		{Options{IPv4Only: true, IPv6Only: true}, `invalid --ipv6: cannot be combined with --ipv4`},
		{Options{Events: "timewait,close"}, `invalid --events "timewait,close": unknown event "close" (valid: timewait, connect_error, bind_error, timewait_end, timewait_overflow, timewait_reuse, all)`},
		{Options{Events: "timewait,"}, `invalid --events "timewait,": unknown event "" (valid: timewait, connect_error, bind_error, timewait_end, timewait_overflow, timewait_reuse, all)`},
		{Options{Events: "TIMEWAIT"}, `invalid --events "TIMEWAIT": unknown event "TIMEWAIT" (valid: timewait, connect_error, bind_error, timewait_end, timewait_overflow, timewait_reuse, all)`},
		{Options{PIDs: []string{"abc"}}, `invalid --pid "abc": not a process ID (a positive integer)`},
		{Options{PIDs: []string{"0"}}, `invalid --pid "0": not a process ID (a positive integer)`},
		{Options{PIDs: []string{"-1"}}, `invalid --pid "-1": not a process ID (a positive integer)`},
		{Options{PIDs: []string{"4294967296"}}, `invalid --pid "4294967296": not a process ID (a positive integer)`},
		{Options{PIDs: []string{"1", ""}}, `invalid --pid "": not a process ID (a positive integer)`},
		{Options{Comms: []string{""}}, `invalid --comm "": empty process name`},
		{Options{Comms: []string{"a\x00b"}}, `invalid --comm "a\x00b": contains a NUL byte`},
		{Options{Comms: []string{"kube-controller-manager"}}, `invalid --comm "kube-controller-manager": longer than the 15 bytes the kernel keeps (try "kube-controller")`},
		{Options{Daddrs: []string{"10.0.0.300"}}, `invalid --daddr "10.0.0.300": not an IP address or CIDR`},
		{Options{Daddrs: []string{"10.0.0.0/33"}}, `invalid --daddr "10.0.0.0/33": not an IP address or CIDR`},
		{Options{Daddrs: []string{"example.com"}}, `invalid --daddr "example.com": not an IP address or CIDR`},
		{Options{Daddrs: []string{""}}, `invalid --daddr "": not an IP address or CIDR`},
		{Options{Daddrs: []string{"fe80::1%eth0"}}, `invalid --daddr "fe80::1%eth0": addresses with a zone are not supported`},
		{Options{Dports: []string{"0"}}, `invalid --dport "0": not a port (1-65535) or port range (low-high)`},
		{Options{Dports: []string{"65536"}}, `invalid --dport "65536": not a port (1-65535) or port range (low-high)`},
		{Options{Dports: []string{"http"}}, `invalid --dport "http": not a port (1-65535) or port range (low-high)`},
		{Options{Dports: []string{"8000-"}}, `invalid --dport "8000-": not a port (1-65535) or port range (low-high)`},
		{Options{Dports: []string{"1-2-3"}}, `invalid --dport "1-2-3": not a port (1-65535) or port range (low-high)`},
		{Options{Dports: []string{"9000-8000"}}, `invalid --dport "9000-8000": range start 9000 is above its end 8000`},
		{Options{Netns: []string{"0"}}, `invalid --netns "0": not a network namespace inode number`},
		{Options{Netns: []string{"net:[abc]"}}, `invalid --netns "net:[abc]": not a network namespace inode number`},
		{Options{Netns: []string{"4294967296"}}, `invalid --netns "4294967296": not a network namespace inode number`},
	}
	for _, tt := range tests {
		f, err := Parse(tt.o)
		if err == nil {
			t.Errorf("Parse(%+v) = %+v, want error %q", tt.o, f, tt.want)
			continue
		}
		if got := err.Error(); got != tt.want {
			t.Errorf("Parse(%+v) error:\n got %s\nwant %s", tt.o, got, tt.want)
		}
		if f != nil {
			t.Errorf("Parse(%+v) returned a filter with its error", tt.o)
		}
	}
}

func TestParseTrimsSpace(t *testing.T) {
	// A shell-quoted list like --dport "80, 443" hands over " 443".
	f, err := Parse(Options{PIDs: []string{" 100"}, Dports: []string{" 8080 "}, Daddrs: []string{" 10.1.2.3"}, Netns: []string{"4026531840 "}})
	if err != nil {
		t.Fatal(err)
	}
	if !f.Match(&timewait) {
		t.Error("did not match")
	}
}

func TestMatchAllocs(t *testing.T) {
	f, err := Parse(Options{
		Events: "timewait,connect_error",
		PIDs:   []string{"1", "100"},
		Comms:  []string{"x", "nginx"},
		Daddrs: []string{"192.0.2.0/24", "10.0.0.0/8"},
		Dports: []string{"1-10", "8080"},
		Netns:  []string{"4026531840"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !f.Match(&timewait) {
		t.Fatal("filter does not match: the allocation test would not cover every check")
	}
	if n := testing.AllocsPerRun(100, func() { f.Match(&timewait) }); n != 0 {
		t.Errorf("Match made %v allocations, want 0", n)
	}
}

func BenchmarkMatch(b *testing.B) {
	f, err := Parse(Options{
		PIDs:   []string{"1", "2", "200"},
		Comms:  []string{"curl", "envoy"},
		Daddrs: []string{"10.0.0.0/8"},
		Dports: []string{"8000-8100"},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !f.Match(&timewait) {
			b.Fatal("no match")
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("100", "curl", "10.0.0.0/8", "8000-8100", "4026531840", "timewait,bind_error", false, false)
	f.Add("0", "", "::ffff:10.0.0.1", "0-0", "net:[1]", ",", true, true)
	f.Add("-1", strings.Repeat("x", 16), "fe80::1%eth0", "65535", "", "connect_error", true, false)
	f.Fuzz(func(t *testing.T, pid, comm, daddr, dport, netns, events string, v4, v6 bool) {
		o := Options{
			PIDs:     strings.Split(pid, ","),
			Comms:    []string{comm},
			Daddrs:   strings.Split(daddr, ","),
			Dports:   strings.Split(dport, ","),
			Netns:    strings.Split(netns, ","),
			Events:   events,
			IPv4Only: v4,
			IPv6Only: v6,
		}
		flt, err := Parse(o)
		if err != nil {
			if flt != nil {
				t.Fatalf("filter and error both returned for %+v", o)
			}
			msg := err.Error()
			if strings.ContainsAny(msg, "\n") || !strings.HasPrefix(msg, "invalid --") {
				t.Fatalf("error is not one line naming a flag: %q", msg)
			}
			return
		}
		if m := flt.KindMask(); m == 0 || m&^0b1110 != 0 {
			t.Fatalf("KindMask() = %#b for %+v", m, o)
		}
		for _, e := range []*event.Event{&timewait, &connectError, &bindError, {Kind: 200}} {
			flt.Match(e)
		}
	})
}

func TestSingleNetns(t *testing.T) {
	for _, c := range []struct {
		netns []string
		want  uint32
	}{
		{nil, 0},
		{[]string{"4026531840"}, 4026531840},
		{[]string{"net:[4026532000]"}, 4026532000},
		{[]string{"4026531840", "4026532000"}, 0},
	} {
		f, err := Parse(Options{Netns: c.netns})
		if err != nil {
			t.Fatal(err)
		}
		if got := f.SingleNetns(); got != c.want {
			t.Errorf("SingleNetns of %v = %d, want %d", c.netns, got, c.want)
		}
	}
}
