package headroom

import "time"

// Forecast returns in how many seconds connect() toward d runs out of
// ports if, from now on, ports enter TIME_WAIT toward d at rate per second,
// each held TimewaitLen. ok is false when it never does.
//
// At t seconds from now the free ports are
//
//	avail(t) = PortsAvailable + expired(t) − rate·min(t, TimewaitLen)
//
// where expired(t) counts the timewait ports held now (those counted
// against PortsAvailable) whose Remaining is at most t; a Remaining that is
// unknown is taken as TimewaitLen, the longest. Ports held by other sockets
// (PortsHeldOpen) stay held, and bound ports are out of Usable for good.
// Past TimewaitLen the new ports expire as fast as they are taken, so the
// ports held settle at rate·TimewaitLen + PortsHeldOpen and avail stops
// falling.
//
// The result is the first moment avail reaches zero and falls on: the
// least t with avail below zero just after t. It is computed exactly,
// segment by segment between the sorted expiries. So:
//
//   - it is 0 when PortsAvailable is 0 and rate > 0: connect() fails now,
//     whatever expires next;
//   - when avail touches zero at the instant a timewait expires, or at
//     TimewaitLen in the steady state, that is not running out;
//   - ok is false when rate is not positive, or avail never drops below
//     zero. rate·TimewaitLen + PortsHeldOpen <= Usable is necessary for
//     that (the steady state) but not enough: ports held now that expire
//     late can run the destination out before.
//
// Forecast does not count on tcp_tw_reuse; see ForecastWithReuse.
func Forecast(d *Destination, rate float64) (seconds float64, ok bool) {
	return runOut(d.PortsAvailable, d.expiries, TimewaitLen, rate)
}

// ForecastWithReuse is Forecast for a destination where tcp_tw_reuse
// applies, with Forecast's result when d.Reuse is false. Now
// PortsAvailableWithReuse ports are free; a timewait port held now frees
// once it can be taken over (its age reaches the reuse delay), or when it
// expires if it cannot (no timestamps, substate FIN_WAIT2, Remaining
// unknown); each new port is held the reuse delay, at most TimewaitLen.
// That assumes the new connections negotiate TCP timestamps, as those
// before them did for reuse to apply; a peer that does not leaves
// Forecast's answer.
func ForecastWithReuse(d *Destination, rate float64) (seconds float64, ok bool) {
	if !d.Reuse {
		return Forecast(d, rate)
	}
	// The first PortsReusable release times are the zeros of the ports
	// free already, counted in PortsAvailableWithReuse.
	takeable := d.takeable[min(max(d.PortsReusable, 0), len(d.takeable)):]
	return runOut(d.PortsAvailableWithReuse, takeable, d.reuseHold, rate)
}

// runOut is the first t at which free + released(t) − rate·min(t, hold)
// drops below zero, released(t) being the number of times in the sorted
// releases that are at most t.
func runOut(free int, releases []time.Duration, hold time.Duration, rate float64) (float64, bool) {
	if !(rate > 0) { // NaN too
		return 0, false
	}
	if free <= 0 {
		return 0, true
	}
	h := hold.Seconds()
	released := 0
	start := 0.0
	for {
		// On [start, end) avail falls linearly from free+released−rate·start.
		for released < len(releases) && releases[released].Seconds() <= start {
			released++
		}
		end := h
		if released < len(releases) {
			end = min(end, releases[released].Seconds())
		}
		if t := float64(free+released) / rate; t < end {
			return max(t, start), true
		}
		if end >= h {
			return 0, false
		}
		start = end
	}
}
