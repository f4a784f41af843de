package headroom

import (
	"math"
	"testing"
	"time"

	"github.com/twtrace/twtrace/pkg/inventory"
)

type forecastCase struct {
	name    string
	rate    float64
	want    float64
	wantOK  bool
	inexact bool // want is a quotient that floating point rounds
}

func checkForecast(t *testing.T, f func(*Destination, float64) (float64, bool), d *Destination, cases []forecastCase) {
	t.Helper()
	for _, c := range cases {
		got, ok := f(d, c.rate)
		match := got == c.want
		if c.inexact {
			match = math.Abs(got-c.want) <= 1e-9*c.want
		}
		if ok != c.wantOK || !match {
			t.Errorf("%s (rate %v/s): %v s, %v; want %v s, %v", c.name, c.rate, got, ok, c.want, c.wantOK)
		}
	}
}

// TestForecastExample: toward 8080 in the example, 62 ports are free, 30
// timewaits expire 1 s, 2 s, ... 30 s from now and 2 ports are held open:
// of the 94 usable ports, 92 can cycle, so 92/60 ≈ 1.53 new timewaits per
// second is the most it sustains.
func TestForecastExample(t *testing.T) {
	r := Compute(example())
	d := &r.Destinations[0]
	if d.Dport != 8080 {
		t.Fatalf("first destination %v, want port 8080", d.Key)
	}
	checkForecast(t, Forecast, d, []forecastCase{
		// 62/124 = 0.5 s, before the first timewait expires at 1 s.
		{"before the first expiry", 124, 0.5, true, false},
		// After k expiries the ports last until (62+k)/4 s, which falls
		// in [k, k+1) first for k = 20: 82/4.
		{"after 20 expiries", 4, 20.5, true, false},
		// (62+30)/1.55 < 60: the timewaits taken now have not expired yet.
		{"before the steady state", 1.55, 92 / 1.55, true, true},
		// 1.5·60 + 2 = 92 <= 94. Without the new timewaits expiring after
		// 60 s the ports would last until (62+30)/1.5 ≈ 61.3 s.
		{"steady state", 1.5, 0, false, false},
		{"no new connections", 0, 0, false, false},
		{"negative rate", -1, 0, false, false},
		{"NaN", math.NaN(), 0, false, false},
		{"infinite rate", math.Inf(1), 0, true, false},
	})
	// tcp_tw_reuse is off: ForecastWithReuse is Forecast.
	checkForecast(t, ForecastWithReuse, d, []forecastCase{
		{"without reuse", 4, 20.5, true, false},
	})

	// 8081: 87 free, 7 timewaits expiring at 30 s, nothing held open.
	d = &r.Destinations[1]
	checkForecast(t, Forecast, d, []forecastCase{
		{"before the expiries", 3, 29, true, false},
		// After 30 s: 94/1.5 > 60 s.
		{"steady state", 1.5, 0, false, false},
	})
}

func TestForecastExhausted(t *testing.T) {
	ns := namespace()
	ns.Sysctls.PortRange = inventory.PortSpan{Lo: 40000, Hi: 40009}
	ns.Sysctls.Reserved = nil
	for i := range 10 {
		// One expires right now: a port comes free, but not before
		// connect() needs one.
		ns.Sockets = append(ns.Sockets, timewait(addrPort("10.0.0.1", 40000+i), "10.0.0.2:80", time.Duration(i)*time.Second))
	}
	d := &Compute(ns).Destinations[0]
	if d.PortsAvailable != 0 {
		t.Fatalf("available %d, want 0", d.PortsAvailable)
	}
	checkForecast(t, Forecast, d, []forecastCase{
		{"any rate", 1e-6, 0, true, false},
		{"no new connections", 0, 0, false, false},
	})
}

// TestForecastBoundary: a destination with 120 free ports and nothing in
// use sustains 2 timewaits a second exactly.
func TestForecastBoundary(t *testing.T) {
	d := &Destination{PortsAvailable: 120, Usable: 120}
	checkForecast(t, Forecast, d, []forecastCase{
		{"at the ceiling", 2, 0, false, false},
		{"above it", 2.5, 48, true, false},
		{"just above it", 2 + 1e-9, 120 / (2 + 1e-9), true, true},
	})

	// 10 free and a timewait expiring at 5 s: at 2/s the last free port
	// goes at the instant the timewait's comes free, which is not
	// running out; that one goes at 5.5 s.
	d = &Destination{PortsAvailable: 10, Usable: 100, expiries: seconds(5)}
	checkForecast(t, Forecast, d, []forecastCase{
		{"touching zero as a timewait expires", 2, 5.5, true, false},
	})
}

