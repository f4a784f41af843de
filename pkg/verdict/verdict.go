// Package verdict judges what one process does toward one destination over
// a window of tracing: whether it opens a connection per request, and what
// to do about the ports it costs. It is pure: Judge reads Evidence (what
// twtrace counted, see aggregate.Row, and what headroom forecast) and
// returns a Result.
//
// # The per-request verdict
//
// Judge flags a row PerRequest when the process itself opens and closes
// many short, small connections toward one destination, all of:
//
//   - ClientTimewait >= MinConnections (20): enough connections in the
//     window that were opened by the process and closed by it first;
//   - ClientTimewait / Window >= MinRate (2 per second);
//   - median lifetime <= MaxLifetime (1 s);
//   - median bytes (sent plus received) <= MaxBytes (64 KiB).
//
// A median lifetime or byte count that is not known fails its test: Judge
// flags on evidence only. The count and the rate alone also fit a pool
// that rotates many long-lived connections (500 connections retired after
// 2 minutes each close 4 a second); only the lifetime tells the two apart.
// Large transfers justify a connection each; without the byte count that
// cannot be ruled out. A pooled client (few connects, long lifetimes) is
// never flagged, nor is a server: connections it accepted are counted in
// ServerTimewait, not ClientTimewait. Every threshold is inclusive.
//
// # Advice
//
// Result.Advice holds short, actionable sentences, each chosen by the
// evidence, in this order:
//
//   - ConnectErrors > 0: connect() failed with EADDRNOTAVAIL, the
//     destination's ports ran out.
//   - PerRequest: first, when the call site's stack shows a client library
//     or the program is a known proxy (Evidence.Library), its likeliest
//     causes (libraryAdvice); then reuse connections (a pool,
//     keep-alive), the common causes of not reusing them (a client or
//     transport per request, an idle limit per host below the
//     concurrency, bodies not read to EOF and closed — an HTTP client's,
//     left out for a proxy — and "Connection: close"), and letting the
//     server close first, since a TIME_WAIT on the server holds no
//     ephemeral port.
//   - BindErrors > 0 or BoundPorts: bind() before connect() takes the port
//     from every destination; IP_BIND_ADDRESS_NO_PORT, or no bind().
//   - Exhausting, and only then, to a process that uses the destination's
//     ports up (it left a timewait as client, or connect() failed): the
//     stop-gaps, tcp_tw_reuse=1 (unless it applies already) or a wider
//     ip_local_port_range, and what never to do: tcp_tw_recycle, a shorter
//     TIME_WAIT. (A pooled client of the same destination is told nothing.)
//   - ServerTimewait > 0 and ClientTimewait = 0 (a server that closes
//     first): harmless for ports unless tcp_max_tw_buckets is reached;
//     keep-alive if the volume matters.
package verdict

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// PerRequest is the verdict on a process that opens a connection per
// request toward a destination.
const PerRequest = "per-request"

// The thresholds of the PerRequest verdict, all inclusive.
const (
	// MinConnections is the fewest connections, opened and closed first
	// by the process, in a window.
	MinConnections = 20
	// MinRate is the lowest rate of those connections, per second.
	MinRate = 2.0
	// MaxLifetime is the longest median lifetime.
	MaxLifetime = time.Second
	// MaxBytes is the most median bytes (sent plus received) per
	// connection.
	MaxBytes = 64 << 10
)

// Evidence is what twtrace knows of one process toward one destination
// over a window.
type Evidence struct {
	Window time.Duration
	// Connects counts the process's connect() attempts toward the
	// destination.
	Connects uint64
	// ClientTimewait counts the timewaits of connections the process
	// opened and closed first.
	ClientTimewait uint64
	// ServerTimewait counts the timewaits of connections the process
	// accepted and closed first.
	ServerTimewait uint64
	// ConnectErrors counts connect() failures with EADDRNOTAVAIL,
	// BindErrors bind() failures with EADDRINUSE.
	ConnectErrors, BindErrors uint64
	// LifetimeP50 is the median lifetime of the connections, when
	// LifetimeKnown.
	LifetimeP50   time.Duration
	LifetimeKnown bool
	// BytesP50 is the median of bytes sent plus received per connection,
	// when BytesKnown.
	BytesP50   uint64
	BytesKnown bool
	// BoundPorts: the process's sockets toward the destination hold ports
	// from bind().
	BoundPorts bool
	// Exhausting: the destination runs out of ports (a forecast) or has
	// none left.
	Exhausting bool
	// TwReuse: tcp_tw_reuse applies to the destination already.
	TwReuse bool
	// Library is the client library the connections' call site shows
	// ("net/http", "database/sql", "grpc", "libcurl"; pkg/symbol), or "".
	Library string
}

