package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/testnet"
)

// The documented JSON of snapshot and top (docs/json.md), read by field
// name only: the test holds whatever produces it to the format.
type scaleDestination struct {
	Netns          uint32 `json:"netns"`
	Saddr          string `json:"saddr"`
	Daddr          string `json:"daddr"`
	Dport          uint16 `json:"dport"`
	Timewait       int64  `json:"timewait"`
	FinWait2       int64  `json:"fin_wait2"`
	Established    int64  `json:"established"`
	OtherStates    int64  `json:"other_states"`
	PortsInUse     int64  `json:"ports_in_use"`
	PortsAvailable int64  `json:"ports_available"`
	PortsUsable    int64  `json:"ports_usable"`
	// top only
	Unattributed *int64 `json:"timewait_unattributed"`
}

type scaleNamespace struct {
	Netns           uint32    `json:"netns"`
	PortRange       [2]uint16 `json:"port_range"`
	PortsUsable     int64     `json:"ports_usable"`
	ReservedInRange int64     `json:"reserved_in_range"`
	BoundInRange    int64     `json:"bound_in_range"`
	MaxTwBuckets    int64     `json:"tcp_max_tw_buckets"`
	Timewait        int64     `json:"timewait"`
	FinWait2        int64     `json:"fin_wait2"`
	TwOverflow      int64     `json:"tw_overflow"`
}

type scaleDocument struct {
	Namespaces   []scaleNamespace   `json:"namespaces"`
	Destinations []scaleDestination `json:"destinations"`
	Errors       []string           `json:"errors"`
	// top only
	Rows []struct {
		TimewaitNow int64 `json:"timewait_now"`
	} `json:"rows"`
	Losses map[string]int64 `json:"losses"`
}

// scalePort is the servers' port: inside the range, so the model deducts
// it (one port, however many addresses listen on it) from every
// destination's usable ports.
const scalePort = 8080

// Exact at scale: a pile of 50,000 client-side timewait sockets over 8
// destinations (4,000 in an emulated VM guest, where connections are
// slower). snapshot and top count each destination's timewait sockets as
// made, leave it 64,512 − 1 (the servers' port) − made ports, see the
// namespace's total, attribute none of the pile to a process (it was made
// before tracing), and lose or refuse nothing.
func TestScaleExactCounts(t *testing.T) {
	requireBPF(t)
	n, dests := 50000, 8
	if testnet.InVMGuest() {
		n = 4000
	}
	ns := testnet.New(t)
	ns.Park(t)
	t0 := time.Now()
	pile, err := testnet.BuildPile(ns.Path(), testnet.PileSpec{N: n, Destinations: dests, Port: scalePort})
	if err != nil {
		t.Fatal(err)
	}
	defer pile.Close()
	t.Logf("pile of %d in %s, %d left in FIN_WAIT2", pile.Made(), pile.Took.Round(time.Millisecond), pile.FinWait2())
	for _, d := range pile.Destinations {
		if d.Made != int64(n/dests) {
			t.Fatalf("pile: %+v, want %d made toward each destination", d, n/dests)
		}
	}
	inode := strconv.FormatUint(uint64(ns.Inode), 10)

	snap := scaleCLI(t, "snapshot", "-o", "json", "--netns", inode)
	checkScale(t, "snapshot", snap[0], ns.Inode, pile, false)

	frames := scaleCLI(t, "top", "-o", "json", "--count", "3", "--netns", inode)
	if len(frames) != 3 {
		t.Fatalf("top: %d frames, want 3", len(frames))
	}
	checkScale(t, "top", frames[2], ns.Inode, pile, true)

	// TIME_WAIT lasts 60 s: past that, the pile has begun to shrink and
	// the figures above prove nothing.
	if took := time.Since(t0); took > 55*time.Second {
		t.Fatalf("pile and measurements took %s, near TIME_WAIT's 60 s: the pile was not whole", took)
	}
}

// scaleCLI runs this test binary as twtrace with args and decodes each
// line of its output.
func scaleCLI(t *testing.T, args ...string) []scaleDocument {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestCLIHelper$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), "TWTRACE_TEST_CLI=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("twtrace %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	var docs []scaleDocument
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var d scaleDocument
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatalf("twtrace %s: %v in %.200q", strings.Join(args, " "), err, line)
		}
		docs = append(docs, d)
	}
	return docs
}

// checkScale holds one document to the pile and the headroom model.
func checkScale(t *testing.T, what string, doc scaleDocument, inode uint32, pile *testnet.Pile, live bool) {
	t.Helper()
	const usable = 65535 - 1024 + 1 - 1 // the range, less the servers' port
	n := pile.Made()
	if len(doc.Errors) != 0 {
		t.Errorf("%s: errors %q", what, doc.Errors)
	}
	if len(doc.Namespaces) != 1 {
		t.Fatalf("%s: %d namespaces, want the pile's only", what, len(doc.Namespaces))
	}
	ns := doc.Namespaces[0]
	if ns.Netns != inode || ns.PortRange != [2]uint16{1024, 65535} || ns.PortsUsable != usable ||
		ns.BoundInRange != 1 || ns.ReservedInRange != 0 || ns.MaxTwBuckets != 2000000 ||
		ns.Timewait != n-pile.FinWait2() || ns.FinWait2 != pile.FinWait2() || ns.TwOverflow != 0 {
		t.Errorf("%s: namespace %+v; want netns %d, range 1024-65535, %d usable (1 bound), %d timewait and %d fin_wait2, no overflow",
			what, ns, inode, usable, n-pile.FinWait2(), pile.FinWait2())
	}
	got := map[netip.AddrPort]scaleDestination{}
	for _, d := range doc.Destinations {
		a, err := netip.ParseAddr(d.Daddr)
		if err != nil {
			t.Fatalf("%s: destination %+v: %v", what, d, err)
		}
		k := netip.AddrPortFrom(a, d.Dport)
		if _, dup := got[k]; dup {
			t.Errorf("%s: %s listed twice (from two source addresses?)", what, k)
		}
		got[k] = d
	}
	if len(got) != len(pile.Destinations) {
		t.Errorf("%s: %d destinations, want %d", what, len(got), len(pile.Destinations))
	}
	for _, p := range pile.Destinations {
		d, ok := got[p.Addr]
		switch {
		case !ok:
			t.Errorf("%s: no destination %s", what, p.Addr)
		case d.Netns != inode || d.Timewait != p.Made-p.FinWait2 || d.FinWait2 != p.FinWait2 || d.Established != 0 || d.OtherStates != 0 ||
			d.PortsInUse != p.Made || d.PortsUsable != usable || d.PortsAvailable != usable-p.Made:
			t.Errorf("%s: destination %+v; want %d timewait, %d fin_wait2, %d ports in use, %d of %d ports available",
				what, d, p.Made-p.FinWait2, p.FinWait2, p.Made, usable-p.Made, usable)
		case live && (d.Unattributed == nil || *d.Unattributed != p.Made):
			t.Errorf("%s: destination %s: timewait_unattributed %v, want %d (the pile predates tracing)",
				what, p.Addr, d.Unattributed, p.Made)
		}
	}
	if !live {
		return
	}
	for _, r := range doc.Rows {
		if r.TimewaitNow != 0 {
			t.Errorf("%s: a row holds %d timewait sockets of a pile made before tracing", what, r.TimewaitNow)
		}
	}
	if len(doc.Losses) == 0 {
		t.Errorf("%s: no losses object", what)
	}
	for kind, v := range doc.Losses {
		if v != 0 {
			t.Errorf("%s: losses %s = %d, want 0", what, kind, v)
		}
	}
}
