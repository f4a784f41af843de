package main

import (
	"strings"
	"testing"
)

const mapFdinfo = `pos:	0
flags:	02000002
mnt_id:	15
ino:	1057
map_type:	27
key_size:	0
value_size:	0
max_entries:	2097152
map_flags:	0x0
map_extra:	0x0
memlock:	2113536
map_id:	812
frozen:	0
`

func TestParseFdinfo(t *testing.T) {
	if id, mem, ok := parseFdinfo([]byte(mapFdinfo)); !ok || id != 812 || mem != 2113536 {
		t.Errorf("map fdinfo: id %d, memlock %d, %v; want 812, 2113536, true", id, mem, ok)
	}
	prog := "pos:\t0\nflags:\t02000002\nprog_type:\t26\nprog_jited:\t1\nmemlock:\t4096\nprog_id:\t90\n"
	if _, _, ok := parseFdinfo([]byte(prog)); ok {
		t.Error("a program's fdinfo was taken for a map's")
	}
}

func TestMaxRSS(t *testing.T) {
	if kib, ok := maxRSS("twtrace: something\n" + maxRSSTag + "7296\n"); !ok || kib != 7296 {
		t.Errorf("maxRSS = %d, %v; want 7296", kib, ok)
	}
	for _, bad := range []string{"", maxRSSTag, maxRSSTag + "-5", maxRSSTag + "x"} {
		if _, ok := maxRSS(bad); ok {
			t.Errorf("maxRSS(%q) took it", bad)
		}
	}
}

func TestDestinationTimewait(t *testing.T) {
	doc := `{"time":"x","destinations":[{"netns":1,"saddr":"127.0.0.1","daddr":"127.0.0.2","dport":80,"timewait":6250},
		{"saddr":"10.0.0.1","daddr":"127.0.0.2","dport":80,"timewait":5},{"daddr":"127.0.0.3","dport":80,"timewait":7}],"rows":[]}`
	m, err := destinationTimewait([]byte(doc))
	if err != nil || len(m) != 2 || m["127.0.0.2"] != 6255 || m["127.0.0.3"] != 7 {
		t.Errorf("destinationTimewait = %v, %v; want 127.0.0.2: 6255, 127.0.0.3: 7", m, err)
	}
	if _, err := destinationTimewait([]byte(`{"destinations":{}}`)); err == nil {
		t.Error("a malformed document was taken")
	}
}

func TestThousandsAndSizes(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 250000: "250,000", 1000000: "1,000,000", -12345: "-12,345"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
	sizes, err := parseSizes("10000, 100_000,,1000000")
	if err != nil || len(sizes) != 3 || sizes[1] != 100000 {
		t.Errorf("parseSizes = %v, %v", sizes, err)
	}
	for _, bad := range []string{"0", "-5", "1e6", "x"} {
		if _, err := parseSizes(bad); err == nil {
			t.Errorf("parseSizes(%q) took it", bad)
		}
	}
	if sizes, err := parseSizes(""); err != nil || len(sizes) != 0 {
		t.Errorf(`parseSizes("") = %v, %v; want none`, sizes, err)
	}
}

func FuzzScaleParsers(f *testing.F) {
	f.Add(mapFdinfo)
	f.Add(maxRSSTag + "12\n")
	f.Add(`{"destinations":[{"daddr":"127.0.0.2","timewait":3}]}`)
	f.Add("10000,100000")
	f.Fuzz(func(t *testing.T, in string) {
		parseFdinfo([]byte(in))
		maxRSS(in)
		destinationTimewait([]byte(in))
		if sizes, err := parseSizes(in); err == nil {
			for _, n := range sizes {
				if n <= 0 || strings.Contains(thousands(n), "-") {
					t.Fatalf("parseSizes(%q) gave %d", in, n)
				}
			}
		}
	})
}
