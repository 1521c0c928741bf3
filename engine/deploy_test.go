package engine

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/segd/segd/rules"
)

// TestDashboardUsesRealMetrics: every metric the Grafana dashboard queries
// is one the engine defines, so a renamed metric breaks this test, not a
// dashboard in production.
func TestDashboardUsesRealMetrics(t *testing.T) {
	b, err := os.ReadFile("../deploy/grafana/segd-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	used := 0
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			used += checkMetricsDefined(t, "panel "+p.Title, tg.Expr)
		}
	}
	if len(dash.Panels) < 10 || used < 10 {
		t.Fatalf("dashboard has %d panels and %d metric references", len(dash.Panels), used)
	}
}

// definedMetrics are the metric names a real engine registers (New
// touches no broker): a metric defined but never registered does not count.
func definedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	cfg, _ := jsonTestConfig(t, []string{"127.0.0.1:1"})
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	eng, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	defined := eng.m.reg.metricNames()
	if len(defined) < 40 || !defined["segd_events_applied_total"] {
		t.Fatalf("the engine registers %d metrics: %v", len(defined), defined)
	}
	return defined
}

// checkMetricsDefined fails for every segd metric expr uses that the
// engine does not define, and returns how many it uses.
func checkMetricsDefined(t *testing.T, where, expr string) int {
	t.Helper()
	defined := definedMetrics(t)
	used := 0
	for _, n := range regexp.MustCompile(`segd_[a-z_]+`).FindAllString(expr, -1) {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")
		if !defined[base] {
			t.Errorf("%s queries %s, which the engine does not define", where, n)
		}
		used++
	}
	return used
}

// TestAlertsUseRealMetrics: the shipped Prometheus alerting rules parse,
// each has a severity and a summary, and every metric they query exists.
func TestAlertsUseRealMetrics(t *testing.T) {
	b, err := os.ReadFile("../deploy/prometheus/segd-alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("segd-alerts.yaml: %v", err)
	}
	n := 0
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %+v lacks a name, expression, severity or summary", r)
			}
			if checkMetricsDefined(t, "alert "+r.Alert, r.Expr) == 0 {
				t.Errorf("alert %s queries no segd metric", r.Alert)
			}
		}
	}
	if n < 5 {
		t.Fatalf("%d alerting rules", n)
	}
}

// TestDeployConfigsAreValid: the configs shipped in deploy/ pass segd's own
// validation, and the rules in the Kubernetes ConfigMap compile.
func TestDeployConfigsAreValid(t *testing.T) {
	b, err := os.ReadFile("../deploy/k8s/configmap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, path := range map[string]string{"k8s": filepath.Join(dir, "segd.yaml"), "compose": "../deploy/compose/segd.yaml"} {
		if name == "k8s" {
			if err := os.WriteFile(path, []byte(cm.Data["segd.yaml"]), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := LoadConfig(path, nil); err != nil {
			t.Errorf("%s config: %v", name, err)
		}
	}
	if _, err := rules.Compile("configmap rules.yaml", []byte(cm.Data["rules.yaml"])); err != nil {
		t.Errorf("ConfigMap rules: %v", err)
	}
}
