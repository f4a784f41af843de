package verdict

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// churner opens a connection per request: 412 in 10 s, each closed by
// itself after 3 ms, 180 bytes.
var churner = Evidence{
	Window: 10 * time.Second, Connects: 412, ClientTimewait: 412,
	LifetimeP50: 3 * time.Millisecond, LifetimeKnown: true,
	BytesP50: 180, BytesKnown: true,
}

var perRequestAdvice = []string{advicePool, adviceNewClient, adviceIdleLimit, adviceBody, adviceClose, adviceServerClose}

func with(e Evidence, change func(*Evidence)) Evidence {
	change(&e)
	return e
}

func TestJudge(t *testing.T) {
	for _, c := range []struct {
		name    string
		e       Evidence
		verdict string
		advice  []string
	}{
		{"churner", churner, PerRequest, perRequestAdvice},

		// The thresholds, exactly at and just past each.
		{"20 connections in 10 s", with(churner, func(e *Evidence) { e.ClientTimewait = 20 }), PerRequest, perRequestAdvice},
		{"19 connections in 5 s", with(churner, func(e *Evidence) { e.ClientTimewait, e.Window = 19, 5*time.Second }), "", nil},
		{"20 connections in a little over 10 s", with(churner, func(e *Evidence) { e.ClientTimewait, e.Window = 20, 10*time.Second+1 }), "", nil},
		{"1 s median lifetime", with(churner, func(e *Evidence) { e.LifetimeP50 = time.Second }), PerRequest, perRequestAdvice},
		{"longer median lifetime", with(churner, func(e *Evidence) { e.LifetimeP50 = time.Second + 1 }), "", nil},
		{"64 KiB median", with(churner, func(e *Evidence) { e.BytesP50 = 64 << 10 }), PerRequest, perRequestAdvice},
		{"more median bytes", with(churner, func(e *Evidence) { e.BytesP50 = 64<<10 + 1 }), "", nil},

		// What is not known does not flag.
		{"lifetime unknown", with(churner, func(e *Evidence) { e.LifetimeP50, e.LifetimeKnown = 0, false }), "", nil},
		{"bytes unknown", with(churner, func(e *Evidence) { e.BytesP50, e.BytesKnown = 0, false }), "", nil},
		{"no window", with(churner, func(e *Evidence) { e.Window = 0 }), "", nil},

		// A pool that rotates its connections: as many closes, long lives.
		{"rotating pool", with(churner, func(e *Evidence) { e.LifetimeP50 = 2 * time.Minute }), "", nil},
		// A server closing first is no client churning.
		{"server closing first", with(churner, func(e *Evidence) { e.ClientTimewait, e.ServerTimewait = 0, 412 }), "",
			[]string{adviceServer, adviceKeepAlive}},
		{"server and client", with(churner, func(e *Evidence) { e.ClientTimewait, e.ServerTimewait = 3, 412 }), "", nil},

		{"ports ran out", Evidence{Window: time.Second, Connects: 5, ConnectErrors: 5}, "", []string{adviceRanOut}},
		{"bind errors", Evidence{Window: time.Second, BindErrors: 1}, "", []string{adviceBind}},
		{"bound ports", Evidence{Window: time.Second, Connects: 1, BoundPorts: true}, "", []string{adviceBind}},
		{"exhausting", Evidence{Window: time.Second, Connects: 3, ClientTimewait: 3, Exhausting: true}, "", []string{adviceStopGap, adviceNever}},
		{"exhausting with tcp_tw_reuse", Evidence{Window: time.Second, Connects: 3, ClientTimewait: 3, Exhausting: true, TwReuse: true}, "", []string{adviceWiderRange, adviceNever}},
		{"exhausting, failing", Evidence{Window: time.Second, Connects: 3, ConnectErrors: 3, Exhausting: true}, "", []string{adviceRanOut, adviceStopGap, adviceNever}},
		{"exhausting, a pooled client of it", Evidence{Window: time.Second, Connects: 1, Exhausting: true}, "", nil},
		{"tcp_tw_reuse, not exhausting", Evidence{Window: time.Second, TwReuse: true}, "", nil},
		{"nothing", Evidence{Window: time.Second}, "", nil},

		{"everything at once", with(churner, func(e *Evidence) {
			e.ConnectErrors, e.BoundPorts, e.Exhausting, e.ServerTimewait = 7, true, true, 2
		}), PerRequest, slices.Concat([]string{adviceRanOut}, perRequestAdvice, []string{adviceBind, adviceStopGap, adviceNever})},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := Judge(c.e)
			if r.Verdict != c.verdict {
				t.Errorf("verdict %q, want %q (%s)", r.Verdict, c.verdict, r.Reason)
			}
			if !slices.Equal(r.Advice, c.advice) {
				t.Errorf("advice:\n got %q\nwant %q", r.Advice, c.advice)
			}
		})
	}
}

