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

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
	"github.com/crdt-catalog/crdt-catalog/p2p"
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
	// The old identity is set aside, and the new replica is keyed by the
	// new one.
	aside, err := filepath.Glob(filepath.Join(data, "identity.key.old-*"))
	if err != nil || len(aside) != 1 {
		t.Fatalf("the old identity was not kept aside: %v %v", aside, err)
	}
	if b, err := os.ReadFile(aside[0]); err != nil || string(b) != "key" {
		t.Fatalf("%s holds %q, %v; want the old identity", aside[0], b, err)
	}
	key, err := p2p.NodeKey(filepath.Join(data, "identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	replica := crdt.ReplicaID(strings.TrimSpace(out.String()[strings.LastIndex(out.String(), "is now replica ")+len("is now replica "):]))
	replica = crdt.ReplicaID(strings.Fields(string(replica))[0])
	if pub, ok := replica.PublicKey(); !ok || !pub.Equal(key.Public()) {
		t.Fatalf("the new replica %q is not keyed by the new identity", replica)
	}
	if err := run(ctx, []string{"reincarnate", "-data", t.TempDir()}, io.Discard, io.Discard, func(string) string { return "" }); err == nil {
		t.Fatal("reincarnate of an empty directory succeeded")
	}
}
