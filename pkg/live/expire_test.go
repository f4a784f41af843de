package live

import (
	"net/netip"
	"testing"
	"time"

	"github.com/twtrace/twtrace/pkg/aggregate"
	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/workload"
)

// expireEvent is a timewait of pid's "job" toward 10.0.0.2:port from
// source port sport.
func expireEvent(pid uint32, port, sport uint16) event.Event {
	var comm [16]byte
	copy(comm[:], "job")
	return event.Event{Kind: event.KindTimewait, PID: pid, Comm: comm, Netns: 1,
		Saddr: netip.MustParseAddr("10.0.0.1"), Sport: sport,
		Daddr: netip.MustParseAddr("10.0.0.2"), Dport: port, Role: event.RoleClient, Time: time.Now()}
}

// frameTick is what frame does to the state expire reads: a snapshot
// delta'd against the previous one, taken as prev.
func frameTick(t *testing.T, s *session) {
	t.Helper()
	snap := s.table.Snapshot()
	if err := snap.Delta(&s.prev); err != nil {
		t.Fatalf("frame %d: %v", s.frames, err)
	}
	s.prev = snap
	s.frames++
}

// TestExpireSession: with Expire 2 min at a 1 min interval, a workload
// quiet for two frames leaves the table, the owners, the join and the
// per-destination counters; the busy one keeps its row, its join entry
// (renumbered) and exact deltas; a full table has room again.
func TestExpireSession(t *testing.T) {
	s := benchSession(workload.ByPID, nil, false)
	s.cfg.MaxKeys, s.cfg.Interval, s.cfg.Expire = 2, time.Minute, 2*time.Minute
	s.table = aggregate.New(2)
	s.prev = s.table.Snapshot()
	quiet, busy := expireEvent(10, 81, 1000), expireEvent(20, 82, 2000)
	s.add(&quiet)
	s.add(&busy)
	for f := 1; f <= 4; f++ {
		frameTick(t, s)
		s.expire()
		busy.Sport++
		s.add(&busy)
	}
	if s.table.Len() != 1 || len(s.keys) != 1 || len(s.owners) != 1 {
		t.Fatalf("after 4 frames: %d rows, %d join keys, %d owners; want 1 each", s.table.Len(), len(s.keys), len(s.owners))
	}
	if len(s.twDest) != 1 {
		t.Errorf("%d per-destination counters, want the busy one's", len(s.twDest))
	}
	bk := s.keys[0]
	if bk.PID != 20 || s.keyIdx[bk] != 0 {
		t.Fatalf("kept join key %+v at %d, want pid 20 at 0", bk, s.keyIdx[bk])
	}
	last := tuple{netns: 1, saddr: busy.Saddr, sport: busy.Sport, daddr: busy.Daddr, dport: busy.Dport}
	if row, ok := s.join.find(&last, s.join.beginScan()); !ok || row != 0 {
		t.Fatalf("busy's last entry: row %d found %v, want 0 true", row, ok)
	}
	gone := tuple{netns: 1, saddr: quiet.Saddr, sport: quiet.Sport, daddr: quiet.Daddr, dport: quiet.Dport}
	if _, ok := s.join.find(&gone, s.join.scan); ok {
		t.Error("the quiet row's join entry survived its row")
	}
	// Room again: a new workload gets a row of its own, not the Other row.
	fresh := expireEvent(30, 83, 3000)
	s.add(&fresh)
	frameTick(t, s)
	if s.prev.Overflowed != 0 || len(s.prev.Rows) != 2 {
		t.Fatalf("new workload: %d rows, %d folded; want 2, 0", len(s.prev.Rows), s.prev.Overflowed)
	}
	for _, r := range s.prev.Rows {
		if r.Recent.Timewait != 1 {
			t.Errorf("row of pid %d: %d recent timewaits, want 1", r.Key.PID, r.Recent.Timewait)
		}
	}
}
