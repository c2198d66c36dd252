package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestExample_NodesIdenticalLaterWriteWins runs the example subcommand and
// checks its transcript: both nodes list the same catalog after sync, the
// later write ("failed", by node2) wins, both writes' timestamps show, and
// it says that deltas are handed over in code, not by gossip.
func TestExample_NodesIdenticalLaterWriteWins(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"example"}, &out, &out, func(string) string { return "" }); err != nil {
		t.Fatalf("example: %v\n%s", err, out.String())
	}
	s := out.String()
	t.Log(s)
	if strings.Contains(s, "by gossip") || strings.Contains(s, "computed by two real nodes") {
		t.Error("the transcript claims a network the example does not use")
	}
	_, after, ok := strings.Cut(s, "--- After Sync ---\n")
	if !ok {
		t.Fatal("no After Sync section")
	}
	lines := strings.Split(after, "\n")
	n1, ok1 := strings.CutPrefix(lines[0], "Node1 snapshots: ")
	n2, ok2 := strings.CutPrefix(lines[1], "Node2 snapshots: ")
	if !ok1 || !ok2 || n1 != n2 {
		t.Fatalf("nodes differ after sync:\n%s\n%s", lines[0], lines[1])
	}
	for _, want := range []string{
		"{id:snap1 metadata:map[size:1024 status:failed updated:2023-12-07T10:30:45.002Z]}",
		"{id:snap2 metadata:map[cluster:cluster-b created:2023-12-07T10:30:45Z size:2048]}",
	} {
		if !strings.Contains(n1, want) {
			t.Errorf("after sync, missing %s in %s", want, n1)
		}
	}
	for _, want := range []string{
		"No network: deltas are handed from one node to the other in code",
		"Node1 metadata: map[size:1024 status:completed updated:2023-12-07T10:30:45.001Z]",
		"Node2 metadata: map[size:1024 status:failed updated:2023-12-07T10:30:45.002Z]",
		"Node1 hands its 3 pending deltas to Node2",
		"Applying delta: snapshots:snap1 (orset, add, stamped 2023-12-07T10:30:45.000Z/0, already applied: nothing changes)",
		"Applying delta: snapshots:snap1 (lww, replace, stamped 2023-12-07T10:30:45.001Z/0)",
		"Applying delta: snapshots:snap2 (orset, add, stamped 2023-12-07T10:30:45.001Z/1)",
		"Node2 hands its 1 pending deltas to Node1",
		"Applying delta: snapshots:snap1 (lww, replace, stamped 2023-12-07T10:30:45.002Z/0)",
		"Winner, on both nodes: map[size:1024 status:failed updated:2023-12-07T10:30:45.002Z]",
		`Losing status value, kept as a visible conflict: "completed", stamped 2023-12-07T10:30:45.001Z/0`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("transcript lacks %q", want)
		}
	}
}