// Result is Judge's answer.
type Result struct {
	// Verdict is PerRequest or "".
	Verdict string
	// Advice holds short sentences, most pressing first; none when there
	// is nothing to do.
	Advice []string
	// Reason is the evidence in numbers, one line, such as "412
	// connections in 10s, closed by itself after 3ms median, 180 B
	// median".
	Reason string
}

// The advice, at most 100 characters each.
const (
	adviceRanOut      = "connect() failed with EADDRNOTAVAIL: this destination's ephemeral ports ran out."
	advicePool        = "Reuse connections to this destination: a connection pool, or HTTP keep-alive."
	adviceNewClient   = "A common cause: a new HTTP client or transport per request; create one and share it."
	adviceIdleLimit   = "A common cause: an idle limit per host below the concurrency (Go: MaxIdleConnsPerHost=2)."
	adviceBody        = "A common cause: response bodies not read to EOF and closed, so connections are not reused."
	adviceClose       = `A common cause: "Connection: close", sent or received.`
	adviceServerClose = "If the protocol allows, let the server close first: its TIME_WAIT holds no ephemeral port."
	adviceBind        = "bind() before connect() takes the port from all destinations: IP_BIND_ADDRESS_NO_PORT or no bind()."
	adviceStopGap     = "Stop-gap only: net.ipv4.tcp_tw_reuse=1 (needs TCP timestamps) or a wider ip_local_port_range."
	adviceWiderRange  = "Stop-gap only: a wider net.ipv4.ip_local_port_range (tcp_tw_reuse applies already)."
	adviceNever       = "Never tcp_tw_recycle (removed in Linux 4.12), never a shorter TIME_WAIT."
	adviceServer      = "TIME_WAIT on a listening port costs no ephemeral port: harmless unless tcp_max_tw_buckets is hit."
	adviceKeepAlive   = "If the volume matters, keep connections alive so clients open fewer of them."
)

// libraryAdvice is the per-request advice for a client library the call
// site shows, its likeliest causes first: it comes before the generic
// list, which stays.
var libraryAdvice = map[string][]string{
	"net/http": {
		"Go net/http: idle pool per host below the concurrency: raise MaxIdleConnsPerHost (default 2).",
		"Go net/http: a new Transport or Client per request: create one and share it.",
		"Go net/http: drain response bodies to EOF and Close them, or the connection is not reused.",
	},
	"database/sql": {
		"Go database/sql: SetMaxIdleConns below the pool's concurrency closes connections: raise it.",
		"Go database/sql: a short SetConnMaxLifetime or SetConnMaxIdleTime closes connections early.",
	},
	"grpc": {
		"gRPC: one ClientConn per target, made once and shared: a dial per request opens a connection each.",
	},
	"libcurl": {
		"libcurl: reuse the easy handle (or a multi/share handle) so its connection cache is kept.",
		"libcurl: no CURLOPT_FORBID_REUSE or CURLOPT_FRESH_CONNECT, which close each connection.",
	},
	// Proxies, known by their executable (Proxy).
	"nginx": {
		"nginx: give the upstream block keepalive N (idle connections kept per worker).",
		`nginx: with it, proxy_http_version 1.1 and proxy_set_header Connection "".`,
	},
	"haproxy": {
		"HAProxy: keep server connections: http-reuse safe (the default), no option httpclose.",
	},
	"envoy": {
		"Envoy: check the cluster's max_requests_per_connection and its idle_timeout.",
	},
}

// proxies are proxies known by their executable's name (a process's
// comm): their connections to upstreams are theirs, whatever their stack
// says, and stripped builds have no stack worth reading.
var proxies = map[string]string{"nginx": "nginx", "haproxy": "haproxy", "envoy": "envoy"}

// Proxy names the proxy a program is by its comm, or "".
func Proxy(comm string) string { return proxies[comm] }

// isProxy: library is a proxy's name (Proxy), not a client library's.
func isProxy(library string) bool { return library != "" && proxies[library] == library }

