package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"

	"github.com/twtrace/twtrace/internal/testnet"
)

const (
	ruleFile      = "prometheus/rules.yml"
	ruleTestsFile = "prometheus/rules_test.yml"
)

func prometheusRule(t *testing.T) monitoringv1.PrometheusRule {
	t.Helper()
	var pr monitoringv1.PrometheusRule
	mustDecode(t, filepath.Join(manifests, "prometheusrule.yaml"), &pr)
	return pr
}

// The plain rule file (where promtool runs) and the PrometheusRule
// (what the operator loads) hold the same groups.
func TestRuleFileIsThePrometheusRule(t *testing.T) {
	var file monitoringv1.PrometheusRuleSpec
	mustDecode(t, ruleFile, &file)
	if spec := prometheusRule(t).Spec; !reflect.DeepEqual(file, spec) {
		t.Errorf("%s and prometheusrule.yaml's spec differ:\n%+v\n%+v", ruleFile, file, spec)
	}
}

// The shipped alerts, each with its severity and how long it must hold,
// and every expression naming only metrics the agent exports.
func TestAlerts(t *testing.T) {
	type alert struct{ severity, hold string }
	want := map[string]alert{
		"TwtraceDestinationExhaustionSoon": {"critical", "1m"},
		"TwtraceConnectAddrNotAvail":       {"critical", ""},
		"TwtracePortUsageHigh":             {"warning", "2m"},
		"TwtracePerRequestConnections":     {"info", "10m"},
		"TwtraceLosingEvents":              {"warning", ""},
	}
	groups := prometheusRule(t).Spec.Groups
	if len(groups) != 1 || groups[0].Name != "twtrace" {
		t.Fatalf("groups %+v, want one named twtrace", groups)
	}
	got := map[string]alert{}
	for _, r := range groups[0].Rules {
		if r.Alert == "" {
			t.Errorf("a rule that is no alert: %+v", r)
			continue
		}
		var hold string
		if r.For != nil {
			hold = string(*r.For)
		}
		got[r.Alert] = alert{r.Labels["severity"], hold}
		checkMetrics(t, r.Alert, r.Expr.String())
		for _, a := range []string{"summary", "description"} {
			if r.Annotations[a] == "" {
				t.Errorf("%s has no %s", r.Alert, a)
			}
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("alerts %v, want %v", got, want)
	}
}

// promtool checks the rule file and runs its unit tests: every alert
// fires on series that must fire it and stays quiet on series that must
// not.
func TestPromtool(t *testing.T) {
	promtool := testnet.RequireHost(t, "promtool")[0]
	for _, args := range [][]string{
		{"check", "rules", ruleFile},
		{"test", "rules", ruleTestsFile},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
	// The dashboard's queries are PromQL too: promtool parses them as
	// recording rules, Grafana's variables given values.
	rules := dashboardAsRules(t, readDashboard(t))
	out, err := exec.Command(promtool, "check", "rules", rules).CombinedOutput()
	if err != nil {
		t.Errorf("promtool check rules (the dashboard's queries): %v\n%s", err, out)
	}
}

// dashboardAsRules writes a rule file with one recording rule per query of
// the dashboard and returns its path.
func dashboardAsRules(t *testing.T, d dashboard) string {
	t.Helper()
	values := strings.NewReplacer("$__rate_interval", "5m", "$node", ".*", "$namespace", ".*", "$pod", ".*")
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rule
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for _, tg := range p.Targets {
				rules = append(rules, rule{fmt.Sprintf("dashboard:query_%d", len(rules)), values.Replace(tg.Expr)})
			}
		}
	}
	walk(d.Panels)
	file := map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}}
	data, err := json.Marshal(file) // JSON is YAML
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard.yml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
