package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/crdt-catalog/crdt-catalog/node"
)

// mediaState is the content type of a full state.
const mediaState = "application/vnd.crdt-catalog.state"

// errNotState says a file is no full state; checkStateStream's errors
// wrap it.
var errNotState = errors.New("not a full state as GET /crdt/state (crdt-catalog backup) writes it")

// checkStateStream reads a full state from r to its end and checks it as
// the node checks an import before joining it (node.CheckState), so that
// backup never keeps, and restore never sends, a file that is cut short,
// damaged or not a state at all. It returns the number of items. It holds
// one frame in memory at a time.
func checkStateStream(r io.Reader) (int, error) {
	items, err := node.CheckState(context.Background(), r)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errNotState, err)
	}
	return items, nil
}

// backupResult is what backup prints: with -o json on stdout, else on
// stderr.
type backupResult struct {
	File        string `json:"file"`
	Bytes       int64  `json:"bytes"`
	Items       int    `json:"items"`
	DeltaCursor string `json:"delta_cursor"`
}

// runBackup saves GET /crdt/state to args[0]: into a temporary file in
// the same directory, checked as restore checks it, synced, then renamed
// over the file, so that the file is either the old one or a whole new
// state. "-" writes to stdout (checked as it passes).
func runBackup(ctx context.Context, c *client, _ *clientOpts, args []string) error {
	name := args[0]
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "/crdt/state"})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	res := backupResult{File: name, DeltaCursor: resp.Header.Get("Crdt-Delta-Cursor")}
	if name == "-" {
		cw := &countWriter{w: c.stdout}
		if res.Items, err = checkStateStream(io.TeeReader(resp.Body, cw)); err != nil {
			return fmt.Errorf("the node's state: %w", err)
		}
		res.Bytes = cw.n
		return c.report(res, fmt.Sprintf("backup: %d items, %d bytes, delta cursor %s", res.Items, res.Bytes, res.DeltaCursor), true)
	}
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename: nothing
	cw := &countWriter{w: tmp}
	res.Items, err = checkStateStream(io.TeeReader(resp.Body, cw))
	if err != nil {
		tmp.Close()
		return fmt.Errorf("the node's state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(name)); err != nil {
		return err
	}
	res.Bytes = cw.n
	return c.report(res, fmt.Sprintf("backup: wrote %s: %d items, %d bytes, delta cursor %s", name, res.Items, res.Bytes, res.DeltaCursor), false)
}

// report prints a command's result: as JSON (-o json or ndjson) on
// stdout, else line on stderr. With toStderr, stdout carries data, so
// the result goes to stderr either way.
func (c *client) report(v any, line string, toStderr bool) error {
	if c.output == "table" || toStderr {
		if c.output != "table" {
			b, err := json.Marshal(v)
			if err != nil {
				return err
			}
			line = string(b)
		}
		_, err := fmt.Fprintln(c.stderr, line)
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.printJSON(b)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (cw *countWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.n += int64(n)
	return n, err
}

// runRestore checks that args[0] is a whole full state and posts it to
// POST /crdt/state, which checks it again and joins it: the node's state
// becomes the join of its own and the backup's (nothing it holds is
// dropped). "-" reads stdin, kept in a temporary file to be checked
// before it is sent.
func runRestore(ctx context.Context, c *client, _ *clientOpts, args []string) error {
	name := args[0]
	var f *os.File
	if name == "-" {
		tmp, err := os.CreateTemp("", "crdt-catalog-restore-*")
		if err != nil {
			return err
		}
		defer os.Remove(tmp.Name())
		defer tmp.Close()
		if _, err := io.Copy(tmp, c.stdin); err != nil {
			return fmt.Errorf("reading stdin: %w", err)
		}
		f, name = tmp, "stdin"
	} else {
		var err error
		if f, err = os.Open(name); err != nil {
			return &statusError{exitUsage, err}
		}
		defer f.Close()
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := checkStateStream(f); err != nil {
		return &statusError{exitUsage, fmt.Errorf("%s: %w; nothing was sent", name, err)}
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	b, _, err := c.getJSON(ctx, request{method: http.MethodPost, path: "/crdt/state",
		header: http.Header{"Content-Type": {mediaState}}, body: io.NopCloser(f), size: size})
	if err != nil {
		return err
	}
	if c.output != "table" {
		return c.printJSON(b)
	}
	var res struct{ Items, Changed int }
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("the node's answer: %w", err)
	}
	_, err = fmt.Fprintf(c.stdout, "restored %s: %d items, %d changed on the node\n", name, res.Items, res.Changed)
	return err
}
