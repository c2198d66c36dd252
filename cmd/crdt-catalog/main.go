// Command crdt-catalog runs one peer of the replicated metadata catalog.
//
//	crdt-catalog [flags]      run a node (see -help)
//	crdt-catalog example      the two-node demonstration of the seed
//	crdt-catalog version      print the version
//	crdt-catalog keygen -swarm-key FILE   write a new libp2p swarm key
//	crdt-catalog reincarnate -data DIR    give a copied data directory a new replica ID
//	crdt-catalog repair -data DIR         salvage a damaged store and re-fetch what it lost
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "crdt-catalog:", err)
		os.Exit(1)
	}
}

// run dispatches to a subcommand; getenv reads the environment.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) > 0 {
		switch args[0] {
		case "example":
			return runExample(ctx, stdout)
		case "keygen":
			return keygen(args[1:], stdout, stderr)
		case "reincarnate":
			return reincarnate(ctx, args[1:], stdout, stderr)
		case "repair":
			return repair(ctx, args[1:], stdout, stderr)
		case "version":
			_, err := fmt.Fprintln(stdout, "crdt-catalog", version)
			return err
		}
	}
	return serve(ctx, args, stdout, stderr, getenv)
}
