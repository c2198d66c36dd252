package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
)

// A damaged journal stops serve before anything else starts, with the
// file and the command to run; repair then gives a store that opens, under
// a new replica, claiming nothing.
func TestRepair_DamagedStoreStopsServeUntilRepaired(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	dir := filepath.Join(data, "store")
	store, err := node.OpenLevelDB(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := node.Open(ctx, store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := crdt.ParseDocument([]byte(`{"size":1}`))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if _, err := n.Add(ctx, crdt.Key{Collection: "snapshots", ID: fmt.Sprintf("s%d", i)}, doc); err != nil {
			t.Fatal(err)
		}
	}
	old := n.ReplicaID()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	slices.Sort(logs)
	journal := logs[len(logs)-1]
	b, err := os.ReadFile(journal)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b) / 3; i < len(b)/3+4; i++ {
		b[i] ^= 0xff
	}
	if err := os.WriteFile(journal, b, 0o600); err != nil {
		t.Fatal(err)
	}

	noEnv := func(string) string { return "" }
	err = run(ctx, []string{"-data", data, "-http", "127.0.0.1:0", "-listen", "/ip4/127.0.0.1/tcp/0", "-dht=false"}, io.Discard, io.Discard, noEnv)
	if err == nil || !strings.Contains(err.Error(), filepath.Base(journal)) || !strings.Contains(err.Error(), "crdt-catalog repair -data "+data) {
		t.Fatalf("serve on a damaged store: %v; want an error naming %s and the repair command", err, filepath.Base(journal))
	}
	t.Logf("serve refused: %v", err)
	var out bytes.Buffer
	if err := run(ctx, []string{"repair", "-data", data}, &out, io.Discard, noEnv); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "replica "+string(old)+" is now replica ") {
		t.Fatalf("repair output: %s", out.String())
	}
	store, err = node.OpenLevelDB(dir, false)
	if err != nil {
		t.Fatalf("open after repair: %v", err)
	}
	n, err = node.Open(ctx, store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, applied := n.Contexts(); n.ReplicaID() == old || applied.Len() != 0 {
		t.Fatalf("after repair: replica %s (was %s), %d applied dots; want a new replica claiming nothing", n.ReplicaID(), old, applied.Len())
	}
	if err := run(ctx, []string{"repair", "-data", t.TempDir()}, io.Discard, io.Discard, noEnv); err == nil {
		t.Fatal("repair of an empty directory succeeded")
	}
}
