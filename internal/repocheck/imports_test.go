package repocheck

import (
	"os/exec"
	"sort"
	"strings"
	"testing"
)

// allowedImports is the layering (docs/decisions.md, README "Layout"):
// each package may import only the segd packages listed (its tests
// included, which may use the internal test helpers); imports point one
// way, from the commands down to schemas. A new package must be
// added here, with the place it takes in the order.
var allowedImports = map[string][]string{
	"cmd/segd":             {"tool", "api", "engine", "segment", "connectors", "rules", "state", "schemas", "examples", "internal/gen", "internal/retail", "internal/segdtest"},
	"api":                  {"engine", "segment", "rules", "schemas", "internal/gen", "internal/segdtest"},
	"tool":                 {"segment", "rules", "state", "schemas", "internal/kpart", "internal/retail", "internal/eventtest", "internal/gen", "engine"},
	"segment":              {"rules", "state", "schemas", "internal/eventtest", "internal/gen", "internal/prefetch"},
	"internal/kpart":       {},
	"internal/eventtest":   {"schemas"},
	"bench/cmd/segd-bench": {"tool", "engine", "segment", "connectors", "rules", "state", "schemas", "internal/gen", "bench/membership"},
	"bench/membership":     {},
	"engine":               {"segment", "connectors", "rules", "state", "schemas", "internal/kpart", "internal/eventtest", "internal/envconf", "internal/retail", "internal/faultfs", "internal/gen", "internal/segdtest", "internal/handoff"},
	"internal/envconf":     {},
	"internal/segdtest":    {"connectors"},
	"connectors":           {"schemas", "internal/kpart"},
	"rules":                {"schemas", "internal/prefetch"},
	"state":                {"internal/faultfs", "internal/handoff"},
	"schemas":              {},
	"examples":             {},
	"internal/gen":         {"schemas"},
	"internal/retail":      {"schemas"},
	"internal/faultfs":     {},
	"internal/prefetch":    {},
	"internal/handoff":     {},
	"internal/repocheck":   {"internal/retail"},
}

const module = "github.com/segd/segd/"

// TestImportsPointOneWay lists every package's imports (test files
// included) with go list and fails on an import the layering does not
// allow, or on a package it does not know.
func TestImportsPointOneWay(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}|{{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}`, "../../...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	var bad []string
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, "|")
		pkg = strings.TrimPrefix(pkg, module)
		allowed, known := allowedImports[pkg]
		if !known {
			bad = append(bad, pkg+": a package the layering does not know (add it to allowedImports)")
			continue
		}
		seen++
		ok := map[string]bool{pkg: true}
		for _, a := range allowed {
			ok[a] = true
		}
		for _, imp := range strings.Fields(imports) {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			if dep := strings.TrimPrefix(imp, module); !ok[dep] {
				bad = append(bad, pkg+" imports "+dep)
			}
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		t.Fatalf("imports against the layering:\n%s", strings.Join(bad, "\n"))
	}
	if seen < 10 {
		t.Fatalf("go list gave only %d packages", seen)
	}
}

// TestSegmentHasNoTransport: the per-partition core depends on no Kafka
// client, and imports neither Prometheus nor HTTP itself (Pebble, under
// state, brings Prometheus's histograms along), so every front end can use
// it as is.
func TestSegmentHasNoTransport(t *testing.T) {
	goList := func(args ...string) []string {
		out, err := exec.Command("go", append([]string{"list"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("go list: %v\n%s", err, out)
		}
		return strings.Fields(string(out))
	}
	deps := goList("-deps", "../../segment")
	if len(deps) < 10 {
		t.Fatalf("go list -deps gave %d packages", len(deps))
	}
	for _, d := range deps {
		if strings.HasPrefix(d, "github.com/segmentio/kafka-go") || strings.HasPrefix(d, "github.com/twmb/franz-go") || d == module+"connectors" {
			t.Errorf("segment depends on %s", d)
		}
	}
	for _, imp := range goList("-f", `{{join .Imports " "}}`, "../../segment") {
		if strings.HasPrefix(imp, "github.com/prometheus/") || strings.HasPrefix(imp, "net/") {
			t.Errorf("segment imports %s", imp)
		}
	}
}

// TestAPIStaysAFrontEnd: the engine does not know the HTTP API (api
// imports engine, never the reverse), and the API and the offline tools
// do not import each other.
func TestAPIStaysAFrontEnd(t *testing.T) {
	for pkg, never := range map[string]string{"engine": "api", "api": "tool", "tool": "api"} {
		for _, imp := range allowedImports[pkg] {
			if imp == never {
				t.Errorf("allowedImports lets %s import %s", pkg, never)
			}
		}
	}
}

// TestOfflineToolsDoNotImportTheEngine: tool's code runs on files and
// stopped state without the live pipeline (its tests may compare with it).
func TestOfflineToolsDoNotImportTheEngine(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{join .Imports " "}}`, "../../tool").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), module+"segment") {
		t.Fatalf("go list gave %q", out)
	}
	for _, imp := range strings.Fields(string(out)) {
		if imp == module+"engine" || imp == module+"connectors" {
			t.Errorf("tool imports %s", imp)
		}
	}
}
