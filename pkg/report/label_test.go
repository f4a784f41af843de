package report

import (
	"strings"
	"testing"

	"github.com/twtrace/twtrace/pkg/workload"
)

// A folded row names its processes and their parent; what owns them is
// said when the row is not named after it; every name is escaped.
func TestLabel(t *testing.T) {
	for _, tc := range []struct {
		row          Row
		label, whose string
	}{
		{Row{Comm: "curl", Workload: "curl", ProcessCount: 1}, "curl", ""},
		{Row{Comm: "curl", Workload: "curl", ProcessCount: 300, PPID: 4242, ParentComm: "loop.sh"}, "curl ×300", "← loop.sh 4242"},
		{Row{Comm: "curl", Workload: "curl", ProcessCount: 2, PPID: 7}, "curl ×2", "← 7"},
		{Row{Comm: "nc", Workload: "nc", ProcessCount: 20, PPID: 9, ParentComm: "sh",
			Identity: workload.Identity{ContainerID: strings.Repeat("ab", 32), Pod: "checkout", PodNamespace: "payments", Container: "api"}},
			"nc ×20", "← sh 9 in payments/checkout/api"},
		{Row{Comm: "nc", Workload: "payments/checkout/api", ProcessCount: 20,
			Identity: workload.Identity{Pod: "checkout", PodNamespace: "payments", Container: "api"}}, "payments/checkout/api ×20", ""},
		{Row{Comm: "x", Workload: "x", ProcessCount: 1, Identity: workload.Identity{Unit: "evil\x1b[2J.service"}}, "x", `in evil\x1b[2J.service`},
		{Row{Comm: "x", Workload: "pod\n\x00", ProcessCount: 1}, `pod\x0a\x00`, ""},
		{OtherRow(), "(other)", ""},
	} {
		if got := tc.row.Label(); got != tc.label {
			t.Errorf("Label(%+v) = %q, want %q", tc.row, got, tc.label)
		}
		if got := tc.row.Whose(); got != tc.whose {
			t.Errorf("Whose(%+v) = %q, want %q", tc.row, got, tc.whose)
		}
	}
}

func TestOwner(t *testing.T) {
	id := strings.Repeat("3f", 32)
	for _, tc := range []struct {
		id   workload.Identity
		want string
	}{
		{workload.Identity{}, ""},
		{workload.Identity{ContainerID: id, ContainerRuntime: "containerd"}, "containerd 3f3f3f3f3f3f"},
		{workload.Identity{ContainerID: id}, "3f3f3f3f3f3f"},
		{workload.Identity{PodUID: "u-1"}, "pod u-1"},
		{workload.Identity{PodUID: "u-1", Pod: "p", PodNamespace: "ns"}, "ns/p"},
		{workload.Identity{ContainerID: id, Pod: "p", PodNamespace: "ns", Container: "c"}, "ns/p/c"},
		{workload.Identity{Unit: "cron.service"}, "cron.service"},
	} {
		if got := Owner(&tc.id); got != tc.want {
			t.Errorf("Owner(%+v) = %q, want %q", tc.id, got, tc.want)
		}
	}
}
