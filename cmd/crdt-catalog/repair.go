package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/crdt-catalog/crdt-catalog/node"
	"github.com/crdt-catalog/crdt-catalog/p2p"
)

// repair salvages a stopped node's damaged store (node.RepairLevelDB) and
// makes it claim only what it holds (node.Repair): a new replica ID, an
// empty applied context, so that the peers send back everything it may
// have lost. It keeps the libp2p identity: the directory was damaged, not
// copied.
func repair(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("crdt-catalog repair", flag.ContinueOnError)
	fl.SetOutput(stderr)
	data := fl.String("data", "./data", "data directory of the stopped node")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("usage: crdt-catalog repair [-data DIR]")
	}
	dir := filepath.Join(*data, "store")
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("repair: %s holds no catalog: %w", *data, err)
	}
	key, err := p2p.NodeKey(filepath.Join(*data, "identity.key"))
	if err != nil {
		return fmt.Errorf("repair: %w", err)
	}
	store, err := node.RepairLevelDB(dir, true)
	if err != nil {
		return fmt.Errorf("repair (is the node still running?): %w", err)
	}
	rep, err := node.Repair(ctx, store, key, slog.New(slog.NewTextHandler(stderr, nil)))
	if cerr := store.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("repair: close store: %w", cerr)
	}
	if err != nil {
		return err
	}
	old := string(rep.OldReplica)
	if old == "" {
		old = "(lost)"
	}
	_, err = fmt.Fprintf(stdout, "repaired %s: %d items kept, %d unreadable items and %d delta-log records dropped\n"+
		"replica %s is now replica %s; start the node connected to its peers: it fetches back everything it may have lost\n",
		*data, rep.Items, rep.ItemsDropped, rep.LogDropped, old, rep.Replica)
	return err
}

// storeHint adds to an error that refuses a damaged store what the
// operator runs next.
func storeHint(err error, data string) error {
	switch {
	case errors.Is(err, node.ErrStoreDamaged), errors.Is(err, node.ErrRepairUnfinished):
		return fmt.Errorf("%w\nstop here and keep a copy of %s if you can; then run: crdt-catalog repair -data %s (see README, \"When the store is damaged\")", err, data, data)
	}
	return err
}
