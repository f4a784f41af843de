package verdict

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzJudge: whatever the evidence, the verdict follows the thresholds,
// the advice follows the rules, and the reason is one line.
func FuzzJudge(f *testing.F) {
	f.Add(int64(10*time.Second), uint64(412), uint64(412), uint64(0), uint64(0), uint64(0),
		int64(3*time.Millisecond), true, uint64(180), true, uint8(0))
	f.Add(int64(0), uint64(0), uint64(0), uint64(0), uint64(0), uint64(0), int64(0), false, uint64(0), false, uint8(0xff))
	f.Add(int64(-1), uint64(1<<63), uint64(1<<64-1), uint64(1<<64-1), uint64(1), uint64(1),
		int64(-1), true, uint64(1<<64-1), true, uint8(7))
	f.Fuzz(func(t *testing.T, window int64, connects, client, server, connectErrors, bindErrors uint64,
		lifetime int64, lifetimeKnown bool, bytes uint64, bytesKnown bool, flags uint8) {
		e := Evidence{
			Window: time.Duration(window), Connects: connects, ClientTimewait: client, ServerTimewait: server,
			ConnectErrors: connectErrors, BindErrors: bindErrors,
			LifetimeP50: time.Duration(lifetime), LifetimeKnown: lifetimeKnown,
			BytesP50: bytes, BytesKnown: bytesKnown,
			BoundPorts: flags&1 != 0, Exhausting: flags&2 != 0, TwReuse: flags&4 != 0,
			Library: []string{"", "net/http", "database/sql", "grpc", "libcurl", "other"}[(flags>>3)%6],
		}
		r := Judge(e)
		flagged := client >= MinConnections && window > 0 &&
			float64(client)/time.Duration(window).Seconds() >= MinRate &&
			lifetimeKnown && time.Duration(lifetime) <= MaxLifetime && bytesKnown && bytes <= MaxBytes
		if (r.Verdict == PerRequest) != flagged || r.Verdict != "" && r.Verdict != PerRequest {
			t.Errorf("verdict %q on %+v", r.Verdict, e)
		}
		if r.Reason == "" || strings.ContainsAny(r.Reason, "\n\r") {
			t.Errorf("reason %q", r.Reason)
		}
		for i, a := range r.Advice {
			if len(a) > 100 || slices.Contains(r.Advice[:i], a) {
				t.Errorf("advice %q", r.Advice)
			}
		}
		has := func(a string) bool { return slices.Contains(r.Advice, a) }
		stopGap := e.Exhausting && (client > 0 || connectErrors > 0)
		if has(advicePool) != flagged || has(adviceRanOut) != (connectErrors > 0) ||
			has(adviceBind) != (bindErrors > 0 || e.BoundPorts) ||
			has(adviceNever) != stopGap || has(adviceStopGap) != (stopGap && !e.TwReuse) ||
			has(adviceServer) != (server > 0 && client == 0) {
			t.Errorf("advice %q on %+v", r.Advice, e)
		}
		// More of the same, as short and small, in the same window, is
		// judged the same.
		if flagged {
			more := e
			more.ClientTimewait = max(client, client*2)
			more.LifetimeP50 /= 2
			if Judge(more).Verdict != PerRequest {
				t.Errorf("%+v flagged, %+v not", e, more)
			}
		}
	})
}
