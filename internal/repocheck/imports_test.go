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
	"cmd/segd":             {"engine", "connectors", "rules", "state", "schemas", "examples", "internal/gen", "internal/retail", "internal/segdtest"},
	"bench/cmd/segd-bench": {"engine", "connectors", "rules", "state", "schemas", "internal/gen", "bench/membership"},
	"bench/membership":     {},
	"engine":               {"connectors", "rules", "state", "schemas", "internal/envconf", "internal/retail", "internal/faultfs", "internal/gen", "internal/segdtest"},
	"internal/envconf":     {},
	"internal/segdtest":    {"connectors"},
	"connectors":           {"schemas"},
	"rules":                {"schemas"},
	"state":                {"internal/faultfs"},
	"schemas":              {},
	"examples":             {},
	"internal/gen":         {"schemas"},
	"internal/retail":      {"schemas"},
	"internal/faultfs":     {},
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
