package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/crdt-catalog/crdt-catalog/node"
	"github.com/crdt-catalog/crdt-catalog/p2p"
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
	// A copied directory copied the identity too: unless told to keep it,
	// set it aside, so that the new replica is keyed by a new identity.
	keyFile := filepath.Join(*data, "identity.key")
	aside := ""
	if !*keep {
		b, err := os.ReadFile(keyFile)
		if err == nil {
			aside = keyFile + ".old-" + fmt.Sprintf("%x", sha256.Sum256(b))[:12]
			err = os.Rename(keyFile, aside)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			store.Close()
			return fmt.Errorf("reincarnate: set the old libp2p identity aside: %w", err)
		}
	}
	key, err := p2p.NodeKey(keyFile)
	if err != nil {
		store.Close()
		return fmt.Errorf("reincarnate: %w", err)
	}
	old, replica, err := node.Reincarnate(ctx, store, key)
	if cerr := store.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("reincarnate: close store: %w", cerr)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "replica %s is now replica %s\n", old, replica)
	if aside == "" {
		return nil
	}
	_, err = fmt.Fprintf(stdout, "the old libp2p identity is in %s; this node now has a new one (a new peer ID): update -bootstrap lists that name this node\n", aside)
	return err
}
