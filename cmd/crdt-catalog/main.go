// Command crdt-catalog runs one peer of the replicated metadata catalog.
//
//	crdt-catalog [flags]      run a node (see -help)
//	crdt-catalog example      the two-node demonstration of the seed
//	crdt-catalog version      print the version, VCS revision and Go version (also -version)
//	crdt-catalog keygen -swarm-key FILE   write a new libp2p swarm key
//	crdt-catalog reincarnate -data DIR    give a copied data directory a new replica ID
//	crdt-catalog repair -data DIR         salvage a damaged store and re-fetch what it lost
//	crdt-catalog add|get|rm|set|patch|query|status|peers|backup|restore ...
//	                                      the command-line client of a node's HTTP API (client.go)
//	crdt-catalog completion bash|zsh      print a shell completion script
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

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(exitWith(err, os.Stderr))
}

// exitWith prints err (but for -help) and returns the exit status it
// calls for (see exitCode).
func exitWith(err error, stderr io.Writer) int {
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stderr, "crdt-catalog:", err)
	}
	return exitCode(err)
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
		case "completion":
			return completion(args[1:], stdout)
		case "version":
			if len(args) > 1 {
				return fmt.Errorf("version takes no arguments, got %q", args[1])
			}
			return printVersion(stdout, readBuildInfo())
		}
		if cmd := findClientCommand(args[0]); cmd != nil {
			return runClient(ctx, cmd, args[1:], os.Stdin, stdout, stderr, getenv)
		}
	}
	return serve(ctx, args, stdout, stderr, getenv)
}
