package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// Full-state imports that survive a crash (Config.StateDir).
//
// A crash during the join of a full state used to leave the items joined
// so far without the sender's contexts, and nothing to redo the rest: the
// receiver's applied context did not name the sender's deltas, but a
// sender whose log no longer reached back had nothing but a full state to
// offer, and a client that posted it did not know it had to post it again.
//
// With a StateDir, each piece of the stream (see ImportState) is copied
// there as it is checked ("crdt-catalog-import-*.tmp") and renamed to a
// pending name ("….pending") before its join starts; the file is removed
// once the piece's join (with the sender's contexts, for the last piece)
// is durable. Open joins every pending file before it returns, and deletes
// the .tmp copies a crash left (pieces never checked, so never started).
// Joining a state twice, or a part of it again, is harmless: joins are
// idempotent, and the item joins of a cut import read the receiver's
// unchanged seen context, as the first attempt did. Pieces are made
// pending one at a time, in order, so at most one is pending at a crash.
// A crash cuts an import of several pieces: the pending piece is finished
// at the next start, the pieces after it were never received, and the
// node, lacking the sender's contexts, pulls the state again.

const (
	importTmp     = ".tmp"
	importPending = ".pending"
	importPrefix  = "crdt-catalog-import-"
)

// importHook, if set (by tests only), is called at the points where a
// crash must leave a node that finishes or redoes the import, for each
// piece: "spooled" (checked, not yet pending), "pending" (before its
// join), "chunk" (after each committed chunk of items), "joined"
// (committed, file not removed).
var importHook func(point string)

func hook(point string) {
	if importHook != nil {
		importHook(point)
	}
}

// resumeImports finishes the imports a crash cut short (see above). A
// pending file that fails to join for any reason but a store failure is
// logged and removed, so that no state can stop the node from starting.
func (n *Node) resumeImports(ctx context.Context) error {
	if n.cfg.StateDir == "" {
		return nil
	}
	tmps, err := filepath.Glob(filepath.Join(n.cfg.StateDir, importPrefix+"*"+importTmp))
	if err != nil {
		return err
	}
	for _, p := range tmps {
		n.log.Info("removing the copy of a full state whose check a stop interrupted; it was never joined", "file", p)
		_ = os.Remove(p)
	}
	pending, err := filepath.Glob(filepath.Join(n.cfg.StateDir, importPrefix+"*"+importPending))
	if err != nil {
		return err
	}
	slices.Sort(pending)
	for _, p := range pending {
		res, err := n.resumeOne(ctx, p)
		switch {
		case err == nil:
			n.log.Warn("finished a full-state import that a stop interrupted", "file", p, "items", res.Items, "changed", res.Changed)
		case errors.Is(err, ErrFailed) || errors.Is(err, ErrClosed):
			return fmt.Errorf("finish the full-state import in %s: %w", p, err)
		default:
			n.log.Error("a full-state import that a stop interrupted cannot be finished; dropped (anti-entropy or a new import brings what it lacked)",
				"file", p, "err", err)
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove finished import %s: %w", p, err)
		}
	}
	return nil
}

func (n *Node) resumeOne(ctx context.Context, path string) (ImportResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return ImportResult{}, err
	}
	defer f.Close()
	// The file was checked whole before it was made pending; the join
	// reads it through the same checks again.
	sr, err := openState(bufio.NewReaderSize(f, stateBuffer), nil, n.cfg.MaxReplicas)
	if err != nil {
		return ImportResult{}, err
	}
	sr.local = true // a piece frame, and values checked before
	return n.applyState(ctx, sr)
}
