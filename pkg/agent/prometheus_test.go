package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/testnet"
)

// startPrometheus runs a real Prometheus server on loopback that scrapes
// target every second, and returns its base URL.
func startPrometheus(t *testing.T, bin, target string) string {
	t.Helper()
	dir := t.TempDir()
	conf := fmt.Sprintf(`global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
scrape_configs:
- job_name: twtrace
  static_configs: [{targets: [%q]}]
`, target)
	path := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var log bytes.Buffer
	cmd := exec.Command(bin, "--config.file="+path, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", log.String())
		}
	})
	base := "http://" + addr
	if !testnet.WaitFor(30*time.Second, func() bool {
		resp, err := http.Get(base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) {
		t.Fatalf("prometheus never became ready:\n%s", log.String())
	}
	return base
}

// query evaluates an instant PromQL query and returns the value of each
// series of the result, keyed by its labels' "name=value" joined with
// commas (sorted), "" when it has none.
func query(t *testing.T, base, q string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Status string
		Error  string
		Data   struct {
			Result []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &doc); err != nil || doc.Status != "success" {
		t.Fatalf("query %s: %s %v", q, body, err)
	}
	out := map[string]float64{}
	for _, r := range doc.Data.Result {
		var l []string
		for k, v := range r.Metric {
			if k != "instance" && k != "job" {
				l = append(l, k+"="+v)
			}
		}
		sortLabels(l)
		s, _ := r.Value[1].(string)
		v, _ := strconv.ParseFloat(s, 64)
		out[strings.Join(l, ",")] = v
	}
	return out
}

// The acceptance test: a real Prometheus scrapes the agent while
// a workload churns in a namespace of 94 usable ports, at about 15 new
// connections a second, until the destination runs out and connect()
// fails. Prometheus then holds the workload's exact counters (attempts,
// timewait entries, EADDRNOTAVAIL), the destination's exact headroom
// (none left, 94 timewait sockets of 94 usable), the namespace's usage at
// 1, the per-request verdict, and the forecast it showed on the way.
// promtool finds nothing to say about the exposition.
func TestPrometheusScrapesAgent(t *testing.T) {
	bins := testnet.RequireHost(t, "prometheus", "promtool")
	ns, srv := testnet.NewSmallRange(t, 1)
	r := startAgent(t, ns, nil)
	base := startPrometheus(t, bins[0], r.a.Addr().String())

	dest := srv[0].Dest(false)
	made, failed := 0, 0
	for range 25 { // 125 attempts, ~15/s: the 94 ports run out after ~6 s
		c := testnet.StartClient(t, ns, testnet.ClientSpec{Comm: "churner", Dest: dest, N: 5})
		made, failed = made+len(c.Ports), failed+c.Failures
		time.Sleep(300 * time.Millisecond)
	}
	if made != testnet.SmallRangeUsable || failed != 125-made {
		t.Fatalf("clients made %d connections and %d failures, want %d and %d", made, failed, testnet.SmallRangeUsable, 125-made)
	}
	host, port, _ := strings.Cut(dest, ":")
	w := fmt.Sprintf(`{comm="churner",daddr=%q,dport=%q}`, host, port)
	d := fmt.Sprintf(`{netns="%d",daddr=%q,dport=%q}`, ns.Inode, host, port)
	want := map[string]float64{
		"twtrace_connect_attempts_total" + w:                                        125,
		"twtrace_timewait_entries_total" + w:                                        float64(made),
		"twtrace_connect_errors_total" + w:                                          float64(failed),
		"twtrace_per_request_connections" + w:                                       1,
		"twtrace_destination_timewait_sockets" + d:                                  float64(made),
		"twtrace_destination_ports_available" + d:                                   0,
		"twtrace_destination_ports_usable" + d:                                      testnet.SmallRangeUsable,
		fmt.Sprintf(`twtrace_namespace_port_usage_max_ratio{netns="%d"}`, ns.Inode): 1,
	}
	got := map[string]float64{}
	ok := testnet.WaitFor(30*time.Second, func() bool {
		for q, v := range want {
			res := query(t, base, q)
			if len(res) != 1 {
				return false
			}
			for _, x := range res {
				got[q] = x
			}
			if got[q] != v {
				return false
			}
		}
		return true
	})
	if !ok {
		for q, v := range want {
			t.Errorf("%s = %v, want %v", q, got[q], v)
		}
	}
	// The labels of the workload's timewait series, exactly (Prometheus
	// stores no empty label: this process is in no pod).
	tw := query(t, base, "twtrace_timewait_entries_total"+w)
	wantLabels := fmt.Sprintf("__name__=twtrace_timewait_entries_total,comm=churner,daddr=%s,dport=%s,role=client", host, port)
	if _, ok := tw[wantLabels]; !ok {
		t.Errorf("timewait series %v, want one labelled %s", tw, wantLabels)
	}
	// On the way, the forecast: seconds to exhaustion while ports were
	// left, at most the 94 ports over the ~15/s the churner made.
	fc := query(t, base, "max_over_time(twtrace_destination_exhaustion_seconds"+d+"[5m])")
	if len(fc) != 1 {
		t.Fatalf("no exhaustion forecast was scraped for %s: %v", dest, fc)
	}
	for _, v := range fc {
		if v <= 0 || v > float64(testnet.SmallRangeUsable) {
			t.Errorf("highest forecast %v s, want in (0, 94]", v)
		}
	}
	checkMetrics(t, bins[1], r)
}

// checkMetrics runs promtool check metrics over the agent's exposition.
func checkMetrics(t *testing.T, promtool string, r *running) {
	t.Helper()
	resp, err := http.Get(r.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
