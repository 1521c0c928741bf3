package api

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segd/segd/internal/gen"
)

// chromium finds Debian's headless browser. `make test` installs it
// (scripts/install-chromium.sh) and sets SEGD_UI_TEST=1, so there a
// missing browser fails the test instead of skipping it.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("SEGD_UI_TEST") != "" {
		t.Fatal("chromium not found; scripts/install-chromium.sh installs it")
	}
	t.Skip("chromium not installed (make test installs it)")
	return ""
}

// TestPageInHeadlessChromium loads the built-in page in a real headless
// Chromium against an engine with state, checks that the segment table is
// filled in by the page's JavaScript, and saves a screenshot.
func TestPageInHeadlessChromium(t *testing.T) {
	browser := chromium(t)
	dir := t.TempDir()
	eng, api, l := localServerWith(t, nil)
	feedGenerated(t, l, gen.Config{Customers: 500, Duration: 3 * 86400_000, EventsPerHour: 300})
	sizes := segmentSizes(t, eng)
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()

	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
			"--user-data-dir=" + filepath.Join(dir, "chrome"), "--virtual-time-budget=4000"}
		out, err := exec.CommandContext(ctx, browser, append(append(base, args...), srv.URL+"/")...).Output()
		if err != nil {
			t.Fatalf("chromium %v: %v", args, err)
		}
		return string(out)
	}
	dom := run("--dump-dom")
	rows := regexp.MustCompile(`<tr data-segment="([a-z_0-9]+)"><td>[a-z_0-9]+</td><td>[^<]*</td><td class="num">(\d+)</td>`).FindAllStringSubmatch(dom, -1)
	if len(rows) != 12 {
		t.Fatalf("the page shows %d segment rows, want 12 (examples/rules.yaml):\n%s", len(rows), dom)
	}
	nonEmpty := 0
	for _, r := range rows {
		if n := sizes[r[1]].Size; r[2] != "0" {
			nonEmpty++
			if want := strings.TrimSpace(r[2]); want != itoa(n) {
				t.Errorf("segment %s shows size %s, the store has %d", r[1], r[2], n)
			}
		}
	}
	if nonEmpty == 0 {
		t.Fatal("every segment shows size 0: the page shows nothing real")
	}
	if !strings.Contains(dom, "<polyline") || !strings.Contains(dom, "rules: version 1") {
		t.Error("the page lacks its sparklines or the rules line")
	}
	// The changes just produced show in the 1h columns.
	e1 := sizes["new_customer"].Enters1h
	if e1 == 0 || !strings.Contains(dom, `<td class="num">`+itoa(e1)+`</td>`) {
		t.Errorf("new_customer entered %d times in the last hour; the page does not show it", e1)
	}
	shot := os.Getenv("SEGD_ARTIFACTS")
	if shot == "" {
		shot = filepath.Join(os.TempDir(), "segd-artifacts")
	}
	if err := os.MkdirAll(shot, 0o755); err != nil {
		t.Fatal(err)
	}
	png := filepath.Join(shot, "ui-segments.png")
	run("--screenshot="+png, "--window-size=1280,900")
	b, err := os.ReadFile(png)
	if err != nil || len(b) < 1000 || string(b[1:4]) != "PNG" {
		t.Fatalf("screenshot %s: %d bytes, %v", png, len(b), err)
	}
	t.Logf("screenshot: %s (%d bytes)", png, len(b))
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestPageWithTokenInHeadlessChromium: with API tokens configured the
// page shows nothing without one, and everything with one: the token
// comes from the tab's sessionStorage (set here by a helper page of the
// test on the same origin, as typing it into the box does) and goes in
// the Authorization header.
func TestPageWithTokenInHeadlessChromium(t *testing.T) {
	browser := chromium(t)
	dir := t.TempDir()
	eng, srv0, l := localServerWith(t, withTokens)
	feedGenerated(t, l, gen.Config{Customers: 300, Duration: 2 * 86400_000, EventsPerHour: 200})
	sizes := segmentSizes(t, eng)
	api := srv0.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/test-login" {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(w, `<script>sessionStorage.setItem("segd-token", %q); location.replace("/");</script>`, r.URL.Query().Get("token"))
			return
		}
		api.ServeHTTP(w, r)
	}))
	defer srv.Close()
	dump := func(profile, path string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
			"--user-data-dir="+filepath.Join(dir, profile), "--virtual-time-budget=4000", "--dump-dom", srv.URL+path).Output()
		if err != nil {
			t.Fatalf("chromium: %v", err)
		}
		return string(out)
	}
	rowRE := regexp.MustCompile(`<tr data-segment="([a-z_0-9]+)"><td>[a-z_0-9]+</td><td>[^<]*</td><td class="num">(\d+)</td>`)
	dom := dump("anon", "/")
	if n := len(rowRE.FindAllString(dom, -1)); n != 0 || !strings.Contains(dom, "cannot load segments: missing or wrong bearer token") {
		t.Fatalf("without a token the page shows %d segment rows:\n%s", n, dom)
	}
	dom = dump("reader", "/test-login?token="+readToken)
	rows := rowRE.FindAllStringSubmatch(dom, -1)
	if len(rows) != 12 {
		t.Fatalf("with a read token the page shows %d segment rows, want 12:\n%s", len(rows), dom)
	}
	for _, r := range rows {
		if n := sizes[r[1]].Size; r[2] != itoa(n) {
			t.Errorf("segment %s shows size %s, the store has %d", r[1], r[2], n)
		}
	}
	if strings.Count(dom, `class="export"`) != 12 || !strings.Contains(dom, "rules: version 1") {
		t.Error("the page lacks its export buttons or the rules line")
	}
}
