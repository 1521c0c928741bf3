package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// versionLine describes the binary: the module version and the commit it
// was built from, as the Go toolchain recorded them (go build stamps both
// when it builds inside a git checkout).
func versionLine() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return fmt.Sprintf("segd (no build information) %s %s/%s", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	}
	version := bi.Main.Version
	if version == "" {
		version = "(devel)"
	}
	var revision, when string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	var commit []string
	if revision == "" {
		commit = append(commit, "commit unknown")
	} else {
		commit = append(commit, "commit "+revision)
	}
	if when != "" {
		commit = append(commit, when)
	}
	if modified {
		commit = append(commit, "with uncommitted changes")
	}
	return fmt.Sprintf("segd %s (%s) %s %s %s/%s", version, strings.Join(commit, ", "), bi.Main.Path, bi.GoVersion, runtime.GOOS, runtime.GOARCH)
}
