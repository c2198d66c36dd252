package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// TestClient_BackupRestore: a backup of one node, restored into a second,
// gives it the same catalog; so does the pipe backup - | restore -. A
// file that is cut short, garbage, empty or missing is refused (exit 2)
// before anything is sent.
func TestClient_BackupRestore(t *testing.T) {
	a, b, c := newCLINode(t, nil), newCLINode(t, nil), newCLINode(t, nil)
	for i, args := range [][]string{
		{"add", "snapshots", "s1", `{"size": 1}`},
		{"add", "snapshots", "s2", `{"size": 2, "tags": ["x"]}`},
		{"add", "images", "i1", `{"os": "linux"}`},
		{"patch", "snapshots", "s1", `{"owner": "me"}`},
		{"rm", "snapshots", "s2"},
	} {
		if _, errOut, code := a.cli(t, "", args...); code != 0 {
			t.Fatalf("write %d: exit %d: %s", i, code, errOut)
		}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "catalog.state")
	out, errOut, code := a.cli(t, "", "backup", file)
	if code != 0 || out != "" || errOut != "backup: wrote "+file+": 2 items, "+size(t, file)+" bytes, delta cursor 5\n" {
		t.Fatalf("backup: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("backup left %d files in its directory, want 1", len(ents))
	}
	out, errOut, code = b.cli(t, "", "restore", file)
	if code != 0 || out != "restored "+file+": 2 items, 2 changed on the node\n" || errOut != "" {
		t.Fatalf("restore: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	sameCatalog(t, a, b)

	// Through a pipe, JSON results.
	// (runCLI: the stream is binary, with replica IDs that cli would rewrite.)
	var state, stderr bytes.Buffer
	env := map[string]string{"CRDT_CATALOG_ENDPOINT": a.url}
	if code := runCLI(t, env, "", &state, &stderr, "backup", "-", "-o", "json"); code != 0 ||
		!strings.HasPrefix(stderr.String(), `{"file":"-","bytes":`+strconv.Itoa(state.Len())+`,"items":2,"delta_cursor":"5"}`) {
		t.Fatalf("backup -: exit %d, stderr %q", code, stderr.String())
	}
	out, errOut, code = c.cli(t, state.String(), "restore", "-", "-o", "json")
	if code != 0 || out != `{"items":2,"changed":2}`+"\n" {
		t.Fatalf("restore -: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	sameCatalog(t, a, c)

	// A restore is a join, not a rollback: on the node the backup came
	// from, a later remove and a later patch stay.
	for _, args := range [][]string{{"rm", "snapshots", "s1"}, {"patch", "images", "i1", `{"os": "bsd"}`}} {
		if _, errOut, code := a.cli(t, "", args...); code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, errOut)
		}
	}
	if out, errOut, code := a.cli(t, "", "restore", file); code != 0 || out != "restored "+file+": 2 items, 0 changed on the node\n" {
		t.Fatalf("restore onto its origin: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if out, _, code := a.cli(t, "", "query", "--all", "images", "-o", "ndjson"); code != 0 || out != `{"id":"i1","collection":"images","metadata":{"os":"bsd"}}`+"\n" {
		t.Fatalf("after the restore, images: %q", out)
	}
	if _, _, code := a.cli(t, "", "get", "snapshots", "s1"); code != exitNotFound {
		t.Fatalf("after the restore, the removed s1: exit %d, want 3", code)
	}

	whole, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		name string
		data []byte
		want string
	}{
		{"cut", whole[:len(whole)-3], "not a full state as GET /crdt/state (crdt-catalog backup) writes it: state stream: after 2 items: cut short"},
		{"cut between frames", whole[:len(whole)-5], "after 2 items: "},
		{"empty", nil, "its first frame, the header, does not decode: cut short: the stream ends before its trailer"},
		{"garbage", []byte("{\"items\": []}\n"), "its first frame, the header, does not decode"},
		{"trailing data", append(append([]byte{}, whole...), 0), "data after the trailer"},
	} {
		f := filepath.Join(dir, bad.name)
		if err := os.WriteFile(f, bad.data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, errOut, code := c.cli(t, "", "restore", f)
		if code != exitUsage || !strings.Contains(errOut, bad.want) || !strings.HasSuffix(errOut, "; nothing was sent\n") {
			t.Errorf("restore of a %s file: exit %d, stderr %q; want 2 and %q", bad.name, code, errOut, bad.want)
		}
	}
	if _, errOut, code := c.cli(t, "", "restore", filepath.Join(dir, "none")); code != exitUsage || !strings.Contains(errOut, "no such file") {
		t.Errorf("restore of a missing file: exit %d, stderr %q", code, errOut)
	}
	if _, errOut, code := a.cli(t, "", "backup", filepath.Join(dir, "no", "dir")); code != exitError || !strings.Contains(errOut, "no such file") {
		t.Errorf("backup into a missing directory: exit %d, stderr %q", code, errOut)
	}
}

// size returns the size of file in bytes, as text.
func size(t *testing.T, file string) string {
	t.Helper()
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	return strconv.FormatInt(st.Size(), 10)
}

// sameCatalog fails unless the two nodes list the same items with the
// same metadata and conflicts in every collection.
func sameCatalog(t *testing.T, a, b *cliNode) {
	t.Helper()
	for _, coll := range []string{"snapshots", "images"} {
		args := []string{"query", coll, "--all", "--conflicts", "-o", "json"}
		outA, _, codeA := a.cli(t, "", args...)
		outB, _, codeB := b.cli(t, "", args...)
		if codeA != 0 || codeB != 0 || outA != outB {
			t.Fatalf("%s differ: exit %d and %d\n%s\n%s", coll, codeA, codeB, outA, outB)
		}
	}
}

// TestClient_BackupKeepsOldFile: a backup whose stream is bad (here a
// server that answers garbage) fails, leaves the existing file as it was
// and no temporary file behind.
func TestClient_BackupKeepsOldFile(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("\x05hello"))
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	file := filepath.Join(dir, "catalog.state")
	if err := os.WriteFile(file, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	code := runCLI(t, map[string]string{"CRDT_CATALOG_ENDPOINT": srv.URL}, "", io.Discard, &stderr, "backup", file)
	if code != exitError || !strings.Contains(stderr.String(), "the node's state: not a full state") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
	if b, _ := os.ReadFile(file); string(b) != "old" {
		t.Errorf("the old backup became %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%d files in the directory, want 1", len(ents))
	}
}

// FuzzCheckStateStream: the check of a backup never panics, and accepts
// a stream only if it reads to its trailer (seeded with a real backup and
// cuts of it).
func FuzzCheckStateStream(f *testing.F) {
	cn := newCLINode(f, nil)
	ctx := context.Background()
	for _, id := range []string{"s1", "s2"} {
		if _, err := cn.n.Add(ctx, crdt.Key{Collection: "snapshots", ID: id}, crdt.Document{"size": []byte("1")}); err != nil {
			f.Fatal(err)
		}
	}
	var state bytes.Buffer
	if err := cn.n.ExportState(ctx, &state); err != nil {
		f.Fatal(err)
	}
	whole := state.Bytes()
	if n, err := checkStateStream(bytes.NewReader(whole)); n != 2 || err != nil {
		f.Fatalf("a real state: %d items, %v", n, err)
	}
	for _, n := range []int{len(whole), len(whole) - 1, len(whole) / 2, 1} {
		f.Add(whole[:n])
	}
	f.Add([]byte{})
	f.Add([]byte{0x01, 0xa0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := checkStateStream(bytes.NewReader(b))
		if err == nil && (len(b) == 0 || n < 0) {
			t.Fatalf("%q passed with %d items", b, n)
		}
		if err != nil && !errors.Is(err, errNotState) {
			t.Fatalf("an error that does not say the stream is bad: %v", err)
		}
	})
}
