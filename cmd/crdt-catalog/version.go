package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version, when set at build time with -ldflags "-X main.version=v1.2.3",
// names the release; otherwise the module version the go command stamped
// in the binary is reported (a tag for go install module@version, a
// pseudo-version or "(devel)" for a build from a checkout).
var version string

// buildInfo describes the running binary. It is GET /status's "build"
// object, and what "crdt-catalog version" and "-version" print.
type buildInfo struct {
	// Version is the release or module version (see version).
	Version string `json:"version"`
	// Revision and Time are the VCS commit the binary was built from and
	// its time (RFC 3339); empty when the build did not record them (go
	// test, go run of a file list, -buildvcs=false).
	Revision string `json:"revision"`
	Time     string `json:"time"`
	// Modified reports uncommitted changes in the tree it was built from.
	Modified bool `json:"modified"`
	// GoVersion is the Go release that built it; Platform its GOOS/GOARCH.
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
}

// readBuildInfo gathers buildInfo from runtime/debug.ReadBuildInfo.
func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		if b.Version == "" {
			b.Version = "unknown"
		}
		return b
	}
	if b.Version == "" {
		b.Version = bi.Main.Version
	}
	if b.Version == "" {
		b.Version = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// printVersion writes b as "crdt-catalog version" and "-version" show it.
func printVersion(w io.Writer, b buildInfo) error {
	rev, t := b.Revision, b.Time
	if rev == "" {
		rev = "unknown"
	}
	if b.Modified {
		rev += " (modified)"
	}
	if t == "" {
		t = "unknown"
	}
	_, err := fmt.Fprintf(w, "crdt-catalog %s\nrevision: %s\ntime:     %s\ngo:       %s %s\n", b.Version, rev, t, b.GoVersion, b.Platform)
	return err
}
