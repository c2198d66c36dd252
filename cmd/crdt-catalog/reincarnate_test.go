package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/node"
)

func TestReincarnate_NewReplicaAndIdentity(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	store, err := node.OpenLevelDB(filepath.Join(data, "store"), false)
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := node.Open(ctx, store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	old := n.ReplicaID()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "identity.key"), []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"reincarnate", "-data", data}, &out, io.Discard, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "replica "+string(old)+" is now replica ") {
		t.Fatalf("output: %s", out.String())
	}
	if _, err := os.Stat(filepath.Join(data, "identity.key")); !os.IsNotExist(err) {
		t.Fatalf("the old identity is still in place: %v", err)
	}
	if _, err := os.Stat(filepath.Join(data, "identity.key."+string(old))); err != nil {
		t.Fatalf("the old identity was not kept aside: %v", err)
	}
	if err := run(ctx, []string{"reincarnate", "-data", t.TempDir()}, io.Discard, io.Discard, func(string) string { return "" }); err == nil {
		t.Fatal("reincarnate of an empty directory succeeded")
	}
}
