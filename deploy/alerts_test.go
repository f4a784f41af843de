package deploy

import (
	"os/exec"
	"path/filepath"
	"reflect"
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
}
