package node

import (
	"errors"
	"fmt"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// Sentinel errors. Errors returned by Node wrap one of these (or one of
// crdt's: crdt.ErrInvalid, crdt.ErrTooLarge, crdt.ErrVersion), so callers
// branch with errors.Is.
var (
	// ErrNotFound: the item is not present.
	ErrNotFound = crdt.ErrNotFound
	// ErrExists: Create found the item present on this node.
	ErrExists = errors.New("item exists")
	// ErrUnknownCollection: the collection is not one this node serves.
	ErrUnknownCollection = errors.New("unknown collection")
	// ErrClosed: the node is closed or closing.
	ErrClosed = errors.New("node closed")
	// ErrFailed: the store failed to write a group commit (the disk is
	// full, say). The writes of that group, and of any staged on top of
	// it, were not applied and were never acknowledged; their callers get
	// an error wrapping ErrFailed and the store's error, so that
	// errors.Is(err, syscall.ENOSPC) tells a full disk. Until a background
	// probe finds the store taking writes again (see Node.Writable),
	// every write fails at once with such an error; reads keep working.
	ErrFailed = errors.New("store write failed")
	// ErrCursorExpired: the delta log no longer holds deltas right after
	// the given cursor; the consumer has missed deltas and must take a
	// full-state export instead.
	ErrCursorExpired = errors.New("cursor expired")
	// ErrLogGap: the delta log cannot cover what a peer lacks; a full-state
	// transfer is needed.
	ErrLogGap = errors.New("delta log does not cover the gap")
	// ErrForkSuspected: a peer sent operations of this node's own replica
	// that this node never wrote: another process uses the same replica
	// (a copied data directory, a restored backup), or a peer forged
	// them. They are refused, logged at error and shown in Stats.Fork.
	ErrForkSuspected = errors.New("fork suspected")
	// ErrForked: a delta of this node's replica signed with its own key,
	// which this node never wrote, proved that another process uses the
	// replica and key (a copied data directory, a restored backup). Local
	// writes are refused, across restarts, until `crdt-catalog
	// reincarnate` (Reincarnate) gives this store a new replica; the
	// node still serves reads and joins remote deltas. It wraps
	// ErrForkSuspected.
	ErrForked = fmt.Errorf("this replica is forked: writes refused until `crdt-catalog reincarnate` gives it a new replica: %w", ErrForkSuspected)
	// ErrStoreDamaged: the LevelDB store failed its checksums at open (a
	// damaged journal, manifest or table): OpenLevelDB refuses it rather
	// than start on a store that may hold less than its causal contexts
	// claim. RepairLevelDB and Repair are the way out.
	ErrStoreDamaged = errors.New("store damaged")
	// ErrRepairUnfinished: Repair was interrupted; the store's records do
	// not yet agree with each other, and Open refuses it until Repair is
	// run again.
	ErrRepairUnfinished = errors.New("store repair unfinished")
	// ErrCorrupt: the store holds a record that does not decode.
	ErrCorrupt = errors.New("store corrupt")
	// ErrStateTooLarge: a full-state stream that ImportState had to copy
	// to a temporary file is longer than Config.MaxStateBytes. It wraps
	// crdt.ErrTooLarge. The stream may be perfectly valid: the limit is
	// this node's, so an honest sender whose catalog outgrew it keeps
	// hitting it until the limit is raised.
	ErrStateTooLarge = fmt.Errorf("full state over this node's import limit (MaxStateBytes): %w", crdt.ErrTooLarge)
)
