package watch

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/workload"
)

// Every event line carries what owns its process, always every field,
// valid JSON however hostile the names (cgroup paths and pod names are
// chosen by whoever runs the workload).
func TestAppendJSONIdentity(t *testing.T) {
	e := event.Event{Kind: event.KindConnectError, PID: 7, Daddr: netip.MustParseAddr("10.0.0.1"), Dport: 80}
	hostile := "a\x00b\x1b[2J\"\\\xff" + strings.Repeat("x", 4096)
	for _, id := range []workload.Identity{
		{},
		{Cgroup: "/kubepods/besteffort/pod1/" + hostile, ContainerID: "3f2a", ContainerRuntime: "containerd",
			PodUID: "1", Pod: hostile, PodNamespace: "payments", Container: "api", Unit: ""},
	} {
		line := appendJSON(nil, &e, &id)
		if !strings.HasSuffix(string(line), "}\n") {
			t.Fatalf("line does not end with }\\n: %q", line)
		}
		var got map[string]any
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatalf("invalid JSON %q: %v", line, err)
		}
		want := map[string]string{
			"container_id": id.ContainerID, "container_runtime": id.ContainerRuntime, "pod_uid": id.PodUID,
			"pod_namespace": id.PodNamespace, "container": id.Container, "unit": id.Unit,
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %q, want %q", k, got[k], v)
			}
		}
		for _, k := range []string{"pod", "cgroup"} {
			if _, ok := got[k]; !ok {
				t.Errorf("no %q field", k)
			}
		}
		if got["pid"] != float64(7) || got["event"] != "connect_error" {
			t.Errorf("event fields lost: %v", got)
		}
	}
}
