package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Full-state imports that survive a crash (Config.StateDir).
//
// A crash during the join of a full state used to leave the items joined
// so far without the sender's contexts, and nothing to redo the rest: the
// receiver's applied context did not name the sender's deltas, but a
// sender whose log no longer reached back had nothing but a full state to
// offer, and a client that posted it did not know it had to post it again.
//
// With a StateDir, the stream is copied there as it is checked
// ("crdt-catalog-import-*.tmp"), synced, and renamed to a pending name
// ("….pending", the rename synced too) before the join starts; the file
// is removed once the join, contexts included, is durable. Open joins every
// pending file before it returns, and deletes the .tmp copies a crash left
// (streams never checked, so never started). Joining a state twice, or a
// part of it again, is harmless: joins are idempotent, and the item joins
// of a cut import read the receiver's unchanged seen context, as the first
// attempt did.

const (
	importTmp     = ".tmp"
	importPending = ".pending"
	importPrefix  = "crdt-catalog-import-"
)

// importHook, if set (by tests only), is called at the points where a
// crash must leave a node that finishes or redoes the import: "spooled"
// (checked, not yet pending), "pending" (before the join), "chunk" (after
// each committed chunk of items), "joined" (committed, file not removed).
var importHook func(point string)

func hook(point string) {
	if importHook != nil {
		importHook(point)
	}
}

// importDurably is ImportState with a StateDir.
func (n *Node) importDurably(ctx context.Context, r io.Reader) (ImportResult, error) {
	f, err := os.CreateTemp(n.cfg.StateDir, importPrefix+"*"+importTmp)
	if err != nil {
		return ImportResult{}, fmt.Errorf("spool state stream: %w", err)
	}
	path := f.Name()
	defer func() {
		_ = f.Close()
		if path != "" {
			_ = os.Remove(path)
		}
	}()
	if err := n.copyChecked(ctx, r, f); err != nil {
		return ImportResult{}, err
	}
	if err := f.Sync(); err != nil {
		return ImportResult{}, fmt.Errorf("spool state stream: %w", err)
	}
	hook("spooled")
	pending := strings.TrimSuffix(path, importTmp) + importPending
	if err := os.Rename(path, pending); err != nil {
		return ImportResult{}, fmt.Errorf("spool state stream: %w", err)
	}
	path = pending
	if err := syncDir(n.cfg.StateDir); err != nil {
		return ImportResult{}, fmt.Errorf("spool state stream: %w", err)
	}
	hook("pending")
	res, err := n.applyState(context.WithoutCancel(ctx), bufio.NewReaderSize(f, stateBuffer))
	if err != nil {
		if res.Changed > 0 || errors.Is(err, ErrFailed) {
			// Keep the checked stream: the next start finishes it.
			n.log.Error("full-state import stopped midway after its stream was checked; it is finished at the next start",
				"changed", res.Changed, "file", path, "err", err)
			path = ""
		}
		return res, err
	}
	hook("joined")
	return res, nil
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
	return n.applyState(ctx, bufio.NewReaderSize(f, stateBuffer))
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