// TestForecastLateExpiries: the steady state fits in the range, but the
// ports held now expire too late.
func TestForecastLateExpiries(t *testing.T) {
	ns := namespace()
	ns.Sysctls.PortRange = inventory.PortSpan{Lo: 40000, Hi: 40059}
	ns.Sysctls.Reserved = nil
	for i := range 59 {
		ns.Sockets = append(ns.Sockets, timewait(addrPort("10.0.0.1", 40000+i), "10.0.0.2:80", 59*time.Second))
	}
	d := &Compute(ns).Destinations[0]
	if d.PortsAvailable != 1 || d.Usable != 60 {
		t.Fatalf("available %d of %d, want 1 of 60", d.PortsAvailable, d.Usable)
	}
	checkForecast(t, Forecast, d, []forecastCase{
		{"1/s", 1, 1, true, false},
		{"slower", 1.0 / 64, 0, false, false}, // 1/rate = 64 s > 59 s: the 59 expire first
	})
}

func TestForecastUnknownRemaining(t *testing.T) {
	var socks []inventory.Socket
	for i := range 50 {
		s := timewait(addrPort("10.0.0.1", 40020+i), "10.0.0.2:80", 0)
		s.RemainingKnown = false
		socks = append(socks, s)
	}
	d := &Compute(namespace(socks...)).Destinations[0]
	// 45 free; the 50 are taken to expire at 60 s, the latest they can.
	checkForecast(t, Forecast, d, []forecastCase{
		{"before 60 s", 1, 45, true, false},
		{"after 60 s", 0.5, 0, false, false},
	})
}

// TestForecastWithReuse: on loopback with tcp_tw_reuse=2 a port is reused
// after 1 s, so the 95 usable ports sustain 95 new connections a second.
func TestForecastWithReuse(t *testing.T) {
	var socks []inventory.Socket
	for i := range 10 {
		// Aged 0.5 s: taken over 0.5 s from now.
		socks = append(socks, timewait(addrPort("127.0.0.1", 40020+i), "127.0.0.1:80", TimewaitLen-500*time.Millisecond))
	}
	for i := range 10 {
		// Aged 30 s: reusable now.
		socks = append(socks, timewait(addrPort("127.0.0.1", 40030+i), "127.0.0.1:80", 30*time.Second))
	}
	noTimestamps := timewait("127.0.0.1:40040", "127.0.0.1:80", 30*time.Second)
	noTimestamps.Timestamps = false // expires at 30 s, never reused
	socks = append(socks, noTimestamps)
	ns := namespace(socks...)
	ns.Sysctls.TwReuse = 2
	d := &Compute(ns).Destinations[0]
	if !d.Reuse || d.PortsAvailable != 74 || d.PortsReusable != 10 || d.PortsAvailableWithReuse != 84 {
		t.Fatalf("reuse %v available %d reusable %d with reuse %d, want true 74 10 84",
			d.Reuse, d.PortsAvailable, d.PortsReusable, d.PortsAvailableWithReuse)
	}
	checkForecast(t, ForecastWithReuse, d, []forecastCase{
		// 84/100 = 0.84 ≥ 0.5, then (84+10)/100 = 0.94 < 1 s.
		{"after the young ones age", 100, 0.94, true, true},
		// 84/200 = 0.42 s, before any ages.
		{"before any ages", 200, 0.42, true, true},
		// (84+10)/94 = 1 s: the new ones become reusable as the ports
		// run out. The timewait without timestamps holds until 30 s but
		// the steady state needs only 94 ports.
		{"at the ceiling", 94, 0, false, false},
		{"no new connections", 0, 0, false, false},
	})
	// Without counting on reuse: 74 free.
	checkForecast(t, Forecast, d, []forecastCase{{"without reuse", 100, 0.74, true, true}})
}