// TestChurnerAndPool: two processes toward one destination in one window;
// one opens a connection per request, the other keeps a pool.
func TestChurnerAndPool(t *testing.T) {
	pool := Evidence{
		Window: 10 * time.Second, Connects: 8, ClientTimewait: 2,
		LifetimeP50: 4 * time.Minute, LifetimeKnown: true,
		BytesP50: 3 << 20, BytesKnown: true,
	}
	for _, exhausting := range []bool{false, true} {
		c, p := churner, pool
		c.Exhausting, p.Exhausting = exhausting, exhausting
		rc, rp := Judge(c), Judge(p)
		if rc.Verdict != PerRequest || rp.Verdict != "" {
			t.Errorf("exhausting %v: churner %q, pool %q; want %q, none", exhausting, rc.Verdict, rp.Verdict, PerRequest)
		}
		if slices.Contains(rp.Advice, advicePool) || !slices.Contains(rc.Advice, advicePool) {
			t.Errorf("exhausting %v: churner told %q, pool told %q", exhausting, rc.Advice, rp.Advice)
		}
		// The stop-gaps concern the destination: both are told, when it
		// runs out.
		if slices.Contains(rp.Advice, adviceStopGap) != exhausting || slices.Contains(rc.Advice, adviceStopGap) != exhausting {
			t.Errorf("exhausting %v: churner told %q, pool told %q", exhausting, rc.Advice, rp.Advice)
		}
	}
	if want := "2 connections in 10s, closed by itself after 4m0s median, 3 MiB median"; Judge(pool).Reason != want {
		t.Errorf("pool: %q, want %q", Judge(pool).Reason, want)
	}
}

