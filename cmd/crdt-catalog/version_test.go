package main

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
)

// TestVersion_SubcommandAndFlagAgree: "version" and "-version" print the
// same lines: the version, the VCS revision and time, the Go release.
func TestVersion_SubcommandAndFlagAgree(t *testing.T) {
	var outs []string
	for _, args := range [][]string{{"version"}, {"-version"}, {"-data", t.TempDir(), "-version"}} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), args, &stdout, &stderr, func(string) string { return "" }); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, stderr.String())
		}
		outs = append(outs, stdout.String())
	}
	if outs[0] != outs[1] || outs[0] != outs[2] {
		t.Fatalf("version and -version differ:\n%s\n%s\n%s", outs[0], outs[1], outs[2])
	}
	lines := strings.Split(strings.TrimSuffix(outs[0], "\n"), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "crdt-catalog ") || lines[0] == "crdt-catalog dev" ||
		!strings.HasPrefix(lines[1], "revision: ") || !strings.HasPrefix(lines[2], "time: ") ||
		lines[3] != "go:       "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH {
		t.Fatalf("version output:\n%s", outs[0])
	}
}

// TestVersion_ReleaseFromLdflags: a version set with -ldflags -X wins over
// the module version.
func TestVersion_ReleaseFromLdflags(t *testing.T) {
	old := version
	t.Cleanup(func() { version = old })
	version = "v9.8.7"
	if b := readBuildInfo(); b.Version != "v9.8.7" || b.GoVersion != runtime.Version() {
		t.Fatalf("readBuildInfo = %+v", b)
	}
}
