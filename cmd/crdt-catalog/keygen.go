package main

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
)

// keygen writes a new libp2p pre-shared swarm key (mode 0600). It refuses to
// overwrite an existing file.
func keygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("crdt-catalog keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("swarm-key", "", "file to write the new swarm key to (must not exist)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" || fs.NArg() > 0 {
		return fmt.Errorf("usage: crdt-catalog keygen -swarm-key FILE")
	}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return err
	}
	f, err := os.OpenFile(*path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if _, err := fmt.Fprintf(f, "/key/swarm/psk/1.0.0/\n/base16/\n%s\n", hex.EncodeToString(key[:])); err != nil {
		f.Close()
		return fmt.Errorf("keygen: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "wrote swarm key %s; give the same file to every peer with -swarm-key\n", *path)
	return err
}
