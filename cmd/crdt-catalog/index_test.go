package main

import (
	"io"
	"maps"
	"slices"
	"testing"
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
