package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/crdt-catalog/crdt-catalog/node"
)

// reincarnate gives a stopped node's data directory a new replica ID and,
// unless told otherwise, a new libp2p identity: the fix for two processes
// using one replica (a copied data directory, a restored backup), which a
// node reports as a suspected fork.
func reincarnate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("crdt-catalog reincarnate", flag.ContinueOnError)
	fl.SetOutput(stderr)
	data := fl.String("data", "./data", "data directory of the stopped node")
	keep := fl.Bool("keep-identity", false, "keep the libp2p identity (peer ID); by default it is replaced too, since a copied directory copies it")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("usage: crdt-catalog reincarnate [-data DIR] [-keep-identity]")
	}
	if _, err := os.Stat(filepath.Join(*data, "store")); err != nil {
		return fmt.Errorf("reincarnate: %s holds no catalog: %w", *data, err)
	}
	store, err := node.OpenLevelDB(filepath.Join(*data, "store"), true)
	if err != nil {
		return fmt.Errorf("reincarnate: open %s (is the node still running?): %w", *data, err)
	}
	old, replica, err := node.Reincarnate(ctx, store)
	if cerr := store.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("reincarnate: close store: %w", cerr)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "replica %s is now replica %s\n", old, replica)
	if *keep {
		return nil
	}
	key := filepath.Join(*data, "identity.key")
	switch err := os.Rename(key, key+"."+string(old)); {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("reincarnate: set the old libp2p identity aside: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "the old libp2p identity is in %s; a new one (a new peer ID) is made at the next start: update -bootstrap lists that name this node\n", key+"."+string(old))
	return err
}
