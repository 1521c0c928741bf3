package api

import (
	"os"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"

	"github.com/segd/segd/engine"
)

// TestOpenAPIMatchesRoutes: docs/openapi.yaml parses and documents exactly
// the routes the handler serves (method and path).
func TestOpenAPIMatchesRoutes(t *testing.T) {
	b, err := os.ReadFile("../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                            `yaml:"openapi"`
		Paths   map[string]map[string]interface{} `yaml:"paths"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			if method != "parameters" {
				documented[strings.ToUpper(method)+" "+path] = true
			}
		}
	}
	cfg := &engine.Config{}
	cfg.EnsureDefaults()
	srv, err := New(newFakeEngine(t), &cfg.API, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	_, patterns := srv.handler()
	served := map[string]bool{}
	for _, p := range patterns {
		method, path, ok := strings.Cut(p, " ")
		if !ok || method == "" {
			continue // the catch-all "/" answering 404
		}
		route := method + " " + strings.Replace(path, "/{$}", "/", 1)
		if route == "GET /ui/" {
			continue // the page's static files
		}
		served[route] = true
	}
	for r := range served {
		if !documented[r] {
			t.Errorf("%s is served but not in docs/openapi.yaml", r)
		}
	}
	for r := range documented {
		if !served[r] {
			t.Errorf("%s is in docs/openapi.yaml but not served", r)
		}
	}
	if len(served) < 10 {
		t.Fatalf("the handler serves only %d routes", len(served))
	}
}
