package main

import (
	"io"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// -index is repeatable, adds fields to a collection named again, takes
// several specs separated by ';' from the environment, and the command
// line replaces the environment's.
func TestParseFlags_Index(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "CRDT_CATALOG_INDEX" {
				return v
			}
			return ""
		}
	}
	o, err := parseFlags([]string{"-index", "snapshots:cluster,size", "-index", "snapshots:created,size", "-index", "images:arch"}, io.Discard, env("x:y"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"snapshots": {"cluster", "size", "created"}, "images": {"arch"}}
	if !maps.EqualFunc(o.indexes.byColl, want, slices.Equal) {
		t.Fatalf("indexes %v, want %v", o.indexes.byColl, want)
	}
	if o, err = parseFlags(nil, io.Discard, env("snapshots:size; images:arch")); err != nil {
		t.Fatal(err)
	}
	if want := map[string][]string{"snapshots": {"size"}, "images": {"arch"}}; !maps.EqualFunc(o.indexes.byColl, want, slices.Equal) {
		t.Fatalf("indexes from the environment %v, want %v", o.indexes.byColl, want)
	}
	for _, bad := range []string{"snapshots", ":size", "snapshots:", "snapshots: , "} {
		if _, err := parseFlags([]string{"-index", bad}, io.Discard, env("")); err == nil {
			t.Errorf("-index %q accepted", bad)
		}
	}
}

// index-add, indexes and index-drop manage the node's indexes through
// the API; a bad field is refused before any request.
func TestClient_Indexes(t *testing.T) {
	cn := newCLINode(t, nil)
	if out, errOut, code := cn.cli(t, "", "index-add", "snapshots", "size"); code != 0 || !strings.Contains(out, "snapshots   size") {
		t.Fatalf("index-add: %d %q %q", code, out, errOut)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, errOut, code := cn.cli(t, "", "indexes")
		if code != 0 {
			t.Fatalf("indexes: %d %q %q", code, out, errOut)
		}
		if strings.Contains(out, "ready") && strings.Contains(out, "api") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("index not ready after 30 s: %q", out)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if out, errOut, code := cn.cli(t, "", "indexes", "-o", "json"); code != 0 || !strings.Contains(out, `"field":"size"`) {
		t.Fatalf("indexes -o json: %d %q %q", code, out, errOut)
	}
	if _, errOut, code := cn.cli(t, "", "index-add", "snapshots", "a b"); code == 0 || !strings.Contains(errOut, "field") {
		t.Fatalf("index-add of a bad field: %d %q", code, errOut)
	}
	if _, errOut, code := cn.cli(t, "", "index-add", "nope", "size"); code == 0 || !strings.Contains(errOut, "unknown collection") {
		t.Fatalf("index-add to an unknown collection: %d %q", code, errOut)
	}
	if out, errOut, code := cn.cli(t, "", "index-drop", "snapshots", "size"); code != 0 || !strings.Contains(out, "dropped index snapshots.size") {
		t.Fatalf("index-drop: %d %q %q", code, out, errOut)
	}
	if _, errOut, code := cn.cli(t, "", "index-drop", "snapshots", "other"); code == 0 || !strings.Contains(errOut, "no index") {
		t.Fatalf("index-drop of no index: %d %q", code, errOut)
	}
}
