package inventory

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParsePortRange(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want PortSpan
		ok   bool
	}{
		{"32768\t60999\n", PortSpan{32768, 60999}, true},
		{"40000 40000", PortSpan{40000, 40000}, true},
		{"1\t65535\n", PortSpan{1, 65535}, true},
		{"60999\t32768\n", PortSpan{}, false},
		{"32768\n", PortSpan{}, false},
		{"1 2 3", PortSpan{}, false},
		{"1 65536", PortSpan{}, false},
		{"+1 2", PortSpan{}, false},
		{"0x10 20", PortSpan{}, false},
		{"", PortSpan{}, false},
	} {
		got, err := ParsePortRange(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParsePortRange(%q) = %+v, %v; want %+v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseReservedPorts(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []PortSpan
		ok   bool
	}{
		{"", nil, true},
		{"\n", nil, true},
		{"8080,9000-9010\n", []PortSpan{{8080, 8080}, {9000, 9010}}, true},
		// Unsorted, overlapping, adjacent and duplicate items merge.
		{"9005-9020,8080,9000-9010,8081,8080,9021", []PortSpan{{8080, 8081}, {9000, 9021}}, true},
		{"1-65535,80", []PortSpan{{1, 65535}}, true},
		{"65535,0", []PortSpan{{0, 0}, {65535, 65535}}, true},
		{"9010-9000", nil, false},
		{"8080,", nil, false},
		{"8080,,9000", nil, false},
		{"80-", nil, false},
		{"-80", nil, false},
		{"1-2-3", nil, false},
		{"70000", nil, false},
		{"8080 9000", nil, false},
	} {
		got, err := ParseReservedPorts(tc.in)
		if (err == nil) != tc.ok || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseReservedPorts(%q) = %+v, %v; want %+v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// Trimmed from this machine's /proc/net/netstat: TcpExt, IpExt, MPTcpExt.
const netstatSample = `TcpExt: SyncookiesSent EmbryonicRsts TW TWRecycled TWKilled PAWSActive TCPTimeWaitOverflow TCPOrigDataSent
TcpExt: 0 3 10326 17 2 0 5 884211
IpExt: InNoRoutes InTruncatedPkts InMcastPkts
IpExt: 0 0 0
MPTcpExt: MPCapableSYNRX MPCapableSYNTX
MPTcpExt: 0 0
`

func TestParseNetstat(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Counters
		ok   bool
	}{
		{"all four", netstatSample, Counters{TW: 10326, TWRecycled: 17, TWKilled: 2, TCPTimeWaitOverflow: 5}, true},
		{"missing counters are 0", "TcpExt: SyncookiesSent TW\nTcpExt: 1 42\n", Counters{TW: 42}, true},
		{"other prefixes first", "IpExt: A B\nIpExt: 1 2\nTcpExt: TWKilled\nTcpExt: 9\n", Counters{TWKilled: 9}, true},
		{"other prefixes may mismatch", "IpExt: A B\nIpExt: 1\nTcpExt: TW\nTcpExt: 3\n", Counters{TW: 3}, true},
		{"max uint64", "TcpExt: TW\nTcpExt: 18446744073709551615\n", Counters{TW: 1<<64 - 1}, true},
		{"fewer values", "TcpExt: TW TWKilled\nTcpExt: 1\n", Counters{}, false},
		{"more values", "TcpExt: TW\nTcpExt: 1 2\n", Counters{}, false},
		{"no values line", "TcpExt: TW TWKilled\n", Counters{}, false},
		{"no TcpExt", "IpExt: A\nIpExt: 1\n", Counters{}, false},
		{"empty", "", Counters{}, false},
		{"three TcpExt lines", "TcpExt: TW\nTcpExt: 1\nTcpExt: 2\n", Counters{}, false},
		{"not a number", "TcpExt: TW\nTcpExt: -1\n", Counters{}, false},
		{"unknown counter not parsed", "TcpExt: Foo TW\nTcpExt: x 5\n", Counters{TW: 5}, true},
	} {
		got, err := ParseNetstat(strings.NewReader(tc.in))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%s: ParseNetstat = %+v, %v; want %+v, ok %v", tc.name, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseKconfigHZ(t *testing.T) {
	for in, want := range map[string]uint32{
		"# CONFIG_HZ_100 is not set\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n": 250,
		"CONFIG_HZ_1000=y\nCONFIG_HZ=1000":                             1000,
		"CONFIG_HZ_PERIODIC=y\n":                                       0,
		"CONFIG_HZ=y\n":                                                0,
		"":                                                             0,
	} {
		if got := parseKconfigHZ(strings.NewReader(in)); got != want {
			t.Errorf("parseKconfigHZ(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestNsfsMounts(t *testing.T) {
	const mountinfo = `22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw
36 25 0:4 net:[4026532288] /run/netns/blue rw shared:5 - nsfs nsfs rw
37 25 0:4 net:[4026532399] /run/netns/with\040space rw - nsfs nsfs rw
38 25 0:4 mnt:[4026532400] /run/mnt-ns rw - nsfs nsfs rw
39 25 0:4 net:[4026532401] /run/docker/netns/abc rw shared:7 master:3 - nsfs nsfs rw
40 25 0:50 / /sys/fs/bpf rw - bpf bpf rw
`
	got, err := nsfsMounts(strings.NewReader(mountinfo))
	want := []string{"/run/netns/blue", "/run/netns/with space", "/run/docker/netns/abc"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("nsfsMounts = %q, %v; want %q", got, err, want)
	}
}

func checkSpans(t *testing.T, spans []PortSpan) {
	t.Helper()
	for i, sp := range spans {
		if sp.Lo > sp.Hi {
			t.Fatalf("span %+v runs backwards in %+v", sp, spans)
		}
		if i > 0 && int(spans[i-1].Hi)+1 >= int(sp.Lo) {
			t.Fatalf("spans %+v and %+v overlap, touch or are unsorted", spans[i-1], sp)
		}
	}
}

func FuzzParsePortRange(f *testing.F) {
	for _, s := range []string{"32768\t60999\n", "40000 40099", "1 1", "2 1", "", "a b", "99999 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		span, err := ParsePortRange(s)
		if err != nil {
			return
		}
		if span.Lo > span.Hi {
			t.Fatalf("ParsePortRange(%q) = %+v", s, span)
		}
		// What the kernel would write back parses to the same span.
		again, err := ParsePortRange(formatPortRange(span))
		if err != nil || again != span {
			t.Fatalf("round trip of %+v: %+v, %v", span, again, err)
		}
	})
}

func formatPortRange(sp PortSpan) string {
	return strings.Join([]string{strconv.Itoa(int(sp.Lo)), strconv.Itoa(int(sp.Hi))}, "\t") + "\n"
}

func FuzzParseReservedPorts(f *testing.F) {
	for _, s := range []string{"", "\n", "8080,9000-9010\n", "9005-9020,8080,9000-9010", "1-65535,80", "9010-9000", "1,,2", "0-0,65535"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spans, err := ParseReservedPorts(s)
		if err != nil {
			return
		}
		checkSpans(t, spans)
		// Formatting the merged spans the kernel's way parses back to them.
		again, err := ParseReservedPorts(formatReserved(spans))
		if err != nil || !slices.Equal(again, spans) {
			t.Fatalf("round trip of %+v: %+v, %v", spans, again, err)
		}
	})
}

func formatReserved(spans []PortSpan) string {
	var items []string
	for _, sp := range spans {
		if sp.Lo == sp.Hi {
			items = append(items, strconv.Itoa(int(sp.Lo)))
		} else {
			items = append(items, strconv.Itoa(int(sp.Lo))+"-"+strconv.Itoa(int(sp.Hi)))
		}
	}
	return strings.Join(items, ",") + "\n"
}

func FuzzParseNetstat(f *testing.F) {
	f.Add(netstatSample)
	f.Add("TcpExt: TW\nTcpExt: 1\n")
	f.Add("TcpExt: TW TWKilled\nTcpExt: 1\n")
	f.Add("IpExt: A\nIpExt: 1 2\nTcpExt: TWRecycled TCPTimeWaitOverflow\nTcpExt: 3 4\n")
	f.Add("TcpExt:\nTcpExt:\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseNetstat(strings.NewReader(s))
		if err != nil {
			if c != (Counters{}) {
				t.Fatalf("ParseNetstat(%q) failed (%v) but returned %+v", s, err, c)
			}
			return
		}
		if !strings.Contains(s, "TcpExt") {
			t.Fatalf("ParseNetstat(%q) found counters without a TcpExt line", s)
		}
	})
}

// Where a kernel configuration is readable (this VM has /proc/config.gz),
// HZ is one of the values Kconfig offers.
func TestKernelHZ(t *testing.T) {
	hz := kernelHZ()
	if hz == 0 {
		t.Skip("no kernel configuration in /boot or /proc/config.gz")
	}
	if !slices.Contains([]uint32{100, 250, 300, 1000}, hz) {
		t.Errorf("kernel HZ %d", hz)
	}
	t.Logf("HZ %d", hz)
}

const sockstatSample = `sockets: used 10
TCP: inuse 3 orphan 0 tw 250000 alloc 4 mem 0
UDP: inuse 0 mem 0
`

func TestParseSockstat(t *testing.T) {
	for _, tc := range []struct {
		in        string
		inuse, tw int
		ok        bool
	}{
		{sockstatSample, 3, 250000, true},
		{"TCP: inuse 0 orphan 0 tw 0 alloc 4 mem 0\n", 0, 0, true},
		{"TCP: inuse 0 orphan 0 alloc 4\n", 0, 0, false}, // no tw
		{"TCP: inuse x orphan 0 tw 0\n", 0, 0, false},
		{"TCP: inuse -1 tw 0\n", 0, 0, false},
		{"UDP: inuse 0 mem 0\n", 0, 0, false},
		{"", 0, 0, false},
	} {
		inuse, tw, err := parseSockstat(tc.in)
		if (err == nil) != tc.ok || inuse != tc.inuse || tw != tc.tw {
			t.Errorf("parseSockstat(%q) = %d, %d, %v; want %d, %d, ok %v", tc.in, inuse, tw, err, tc.inuse, tc.tw, tc.ok)
		}
	}
}

func FuzzParseSockstat(f *testing.F) {
	f.Add(sockstatSample)
	f.Add("TCP: inuse 1 tw\n")
	f.Add("TCP:\n")
	f.Fuzz(func(t *testing.T, s string) {
		inuse, tw, err := parseSockstat(s)
		if err != nil {
			if inuse != 0 || tw != 0 {
				t.Fatalf("parseSockstat(%q) failed (%v) but returned %d, %d", s, err, inuse, tw)
			}
			return
		}
		if inuse < 0 || tw < 0 || !strings.Contains(s, "TCP: ") {
			t.Fatalf("parseSockstat(%q) = %d, %d", s, inuse, tw)
		}
	})
}
