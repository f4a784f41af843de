package agent

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/internal/containertest"
	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/owner"
)

func ownNetns(t *testing.T) uint32 {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return uint32(st.Ino)
}

// A pod run by containerd through its CRI, as a kubelet does: its nc
// loop's series carry the pod's namespace, name and container as the
// OpenTelemetry labels, with exact counts and the per-request gauge. Then
// the CRI hangs (containerd stopped): the agent keeps tracing (the pod's
// second loop is counted, still under its names) and answering.
func TestAgentPodAndCRIOutage(t *testing.T) {
	rt := containertest.Containerd(t)
	dest := testnet.LoopbackServer(t)
	owners, err := owner.New(owner.Options{Endpoint: rt.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(owners.Close)
	r := startAgentIn(t, ownNetns(t), func(c *Config) { c.Owners = owners })
	host, port, _ := net.SplitHostPort(dest)
	loop := fmt.Sprintf(`i=0; while [ $i -lt 20 ]; do nc %s %s </dev/null || exit 1; i=$((i+1)); done`, host, port)
	rt.Pod(t, containertest.PodSpec{Name: "checkout-7d9f", Namespace: "payments", UID: "6f1d2c3b-8a9e-4f70-b1c2-d3e4f5a6b7c8",
		Container: "api", Args: []string{"sh", "-c", loop + "; sleep 5; " + loop + "; sleep 600"}})
	series := func(name string, extra ...string) string {
		l := append([]string{"comm=nc", "daddr=" + host, "dport=" + port, "k8s_container_name=api",
			"k8s_namespace_name=payments", "k8s_pod_name=checkout-7d9f"}, extra...)
		sortLabels(l)
		return name + "{" + joinLabels(l) + "}"
	}
	tw := series("twtrace_timewait_entries_total", "role=client")
	wait := func(n float64) map[string]float64 {
		var got map[string]float64
		if !testnet.WaitFor(30*time.Second, func() bool { got = r.scrape(t); return got[tw] == n }) {
			for k, v := range got {
				if strings.Contains(k, "comm=nc") || strings.HasPrefix(k, "twtrace_losses") {
					t.Logf("%s %v", k, v)
				}
			}
			t.Fatalf("%s = %v, want %v", tw, got[tw], n)
		}
		return got
	}
	got := wait(20)
	if got[series("twtrace_connect_attempts_total")] != 20 || got[series("twtrace_per_request_connections")] != 1 {
		t.Errorf("pod's connect attempts %v, per-request %v; want 20 and 1",
			got[series("twtrace_connect_attempts_total")], got[series("twtrace_per_request_connections")])
	}
	thaw := rt.Freeze(t)
	defer thaw()
	got = wait(40)
	// Counted under the names from the first: the counts made before the
	// CRI was listed waited for the names, not split off without them.
	for k := range got {
		if strings.Contains(k, "comm=nc") && strings.Contains(k, "k8s_pod_name=,") {
			t.Errorf("series without the pod's names: %s", k)
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code := r.status(t, path); code != http.StatusOK {
			t.Errorf("%s answered %d with the CRI hung, want 200", path, code)
		}
	}
}

func joinLabels(l []string) string {
	out := ""
	for i, s := range l {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}
