package cgroup

import (
	"fmt"
	"testing"
)

// BenchmarkLookupCached is the cost per event once a cgroup is known:
// by id (a table of 10,000 cgroups), and by Process where the v2 id
// says nothing (the /proc answer cached). Target: <= 100 ns, 0 allocs.
func BenchmarkLookupCached(b *testing.B) {
	t := &table{ids: make(map[uint64]Info), rootID: 1}
	for i := range uint64(10000) {
		path := fmt.Sprintf("/kubepods.slice/kubepods-pod%s.slice/cri-containerd-%064x.scope", uidU, i)
		t.ids[i+2] = Info{Path: path, Layout: ParseLayout(path)}
	}
	// A /proc whose mountinfo shows no v2 mount: nothing is walked.
	proc, ino := fakeProc(b, "", "0::/system.slice/docker-"+ctr+".scope\n")
	byID, err := NewResolver(Options{Proc: proc})
	if err != nil {
		b.Fatal(err)
	}
	byID.hasV2 = true
	byID.table.Store(t)
	byPID, err := NewResolver(Options{Proc: proc})
	if err != nil {
		b.Fatal(err)
	}
	p := Process{PID: 42, PPID: 1, ExeIno: ino}
	if byID.Lookup(5000, p).ContainerID == "" || byPID.Lookup(1, p).ContainerID == "" {
		b.Fatal("the benchmark's lookups resolve nothing")
	}
	for _, c := range []struct {
		name string
		r    *Resolver
		id   uint64
	}{{"id", byID, 5000}, {"pid", byPID, 1}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.r.Lookup(c.id, p)
			}
		})
		b.Run(c.name+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c.r.Lookup(c.id, p)
				}
			})
		})
	}
}
