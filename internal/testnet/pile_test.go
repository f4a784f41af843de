package testnet

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// requireRoot skips a test that creates namespaces when not root, except
// under CI=true, where it fails.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and not root: cannot create network namespaces")
		}
		t.Skip("needs root: creates network namespaces")
	}
}

// A pile of 3,000 over 6 destinations: 500 client-side TIME_WAIT sockets
// toward each, as the kernel lists them, none failed, and nothing left
// short of TIME_WAIT (no FIN_WAIT2 substate, no server side).
func TestBuildPileExactPerDestination(t *testing.T) {
	requireRoot(t)
	ns := New(t)
	p, err := BuildPile(ns.Path(), PileSpec{N: 3000, Destinations: 6})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if len(p.Destinations) != 6 || p.Made() != 3000 {
		t.Fatalf("pile: %d destinations, %d made; want 6, 3000", len(p.Destinations), p.Made())
	}
	var peers map[netip.AddrPort]int
	var states map[int]int
	var ss map[netip.AddrPort]int
	haveSS := false
	if _, err := exec.LookPath("ss"); err == nil {
		haveSS = true
	}
	ns.Do(t, func() error {
		if peers, err = TimewaitPeers(); err != nil {
			return err
		}
		if states, err = TCPStates(); err != nil {
			return err
		}
		if haveSS {
			ss, err = ssTimewaitPeers()
		}
		return err
	})
	for i, d := range p.Destinations {
		want := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(i + 1)}), 80)
		if d.Addr != want || d.Made != 500 || d.Failed != 0 {
			t.Errorf("destination %d: %+v; want %s, 500 made, none failed", i, d, want)
		}
		tw := int(500 - d.FinWait2)
		if peers[d.Addr] != tw {
			t.Errorf("/proc/net/tcp: %d TIME_WAIT toward %s, want %d", peers[d.Addr], d.Addr, tw)
		}
		if haveSS && ss[d.Addr] != tw {
			t.Errorf("ss: %d TIME_WAIT toward %s, want %d", ss[d.Addr], d.Addr, tw)
		}
	}
	// The six listeners, and 3,000 timewait sockets (a rare one left in
	// FIN_WAIT2): nothing else.
	fw2 := int(p.FinWait2())
	if states[tcpTimeWait] != 3000-fw2 || states[tcpFinWait2] != fw2 || states[0x0A] != 6 || len(states) != 2+min(fw2, 1) {
		t.Errorf("states in the namespace: %v; want %d TIME_WAIT (6), %d FIN_WAIT2 (5) and 6 LISTEN (10)", states, 3000-fw2, fw2)
	}
	if !haveSS {
		t.Log("ss is not installed: counted from /proc/net/tcp only")
	}
}

// ssTimewaitPeers runs `ss -Htan state time-wait` in the calling thread's
// namespace and counts its lines by peer address.
func ssTimewaitPeers() (map[netip.AddrPort]int, error) {
	out, err := exec.Command("ss", "-Htan", "state", "time-wait").Output()
	if err != nil {
		return nil, fmt.Errorf("ss: %w", err)
	}
	peers := map[netip.AddrPort]int{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			return nil, fmt.Errorf("ss: line %q", sc.Text())
		}
		a, err := netip.ParseAddrPort(f[len(f)-1])
		if err != nil {
			return nil, fmt.Errorf("ss: line %q: %w", sc.Text(), err)
		}
		peers[a]++
	}
	return peers, sc.Err()
}

func TestParseProcTCP(t *testing.T) {
	listing := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9C41 0500007F:0050 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   2: 0100007F:9C42 0500007F:0050 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   3: 0100007F:9C43 0200007F:0050 05 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
`
	type key struct {
		state  int
		remote string
	}
	got := map[key]int{}
	if err := parseProcTCP([]byte(listing), func(state int, remote netip.AddrPort) {
		got[key{state, remote.String()}]++
	}); err != nil {
		t.Fatal(err)
	}
	// Little-endian hosts print 127.0.0.5 as 0500007F.
	want := map[key]int{{0x0A, "0.0.0.0:0"}: 1, {6, "127.0.0.5:80"}: 2, {5, "127.0.0.2:80"}: 1}
	if bigEndian() {
		want = map[key]int{{0x0A, "0.0.0.0:0"}: 1, {6, "5.0.0.127:80"}: 2, {5, "2.0.0.127:80"}: 1}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("parsed %v, want %v", got, want)
	}
	for _, bad := range []string{"h\n 0: 1:1 1:1\n", "h\n 0: 0100007F:0050 0500007F:50 06\n", "h\n 0: a b 0500007f:0050 06\n", "h\n 0: a b 0500007F:0050 6\n"} {
		if err := parseProcTCP([]byte(bad), func(int, netip.AddrPort) {}); err == nil {
			t.Errorf("parseProcTCP(%q) took it", bad)
		}
	}
}

func bigEndian() bool { return binary.NativeEndian.Uint16([]byte{0, 1}) == 1 }

func FuzzParseProcTCP(f *testing.F) {
	f.Add("  sl  local_address rem_address   st\n   1: 0100007F:9C41 0500007F:0050 06 00000000:00000000\n")
	f.Add("h\n 0: 0100007F:0050 0500007F:50 06\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, listing string) {
		parseProcTCP([]byte(listing), func(state int, _ netip.AddrPort) {
			if state < 0 || state > 0xFF {
				t.Fatalf("state %d from two hex digits", state)
			}
		})
	})
}
