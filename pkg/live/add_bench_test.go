package live

import (
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/twtrace/twtrace/pkg/aggregate"
	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/headroom"
	"github.com/twtrace/twtrace/pkg/owner"
	"github.com/twtrace/twtrace/pkg/workload"
)

// benchSession is the part of a session the reader's add touches.
func benchSession(by workload.By, owners workload.Resolver, perProcess bool) *session {
	return &session{
		cfg:    Config{MaxKeys: DefaultMaxKeys, By: by, Owners: owners, PerProcess: perProcess},
		table:  aggregate.New(DefaultMaxKeys),
		join:   newJoin(DefaultJoinEntries),
		keyIdx: map[aggregate.Key]int32{},
		owners: map[aggregate.Key]*rowOwner{},
		procs:  map[uint32]*Process{},
		twDest: map[headroom.Key]*twCount{},
	}
}

// BenchmarkAdd is the engine's work per event on the reader's goroutine:
// a timewait of one of 300 short-lived processes of one program (a shell
// loop's clients) toward one destination, each with its own source port.
// by pid is the engine before workloads; program resolves what owns the
// process (a real cgroup resolver, this host's hierarchy) and folds it.
func BenchmarkAdd(b *testing.B) {
	var comm [16]byte
	copy(comm[:], "curl")
	events := make([]event.Event, 4096)
	for i := range events {
		events[i] = event.Event{Kind: event.KindTimewait, PID: uint32(1000 + i%300), Comm: comm, Netns: 1,
			CgroupID: 1, Saddr: netip.MustParseAddr("10.0.0.1"), Sport: uint16(20000 + i),
			Daddr: netip.MustParseAddr("10.0.0.2"), Dport: 80, Role: event.RoleClient, Time: time.Unix(0, int64(i))}
		events[i].Proc = event.Proc{PPID: 999, ExeDev: 8 << 20, ExeIno: 42, Comm: comm}
	}
	host, err := owner.New(owner.Options{Endpoint: owner.NoCRI})
	if err != nil {
		b.Fatal(err)
	}
	defer host.Close()
	for _, c := range []struct {
		by      workload.By
		owners  workload.Resolver
		process bool
	}{{workload.ByPID, nil, false}, {workload.ByProgram, host, false}, {workload.ByProgram, host, true}} {
		b.Run(fmt.Sprintf("by=%s/per-process=%v", c.by, c.process), func(b *testing.B) {
			s := benchSession(c.by, c.owners, c.process)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				s.add(&events[i%len(events)])
			}
		})
	}
	_ = os.Getpid
}