func TestReason(t *testing.T) {
	for _, c := range []struct {
		e    Evidence
		want string
	}{
		{churner, "412 connections in 10s, closed by itself after 3ms median, 180 B median"},
		{with(churner, func(e *Evidence) { e.LifetimeP50, e.BytesP50 = 3145728, 1536<<10 }),
			"412 connections in 10s, closed by itself after 3.15ms median, 1.5 MiB median"},
		{with(churner, func(e *Evidence) { e.LifetimeKnown, e.BytesKnown = false, false }),
			"412 connections in 10s, closed by itself, lifetime unknown"},
		{with(churner, func(e *Evidence) { e.ServerTimewait, e.ConnectErrors, e.BindErrors = 5, 3, 1 }),
			"412 connections in 10s, closed by itself after 3ms median, 180 B median; " +
				"5 accepted connections closed by itself; 3 connect() EADDRNOTAVAIL; 1 bind() EADDRINUSE"},
		{Evidence{Window: time.Minute, ServerTimewait: 57, LifetimeP50: 1500 * time.Microsecond, LifetimeKnown: true, BytesP50: 64 << 10, BytesKnown: true},
			"57 accepted connections in 1m0s, closed by itself after 1.5ms median, 64 KiB median"},
		{Evidence{Window: 10 * time.Second, Connects: 4}, "4 connects in 10s, none closed by itself"},
		{Evidence{Window: 2500 * time.Millisecond}, "no connection closed by itself in 2.5s"},
	} {
		if got := Judge(c.e).Reason; got != c.want {
			t.Errorf("reason %q, want %q", got, c.want)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"}, {999, "999ns"}, {1234, "1.23µs"}, {3145728, "3.15ms"},
		{999600 * time.Microsecond, "1s"}, {10 * time.Second, "10s"}, {90 * time.Minute, "1h30m0s"},
	} {
		if got := formatDuration(c.d); got != c.want {
			t.Errorf("formatDuration(%d) = %q, want %q", c.d, got, c.want)
		}
	}
	for _, c := range []struct {
		b    uint64
		want string
	}{
		{0, "0 B"}, {999, "999 B"}, {1000, "0.977 KiB"}, {65536, "64 KiB"},
		{1023487, "999 KiB"}, {1023488, "0.976 MiB"}, {1 << 60, "1 EiB"}, {1<<64 - 1, "16 EiB"},
	} {
		if got := formatBytes(c.b); got != c.want {
			t.Errorf("formatBytes(%d) = %q, want %q", c.b, got, c.want)
		}
	}
}

func TestAdviceIsShort(t *testing.T) {
	for _, a := range []string{
		adviceRanOut, advicePool, adviceNewClient, adviceIdleLimit, adviceBody, adviceClose,
		adviceServerClose, adviceBind, adviceStopGap, adviceWiderRange, adviceNever, adviceServer, adviceKeepAlive,
	} {
		if len(a) > 100 {
			t.Errorf("%d characters: %q", len(a), a)
		}
	}
	for lib, advice := range libraryAdvice {
		for _, a := range advice {
			if len(a) > 100 {
				t.Errorf("%s: %d characters: %q", lib, len(a), a)
			}
		}
	}
}

// A per-request row whose call site shows its client library gets that
// library's causes first, then the generic list; any other row, only the
// generic list.
func TestLibraryAdviceFirst(t *testing.T) {
	e := Evidence{Window: 10 * time.Second, Connects: 100, ClientTimewait: 100,
		LifetimeP50: time.Millisecond, LifetimeKnown: true, BytesKnown: true, Library: "net/http"}
	r := Judge(e)
	if r.Verdict != PerRequest || len(r.Advice) < 4 || !strings.Contains(r.Advice[0], "MaxIdleConnsPerHost") ||
		!slices.Contains(r.Advice, advicePool) {
		t.Errorf("net/http advice %q, want MaxIdleConnsPerHost first and the generic list after", r.Advice)
	}
	e.Library = "database/sql"
	if r := Judge(e); !strings.Contains(r.Advice[0], "SetMaxIdleConns") {
		t.Errorf("database/sql advice %q", r.Advice)
	}
	e.Library = "libcurl"
	if r := Judge(e); !strings.Contains(r.Advice[0], "easy handle") {
		t.Errorf("libcurl advice %q", r.Advice)
	}
	e.Library = ""
	if r := Judge(e); r.Advice[0] != advicePool {
		t.Errorf("advice without a library %q, want the generic list", r.Advice)
	}
	e.Library, e.ClientTimewait = "net/http", 1 // not per-request: no cause
	if r := Judge(e); len(r.Advice) != 0 {
		t.Errorf("advice of a pooled client %q, want none", r.Advice)
	}
}

// A proxy is known by its program's name, stripped or not: nginx's
// per-request connections to an upstream get nginx's advice first, then
// the generic list without an HTTP client's causes (no Go
// MaxIdleConnsPerHost for nginx).
func TestProxyAdvice(t *testing.T) {
	if Proxy("nginx") != "nginx" || Proxy("haproxy") != "haproxy" || Proxy("envoy") != "envoy" || Proxy("curl") != "" {
		t.Fatal("proxies by comm")
	}
	e := Evidence{Window: 10 * time.Second, Connects: 100, ClientTimewait: 100,
		LifetimeP50: time.Millisecond, LifetimeKnown: true, BytesKnown: true, Library: Proxy("nginx")}
	want := []string{
		"nginx: give the upstream block keepalive N (idle connections kept per worker).",
		`nginx: with it, proxy_http_version 1.1 and proxy_set_header Connection "".`,
		advicePool, adviceClose, adviceServerClose,
	}
	if r := Judge(e); !slices.Equal(r.Advice, want) {
		t.Errorf("nginx advice %q, want %q", r.Advice, want)
	}
	e.Library = Proxy("haproxy")
	if r := Judge(e); len(r.Advice) != 4 || !strings.HasPrefix(r.Advice[0], "HAProxy:") || slices.Contains(r.Advice, adviceIdleLimit) {
		t.Errorf("haproxy advice %q", r.Advice)
	}
	e.Library = "net/http" // a client library keeps the whole generic list
	if r := Judge(e); !slices.Contains(r.Advice, adviceIdleLimit) || !slices.Contains(r.Advice, adviceNewClient) {
		t.Errorf("net/http advice %q lacks the generic client causes", r.Advice)
	}
}
