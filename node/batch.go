package node

import (
	"context"
	"fmt"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// MaxBatchOps bounds the operations of one Batch.
const MaxBatchOps = 1000

// OpKind names what an Op does.
type OpKind uint8

// The operations of a batch; each does what the Node method of its name
// does.
const (
	OpAdd     OpKind = iota + 1 // Add: add the item, or make Doc its whole metadata
	OpCreate                    // Create: add the item only if absent (ErrExists)
	OpRemove                    // Remove: remove a present item (ErrNotFound)
	OpReplace                   // Replace: make Doc a present item's whole metadata
	OpPatch                     // Patch: apply the merge patch Doc to a present item
)

var opNames = [...]string{OpAdd: "add", OpCreate: "create", OpRemove: "remove", OpReplace: "replace", OpPatch: "patch"}

// String returns the operation's name: add, create, remove, replace or
// patch.
func (k OpKind) String() string {
	if int(k) < len(opNames) && opNames[k] != "" {
		return opNames[k]
	}
	return fmt.Sprintf("OpKind(%d)", k)
}

// ParseOpKind returns the OpKind that String names.
func ParseOpKind(s string) (OpKind, bool) {
	for k, name := range opNames {
		if name != "" && name == s {
			return OpKind(k), true
		}
	}
	return 0, false
}

// Op is one operation of a Batch.
type Op struct {
	Kind OpKind
	Key  crdt.Key
	// Doc is the metadata of an add, create or replace, and the merge
	// patch of a patch; a remove ignores it.
	Doc crdt.Document
}

// BatchError is the error of a Batch whose operation Index failed; it
// wraps the cause (ErrNotFound, ErrExists, crdt.ErrInvalid, ...).
type BatchError struct {
	Index int
	Err   error
}

// Error names the operation and its cause.
func (e *BatchError) Error() string { return fmt.Sprintf("operation %d: %v", e.Index, e.Err) }

// Unwrap returns the cause.
func (e *BatchError) Unwrap() error { return e.Err }

// Batch runs ops, in order, as one atomic write: each sees the items as
// the operations before it leave them, and either all of them are applied
// or none is. On failure it returns a *BatchError naming the first
// operation that failed, and nothing changed. The writes take consecutive
// dots of this replica, are logged together and committed in one store
// batch, so they reach peers together (in one gossip message when they
// fit in one). It returns once they are durable, with the item after each
// operation and its Dot (for a remove, only Collection, ID and Dot are
// set). At most MaxBatchOps operations;
// an empty batch does nothing.
func (n *Node) Batch(ctx context.Context, ops []Op) ([]Item, error) {
	if len(ops) > MaxBatchOps {
		return nil, fmt.Errorf("%w: a batch of %d operations, at most %d", crdt.ErrInvalid, len(ops), MaxBatchOps)
	}
	if len(ops) == 0 {
		return nil, nil
	}
	ws := make([]write, len(ops))
	for i, op := range ops {
		if err := n.checkKey(op.Key); err != nil {
			return nil, &BatchError{i, err}
		}
		mut, err := mutatorOf(op)
		if err != nil {
			return nil, &BatchError{i, err}
		}
		ws[i] = write{op.Key, mut}
	}
	items, err := n.writeAll(ctx, ws)
	if err != nil {
		return nil, err
	}
	for i, op := range ops {
		if op.Kind == OpRemove {
			items[i] = Item{Collection: op.Key.Collection, ID: op.Key.ID, Dot: items[i].Dot}
		}
	}
	return items, nil
}

// mutatorOf returns the mutator of op.
func mutatorOf(op Op) (mutator, error) {
	k := op.Key
	switch op.Kind {
	case OpAdd:
		return docMutator(k, op.Doc, crdt.AddDelta), nil
	case OpCreate:
		return createMutator(k, op.Doc), nil
	case OpRemove:
		return removeMutator(k), nil
	case OpReplace:
		return docMutator(k, op.Doc, crdt.ReplaceDelta), nil
	case OpPatch:
		return docMutator(k, op.Doc, crdt.PatchDelta), nil
	}
	return nil, fmt.Errorf("%w: unknown operation %d", crdt.ErrInvalid, op.Kind)
}
