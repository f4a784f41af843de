package deploy

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"sort"
	"testing"
)

// dashboard is the part of Grafana's dashboard model the tests read.
type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Title      string      `json:"title"`
	Type       string      `json:"type"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a row's, when collapsed
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile("grafana/twtrace.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("grafana/twtrace.json: %v", err)
	}
	return d
}

// Grafana's label_values(selector, label) in a variable's query.
var labelValues = regexp.MustCompile(`^label_values\((.*),\s*(\w+)\)$`)

func TestDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Error("no uid or title")
	}
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
		if v.Type == "datasource" {
			continue
		}
		// A plain string: every Grafana version reads it (newer ones
		// migrate it to their query editor's object).
		var q string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Errorf("variable %s: %v", v.Name, err)
			continue
		}
		m := labelValues.FindStringSubmatch(q)
		if m == nil {
			t.Errorf("variable %s: %q is not label_values(selector, label)", v.Name, q)
			continue
		}
		checkMetrics(t, "variable "+v.Name, m[1])
	}
	sort.Strings(vars)
	if want := []string{"datasource", "namespace", "node", "pod"}; !slices.Equal(vars, want) {
		t.Errorf("variables %v, want %v", vars, want)
	}

	var titles []string
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			titles = append(titles, p.Title)
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q does not use the datasource variable", p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				checkMetrics(t, "panel "+p.Title, tg.Expr)
				if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
					t.Errorf("a query of panel %q does not use the datasource variable", p.Title)
				}
			}
		}
	}
	walk(d.Panels)
	want := []string{
		"Port usage per namespace",
		"Exhaustion forecast",
		"Destinations with least headroom",
		"Connect attempts by workload",
		"TIME_WAIT entries by workload",
		"connect() EADDRNOTAVAIL",
		"Per-request workloads",
		"Call sites of per-request workloads",
		"Losses",
	}
	if !slices.Equal(titles, want) {
		t.Errorf("panels %q, want %q", titles, want)
	}
}
