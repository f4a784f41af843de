package report

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/twtrace/twtrace/pkg/headroom"
	"github.com/twtrace/twtrace/pkg/inventory"
)

// Scanned is one namespace read by Take, with its headroom figures.
type Scanned struct {
	NS     *inventory.Namespace
	Report headroom.Report
}

// Take reads every namespace of the host that want admits (want nil: all)
// and returns the snapshot document and what it was made from. A namespace
// that vanishes between listing and reading is left out silently; one that
// cannot be read for another reason is named in Errors.
func Take(sc *inventory.Scanner, want func(netns uint32) bool) (Snapshot, []Scanned, error) {
	refs, err := inventory.Namespaces()
	if err != nil {
		return Snapshot{}, nil, err
	}
	snap := Snapshot{Time: time.Now(), Namespaces: []Namespace{}, Destinations: []Destination{}, Servers: []Server{}}
	var scanned []Scanned
	for _, ref := range refs {
		if want != nil && !want(ref.Inode) {
			continue
		}
		ns, err := sc.Scan(ref)
		if err != nil {
			if errors.Is(err, inventory.ErrNamespaceGone) {
				continue
			}
			snap.Errors = append(snap.Errors, fmt.Sprintf("netns %d: %v", ref.Inode, err))
			continue
		}
		r := headroom.Compute(ns)
		n, d, s := FromNamespace(ns, &r)
		snap.Namespaces = append(snap.Namespaces, n)
		snap.Destinations = append(snap.Destinations, d...)
		snap.Servers = append(snap.Servers, s...)
		scanned = append(scanned, Scanned{NS: ns, Report: r})
	}
	SortDestinations(snap.Destinations)
	return snap, scanned, nil
}

// SortDestinations puts the most endangered first: least headroom, then
// most timewait, then by key.
func SortDestinations(d []Destination) {
	slices.SortStableFunc(d, func(a, b Destination) int {
		if c := cmp.Compare(a.HeadroomPct, b.HeadroomPct); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Timewait, a.Timewait); c != 0 {
			return c
		}
		return a.key().Compare(b.key())
	})
}

func (d *Destination) key() headroom.Key {
	return headroom.Key{Netns: d.Netns, Saddr: d.Saddr, Daddr: d.Daddr, Dport: d.Dport}
}

// NamespaceLine is two lines naming a namespace and its settings.
func NamespaceLine(n *Namespace) string {
	who := "no process"
	if n.PID != 0 {
		who = fmt.Sprintf("pid %d %s", n.PID, n.Comm)
	}
	if n.Name != "" {
		who = n.Name + ", " + who
	}
	if n.Owner != nil {
		who = Owner(n.Owner) + ", " + who
	}
	reuse := [...]string{"0", "1", "2 (lo)"}
	r := fmt.Sprint(n.TwReuse)
	if n.TwReuse >= 0 && n.TwReuse < len(reuse) {
		r = reuse[n.TwReuse]
	}
	return fmt.Sprintf("netns %d (%s)  timewait %d, fin_wait2 %d\n  range %d-%d  reserved %s  usable %d = %.3g conn/s  tw_reuse=%s",
		n.Netns, who, n.Timewait, n.FinWait2, n.PortRange[0], n.PortRange[1], Spans(n.ReservedPorts), n.Usable, n.CeilingPerS, r)
}

// WriteSnapshotTable prints s for a person: per namespace a line of its
// settings, then its destinations, most endangered first.
func WriteSnapshotTable(w io.Writer, s *Snapshot) error {
	var b strings.Builder
	for i := range s.Namespaces {
		n := &s.Namespaces[i]
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(NamespaceLine(n))
		b.WriteByte('\n')
		first := true
		for j := range s.Destinations {
			d := &s.Destinations[j]
			if d.Netns != n.Netns {
				continue
			}
			if first {
				fmt.Fprintf(&b, "  %-15s %-21s %6s %5s %5s %6s %6s %5s\n",
					"SOURCE", "DESTINATION", "TW", "FW2", "EST", "INUSE", "AVAIL", "HEAD")
				first = false
			}
			avail := fmt.Sprint(d.PortsAvailable)
			if d.TwReuse {
				avail += fmt.Sprintf(" (+%d reusable)", d.PortsReusable)
			}
			fmt.Fprintf(&b, "  %-15s %-21s %6d %5d %5d %6d %6s %4.0f%%\n",
				d.Saddr, hostPort(d.Daddr.String(), d.Dport), d.Timewait, d.FinWait2, d.Established,
				d.PortsInUse, avail, d.HeadroomPct)
		}
		if first {
			b.WriteString("  no outgoing connections\n")
		}
		for j := range s.Servers {
			sv := &s.Servers[j]
			if sv.Netns == n.Netns && sv.Timewait+sv.FinWait2 > 0 {
				fmt.Fprintf(&b, "  accepted on %s: %d timewait (holds no ephemeral port)\n",
					hostPort(sv.Addr.String(), sv.Port), sv.Timewait+sv.FinWait2)
			}
		}
	}
	for _, e := range s.Errors {
		fmt.Fprintf(&b, "twtrace: could not read %s\n", e)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func hostPort(addr string, port uint16) string {
	if strings.Contains(addr, ":") {
		return fmt.Sprintf("[%s]:%d", addr, port)
	}
	return fmt.Sprintf("%s:%d", addr, port)
}
