package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/fxamacker/cbor/v2"
)

// A full state (GET /crdt/state, node.ExportState) is a stream of frames,
// each a uvarint length and a CBOR record: a header (kind 1, with the
// format version and the causal contexts), the items (kind 2), then a
// trailer (kind 3) with the item count. checkStateStream reads that
// structure so that backup never keeps, and restore never sends, a file
// that is cut short or is not a state at all; the node checks the rest
// (order, signatures, contexts against items) when it imports.
const (
	stateFrameHeader = 1
	stateFrameItem   = 2
	stateFrameEnd    = 3
	// maxStateFrame bounds one frame as the node does: the header holds
	// two contexts and a signed head for each of up to 500,000 replicas.
	maxStateFrame = 2*crdt.MaxContextBytes + 500_000*(1+crdt.MaxReplicaIDLen+8+crdt.HashSize+crdt.SigSize) + 4096
	// mediaState is the content type of a full state.
	mediaState = "application/vnd.crdt-catalog.state"
)

// stateFrame is the part of a full-state frame the check reads; the
// decoder skips the other fields.
type stateFrame struct {
	Kind       uint   `cbor:"1,keyasint"`
	Version    uint   `cbor:"2,keyasint,omitempty"`
	Seen       []byte `cbor:"4,keyasint,omitempty"`
	Applied    []byte `cbor:"5,keyasint,omitempty"`
	Collection string `cbor:"6,keyasint,omitempty"`
	ID         string `cbor:"7,keyasint,omitempty"`
	Item       []byte `cbor:"8,keyasint,omitempty"`
	Count      uint64 `cbor:"9,keyasint,omitempty"`
}

// errNotState says a file is no full state; checkStateStream's errors
// wrap it.
var errNotState = errors.New("not a full state as GET /crdt/state (crdt-catalog backup) writes it")

// checkStateStream reads a full state from r to its end and checks its
// structure: a header of this format version whose contexts decode, items
// that name a valid key and decode, and a trailer whose count matches,
// with nothing after it. It returns the number of items. It holds one
// frame in memory at a time, never more than the bytes r gave.
func checkStateStream(r io.Reader) (int, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	h, err := readStateFrame(br)
	if err != nil {
		return 0, fmt.Errorf("%w: its first frame, the header, does not decode: %v", errNotState, err)
	}
	if h.Kind != stateFrameHeader {
		return 0, fmt.Errorf("%w: its first frame is of kind %d, not a header", errNotState, h.Kind)
	}
	if h.Version != crdt.FormatVersion {
		return 0, fmt.Errorf("%w: format version %d, this crdt-catalog reads version %d", errNotState, h.Version, crdt.FormatVersion)
	}
	for _, c := range [][]byte{h.Seen, h.Applied} {
		if _, err := crdt.DecodeContext(c); err != nil {
			return 0, fmt.Errorf("%w: header: %v", errNotState, err)
		}
	}
	for items := 0; ; items++ {
		f, err := readStateFrame(br)
		if err != nil {
			return 0, fmt.Errorf("%w: after %d items: %v", errNotState, items, err)
		}
		switch f.Kind {
		case stateFrameItem:
			k := crdt.Key{Collection: f.Collection, ID: f.ID}
			if err := k.Validate(); err != nil {
				return 0, fmt.Errorf("%w: item %d: %v", errNotState, items+1, err)
			}
			if _, err := crdt.DecodeItem(f.Item); err != nil {
				return 0, fmt.Errorf("%w: item %s: %v", errNotState, k, err)
			}
		case stateFrameEnd:
			if f.Count != uint64(items) {
				return 0, fmt.Errorf("%w: its trailer counts %d items, it holds %d", errNotState, f.Count, items)
			}
			if _, err := br.ReadByte(); err == nil {
				return 0, fmt.Errorf("%w: data after its trailer", errNotState)
			} else if err != io.EOF {
				return 0, err
			}
			return items, nil
		default:
			return 0, fmt.Errorf("%w: after %d items: a frame of kind %d", errNotState, items, f.Kind)
		}
	}
}

// readStateFrame reads one frame. An end of the stream anywhere, even
// between frames, is a stream cut short: a state ends with its trailer.
func readStateFrame(r *bufio.Reader) (*stateFrame, error) {
	size, err := binary.ReadUvarint(r)
	if err == io.EOF {
		return nil, errors.New("cut short: the stream ends before its trailer")
	}
	if err != nil {
		return nil, fmt.Errorf("frame length: %w", err)
	}
	if size > maxStateFrame {
		return nil, fmt.Errorf("a frame of %d bytes, at most %d", size, maxStateFrame)
	}
	// Read what is there rather than allocate what the length claims.
	b, err := io.ReadAll(io.LimitReader(r, int64(size)))
	if err != nil {
		return nil, err
	}
	if uint64(len(b)) < size {
		return nil, fmt.Errorf("cut short %d bytes into a frame of %d", len(b), size)
	}
	var f stateFrame
	if err := cbor.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("frame: %v", err)
	}
	return &f, nil
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
