package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/live"
	"github.com/twtrace/twtrace/pkg/load"
)

// sumOf sums the samples of one family in a scrape, and counts them.
func sumOf(got map[string]float64, name string) (sum float64, n int) {
	for k, v := range got {
		if strings.HasPrefix(k, name+"{") {
			sum += v
			n++
		}
	}
	return sum, n
}

// The cardinality check: 3,000 distinct process names (one
// process renaming itself before each connection) toward 200
// destinations, with --max-series 100 and --max-destinations 50. Every
// family stays within 100 pairs plus one comm="other"; not a connection is
// lost (the sums are exact); the losses say how much folded; the
// destinations are counted and 50 exposed.
func TestAgentCardinality(t *testing.T) {
	ns := testnet.New(t)
	ns.Park(t)
	ns.Sysctl(t, "ipv4/tcp_rfc1337", "1")
	srv := testnet.StartServer(t, ns, "0.0.0.0", testnet.ServerReadEOF)
	var dests []string
	for i := range 200 {
		dests = append(dests, fmt.Sprintf("127.0.%d.%d:%d", 1+i/250, 1+i%250, srv.Addr.Port()))
	}
	r := startAgent(t, ns, func(c *Config) { c.MaxSeries, c.MaxDestinations = 100, 50 })
	const n = 3000
	c := testnet.StartClient(t, ns, testnet.ClientSpec{Comm: "w", Rename: true, Dests: dests, N: n})
	if len(c.Ports) != n {
		t.Fatalf("client made %d connections, want %d", len(c.Ports), n)
	}
	var got map[string]float64
	ok := testnet.WaitFor(30*time.Second, func() bool {
		got = r.scrape(t)
		tw, _ := sumOf(got, "twtrace_timewait_entries_total")
		conn, _ := sumOf(got, "twtrace_connect_attempts_total")
		return tw == n && conn == n && got["twtrace_destinations{}"] == 200
	})
	tw, twSeries := sumOf(got, "twtrace_timewait_entries_total")
	conn, connSeries := sumOf(got, "twtrace_connect_attempts_total")
	if !ok {
		t.Fatalf("sums: %v timewait, %v connects, %v destinations; want %d, %d, 200", tw, conn, got["twtrace_destinations{}"], n, n)
	}
	if twSeries > 101 || connSeries > 101 || got["twtrace_workload_series{}"] > 101 {
		t.Errorf("%d timewait and %d connect series, workload_series %v: want at most 101", twSeries, connSeries, got["twtrace_workload_series{}"])
	}
	if _, destSeries := sumOf(got, "twtrace_destination_timewait_sockets"); destSeries != 50 {
		t.Errorf("%d destinations exposed, want 50", destSeries)
	}
	other := workloadSeries("twtrace_timewait_entries_total", "other", ":", "role=client")
	named := tw - got[other]
	// The engine keeps live.DefaultMaxKeys (process, destination) rows and
	// folds the timewaits of the rest (folded_events); of its rows, 100
	// are series, the others fold here with their timewait and connect
	// attempt each (folded_series).
	rows := live.DefaultMaxKeys
	if named != 100 || got[other] != n-100 || twSeries != 101 ||
		got["twtrace_losses_total{kind=folded_events}"] != float64(n-rows) ||
		got["twtrace_losses_total{kind=folded_series}"] != float64(2*(rows-100)) {
		t.Errorf("%v timewaits named over %d series, %v in other; losses folded_events %v, folded_series %v; want 100 over 101, %d, %d, %d",
			named, twSeries, got[other], got["twtrace_losses_total{kind=folded_events}"], got["twtrace_losses_total{kind=folded_series}"],
			n-100, n-rows, 2*(rows-100))
	}
}

// vanishingNamespace makes a namespace with a listener and a few
// connections in timewait, keeps it for life, then lets it go: the thread
// that holds it exits.
func vanishingNamespace(life time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the namespace
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		if err := load.LoopbackUp(); err != nil {
			errc <- err
			return
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			errc <- err
			return
		}
		for range 5 {
			if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
				c.Close()
			}
		}
		time.Sleep(life)
		ln.Close()
		errc <- nil
	}()
	return <-errc
}

// The faults: namespaces that vanish while the agent scans every
// namespace, clients that send half a request and wait, clients that never
// read, a flood of scrapes. The agent answers every scrape (200, or 503
// beyond its concurrent-scrape limit), cuts the stalled clients off, logs
// no inventory error, and still counts a churn afterwards exactly.
func TestAgentFaults(t *testing.T) {
	var log testnet.SyncBuffer
	r := startAgentIn(t, 0, func(c *Config) { c.Log = slog.New(slog.NewTextHandler(&log, nil)) })
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := vanishingNamespace(150 * time.Millisecond); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	host := r.a.Addr().String()
	var stalled []net.Conn
	for i := range 40 {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		req := "GET /metrics HTTP/1.1\r\nHost: x\r\n" // half a request
		if i%2 == 1 {
			req += "\r\n" // a whole one, never read
		}
		c.Write([]byte(req))
		stalled = append(stalled, c)
	}
	codes := flood(t, r.url, 20, 10)
	if codes[http.StatusOK] == 0 || codes[http.StatusOK]+codes[http.StatusServiceUnavailable] != 200 {
		t.Errorf("scrape flood answered %v, want 200 or 503 to each of 200, some 200", codes)
	}
	time.Sleep(3 * time.Second) // frames go on with namespaces vanishing
	close(stop)
	wg.Wait()
	// The half-request clients are cut off after the header timeout.
	for i := 0; i < len(stalled); i += 2 {
		stalled[i].SetReadDeadline(time.Now().Add(readHeaderTimeout + 5*time.Second))
		line, err := bufio.NewReader(stalled[i]).ReadString('\n')
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("a client that sent half a request was not cut off: %v", err)
			break
		}
		_ = line
	}
	for _, c := range stalled {
		c.Close()
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code := r.status(t, path); code != http.StatusOK {
			t.Errorf("%s answered %d, want 200", path, code)
		}
	}
	if strings.Contains(log.String(), "msg=inventory") {
		t.Errorf("inventory errors logged for vanished namespaces:\n%s", log.String())
	}
	ns, srv := testnet.NewSmallRange(t, 1)
	testnet.StartClient(t, ns, testnet.ClientSpec{Comm: "afterflood", Dest: srv[0].Dest(false), N: 20})
	name := workloadSeries("twtrace_timewait_entries_total", "afterflood", srv[0].Dest(false), "role=client")
	if !testnet.WaitFor(20*time.Second, func() bool { return r.scrape(t)[name] == 20 }) {
		t.Errorf("%s != 20 after the faults", name)
	}
}

// flood makes workers x each concurrent scrapes and counts the answers'
// status codes.
func flood(t *testing.T, url string, workers, each int) map[int]int {
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				resp, err := http.Get(url + "/metrics")
				code := 0
				if err == nil {
					code = resp.StatusCode
					var sink bytes.Buffer
					sink.ReadFrom(resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return codes
}
