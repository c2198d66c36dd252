package testbin

import (
	"os"
	"path/filepath"
	"testing"
)

// TestBuildKey_FollowsSourcesOnly: the key changes with a source file,
// go.mod and the race setting, not with a test file, testdata or docs.
func TestBuildKey_FollowsSourcesOnly(t *testing.T) {
	root := t.TempDir()
	write := func(rel, text string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	key := func(race bool) string {
		t.Helper()
		k, err := buildKey(root, race)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write("go.mod", "module x\n")
	write("a/a.go", "package a\n")
	k0 := key(false)
	if key(true) == k0 {
		t.Error("the race setting does not change the key")
	}
	for _, f := range []string{"a/a_test.go", "a/testdata/x.go", "docs/notes.md", ".git/HEAD"} {
		write(f, "changed")
		if k := key(false); k != k0 {
			t.Errorf("writing %s changed the key", f)
		}
	}
	for _, f := range []string{"a/a.go", "b/b.go", "go.mod", "go.sum"} {
		write(f, "package changed // "+f+"\n")
		k := key(false)
		if k == k0 {
			t.Errorf("writing %s did not change the key", f)
		}
		k0 = k
	}
}