// Judge returns the verdict on e, the advice it calls for and the reason.
func Judge(e Evidence) Result {
	r := Result{Reason: reason(&e)}
	if perRequest(&e) {
		r.Verdict = PerRequest
	}
	if e.ConnectErrors > 0 {
		r.Advice = append(r.Advice, adviceRanOut)
	}
	if r.Verdict == PerRequest {
		// Flagged on ClientTimewait: the process closed first.
		r.Advice = append(r.Advice, libraryAdvice[e.Library]...)
		if isProxy(e.Library) {
			// A proxy's own settings decide: an HTTP client's causes
			// (a client per request, Go's idle limit, bodies) are not its.
			r.Advice = append(r.Advice, advicePool, adviceClose, adviceServerClose)
		} else {
			r.Advice = append(r.Advice, advicePool, adviceNewClient, adviceIdleLimit, adviceBody, adviceClose, adviceServerClose)
		}
	}
	if e.BindErrors > 0 || e.BoundPorts {
		r.Advice = append(r.Advice, adviceBind)
	}
	if e.Exhausting && (e.ClientTimewait > 0 || e.ConnectErrors > 0) {
		if e.TwReuse {
			r.Advice = append(r.Advice, adviceWiderRange, adviceNever)
		} else {
			r.Advice = append(r.Advice, adviceStopGap, adviceNever)
		}
	}
	if e.ServerTimewait > 0 && e.ClientTimewait == 0 {
		r.Advice = append(r.Advice, adviceServer, adviceKeepAlive)
	}
	return r
}

func perRequest(e *Evidence) bool {
	return e.ClientTimewait >= MinConnections &&
		e.Window > 0 && float64(e.ClientTimewait)/e.Window.Seconds() >= MinRate &&
		e.LifetimeKnown && e.LifetimeP50 <= MaxLifetime &&
		e.BytesKnown && e.BytesP50 <= MaxBytes
}

// reason puts e in one line.
func reason(e *Evidence) string {
	var b strings.Builder
	window := formatDuration(e.Window)
	switch {
	case e.ClientTimewait > 0:
		fmt.Fprintf(&b, "%d connections in %s, closed by itself", e.ClientTimewait, window)
	case e.ServerTimewait > 0:
		fmt.Fprintf(&b, "%d accepted connections in %s, closed by itself", e.ServerTimewait, window)
	case e.Connects > 0:
		fmt.Fprintf(&b, "%d connects in %s, none closed by itself", e.Connects, window)
	default:
		fmt.Fprintf(&b, "no connection closed by itself in %s", window)
	}
	if e.ClientTimewait > 0 || e.ServerTimewait > 0 {
		if e.LifetimeKnown {
			fmt.Fprintf(&b, " after %s median", formatDuration(e.LifetimeP50))
		} else {
			b.WriteString(", lifetime unknown")
		}
		if e.BytesKnown {
			fmt.Fprintf(&b, ", %s median", formatBytes(e.BytesP50))
		}
	}
	if e.ClientTimewait > 0 && e.ServerTimewait > 0 {
		fmt.Fprintf(&b, "; %d accepted connections closed by itself", e.ServerTimewait)
	}
	if e.ConnectErrors > 0 {
		fmt.Fprintf(&b, "; %d connect() EADDRNOTAVAIL", e.ConnectErrors)
	}
	if e.BindErrors > 0 {
		fmt.Fprintf(&b, "; %d bind() EADDRINUSE", e.BindErrors)
	}
	return b.String()
}

// formatDuration rounds d to three significant digits: 3.15ms, not
// 3.145728ms.
func formatDuration(d time.Duration) string {
	unit := time.Duration(1)
	for d >= 1000*unit && unit < time.Second {
		unit *= 10
	}
	return d.Round(unit).String()
}

// formatBytes is b in bytes below 1000, else in KiB, MiB, ... to three
// significant digits (a value that would round to 1000 goes up a unit).
func formatBytes(b uint64) string {
	if b < 1000 {
		return strconv.FormatUint(b, 10) + " B"
	}
	v := float64(b)
	for _, unit := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		v /= 1024
		if v < 999.5 {
			return strconv.FormatFloat(v, 'g', 3, 64) + " " + unit
		}
	}
	return strconv.FormatFloat(v/1024, 'g', 3, 64) + " EiB"
}
