package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// onlyReader hides every method of its reader but Read, so that
// ImportState cannot seek it and must spool it to a temporary file.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(b []byte) (int, error) { return o.r.Read(b) }

// failingReader returns its bytes, then err.
type failingReader struct {
	b   []byte
	err error
}

func (f *failingReader) Read(b []byte) (int, error) {
	if len(f.b) == 0 {
		return 0, f.err
	}
	n := copy(b, f.b)
	f.b = f.b[n:]
	return n, nil
}

// splitFrames splits a state stream into its frames, each with its length
// prefix.
func splitFrames(tb testing.TB, b []byte) [][]byte {
	tb.Helper()
	var out [][]byte
	for len(b) > 0 {
		size, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < size {
			tb.Fatalf("not a whole frame at %d bytes from the end", len(b))
		}
		out = append(out, b[:n+int(size)])
		b = b[n+int(size):]
	}
	return out
}

// encodeFrame returns one frame.
func encodeFrame(tb testing.TB, f *stateFrame) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := writeFrame(&buf, f); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// exportOf returns n's full-state stream.
func exportOf(tb testing.TB, n *Node) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := n.ExportState(context.Background(), &buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// fingerprint is everything an import may change, byte for byte: the
// encoded contexts, the full state as ExportState writes it (every stored
// item, invisible leftovers included), the listing of every collection
// with its conflicts, and the bookkeeping counts.
func fingerprint(tb testing.TB, n *Node) string {
	tb.Helper()
	seen, applied := n.Contexts()
	s, err := crdt.EncodeContext(seen)
	if err != nil {
		tb.Fatal(err)
	}
	a, err := crdt.EncodeContext(applied)
	if err != nil {
		tb.Fatal(err)
	}
	st := n.Stats()
	return fmt.Sprintf("seen %x\napplied %x\nstate %x\nsnapshots %s\nimages %s\nitems %v counter %d",
		s, a, exportOf(tb, n), dump(tb, n, "snapshots"), dump(tb, n, "images"), st.Items, st.Counter)
}

// emptyDir fails the test unless dir holds nothing: every spool file was
// removed.
func emptyDir(tb testing.TB, dir string) {
	tb.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	if len(es) != 0 {
		tb.Fatalf("%d files left in the temporary directory, first %s", len(es), es[0].Name())
	}
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

// TestNode_ImportBadStreamLeavesStateUntouched: a stream with a valid
// header and valid items followed by garbage, or cut short, or failing, is
// rejected with the right class of error, through a seekable reader and
// through a spooled one alike, and the node is byte for byte as it was. A
// valid stream still imports, and the two nodes converge.
func TestNode_ImportBadStreamLeavesStateUntouched(t *testing.T) {
	ctx := context.Background()
	src := openMem(t, testConfig(nil))
	for i := range 20 {
		if _, err := src.Add(ctx, key("snapshots", fmt.Sprintf("s%02d", i)), mustDoc(t, fmt.Sprintf(`{"i":%d,"src":true}`, i))); err != nil {
			t.Fatal(err)
		}
		if _, err := src.Add(ctx, key("images", fmt.Sprintf("i%02d", i)), mustDoc(t, `{"kind":"image"}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Remove(ctx, key("snapshots", "s03")); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Patch(ctx, key("images", "i05"), mustDoc(t, `{"kind":"iso"}`)); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(nil)
	cfg.TempDir = t.TempDir()
	dst := openMem(t, cfg)
	for i := range 5 {
		if _, err := dst.Add(ctx, key("snapshots", fmt.Sprintf("d%02d", i)), mustDoc(t, `{"dst":true}`)); err != nil {
			t.Fatal(err)
		}
	}
	// dst also holds one of src's items, concurrently written.
	if _, err := dst.Add(ctx, key("snapshots", "s07"), mustDoc(t, `{"dst":"concurrent"}`)); err != nil {
		t.Fatal(err)
	}

	full := exportOf(t, src)
	fs := splitFrames(t, full)
	hdr, items, trailer := fs[0], fs[1:len(fs)-1], fs[len(fs)-1]
	if len(items) != 39 {
		t.Fatalf("%d items in the export, want 39", len(items))
	}
	valid := concat(append([][]byte{hdr}, items[:10]...)...) // a header and ten items
	h, err := readFrame(bufioReader(hdr), nil, headerBytes(maxReplicasLimit))
	if err != nil {
		t.Fatal(err)
	}
	h.Version = crdt.FormatVersion + 1
	newerHeader := encodeFrame(t, h)
	badItem := encodeFrame(t, &stateFrame{Kind: frameItem, Collection: "snapshots", ID: "zz", Item: []byte{0xa1, 0x01, 0xff}})
	badKey := encodeFrame(t, &stateFrame{Kind: frameItem, Collection: "snapshots", ID: "no spaces", Item: []byte{0xa0}})
	wrongCount := encodeFrame(t, &stateFrame{Kind: frameEnd, Count: uint64(len(items) + 1)})
	brokenFrame := []byte{0x05, 0xff, 0xff, 0xff, 0xff, 0xff} // 0xff is CBOR's "break": no frame
	errBroken := errors.New("connection reset by peer")

	const (
		garbage = iota
		version
		cut
		broken
	)
	cases := []struct {
		name string
		in   []byte
		fail error // returned by the reader after in; nil: none
		want int
	}{
		{"valid items then random bytes", concat(valid, brokenFrame), nil, garbage},
		{"valid items then a frame of garbage", concat(valid, []byte{0x10}, bytes.Repeat([]byte{0xfe}, 16)), nil, garbage},
		{"valid items then an undecodable item", concat(concat(append([][]byte{hdr}, items...)...), badItem, trailer), nil, garbage},
		{"valid items then a bad key", concat(valid, badKey), nil, garbage},
		{"an item out of order", concat(valid, items[5], items[10]), nil, garbage},
		{"an item twice", concat(valid, items[9]), nil, garbage},
		{"a second header", concat(valid, hdr), nil, garbage},
		{"a trailer with the wrong count", concat(concat(append([][]byte{hdr}, items...)...), wrongCount), nil, garbage},
		{"data after the trailer", concat(full, items[0]), nil, garbage},
		{"a frame over the limit", concat(valid, binary.AppendUvarint(nil, maxBodyFrameBytes+1)), nil, garbage},
		{"a newer format version", concat(append([][]byte{newerHeader}, items...)...), nil, version},
		{"cut mid-frame", concat(valid, items[10][:len(items[10])/2]), nil, cut},
		{"cut in a frame length", concat(valid, []byte{0x80}), nil, cut},
		{"cut between frames", valid, nil, cut},
		{"cut in the trailer", full[:len(full)-1], nil, cut},
		{"cut in the header", hdr[:len(hdr)/2], nil, cut},
		{"empty", nil, nil, cut},
		{"the reader fails mid-frame", concat(valid, items[10][:3]), errBroken, broken},
		{"the reader fails between frames", valid, errBroken, broken},
	}
	readers := []struct {
		name string
		wrap func(b []byte, fail error) io.Reader
	}{
		{"seekable", func(b []byte, fail error) io.Reader {
			if fail != nil {
				return nil // a seekable reader that fails is not worth faking
			}
			return bytes.NewReader(b)
		}},
		{"spooled", func(b []byte, fail error) io.Reader {
			if fail != nil {
				return &failingReader{b: b, err: fail}
			}
			return onlyReader{bytes.NewReader(b)}
		}},
	}
	before := fingerprint(t, dst)
	for _, rd := range readers {
		for _, tc := range cases {
			r := rd.wrap(tc.in, tc.fail)
			if r == nil {
				continue
			}
			t.Run(rd.name+"/"+tc.name, func(t *testing.T) {
				res, err := dst.ImportState(ctx, r)
				if err == nil {
					t.Fatalf("imported: %+v", res)
				}
				isGarbage := errors.Is(err, crdt.ErrInvalid) || errors.Is(err, crdt.ErrTooLarge)
				isVersion := errors.Is(err, crdt.ErrVersion)
				isCut := errors.Is(err, io.ErrUnexpectedEOF)
				isBroken := errors.Is(err, errBroken)
				got := map[int]bool{garbage: isGarbage, version: isVersion, cut: isCut, broken: isBroken}
				for class, is := range got {
					if is != (class == tc.want) {
						t.Fatalf("error %q: garbage %v, version %v, cut %v, broken %v; want class %d only",
							err, isGarbage, isVersion, isCut, isBroken, tc.want)
					}
				}
				if res != (ImportResult{}) {
					t.Errorf("a rejected import reports %+v", res)
				}
				if after := fingerprint(t, dst); after != before {
					t.Fatalf("the rejected stream changed the node:\nbefore %s\nafter  %s", before, after)
				}
				emptyDir(t, cfg.TempDir)
			})
		}
	}

	t.Run("canceled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := dst.ImportState(cctx, onlyReader{bytes.NewReader(full)}); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
		if after := fingerprint(t, dst); after != before {
			t.Fatal("a canceled import changed the node")
		}
	})

	// A valid stream imports, through either reader, and the nodes
	// converge once dst's state goes back the other way.
	t.Run("valid", func(t *testing.T) {
		res, err := dst.ImportState(ctx, onlyReader{bytes.NewReader(full)})
		if err != nil || res.Items != len(items) || res.Changed != len(items) {
			t.Fatalf("import: %+v, %v; want %d items, all changed", res, err, len(items))
		}
		emptyDir(t, cfg.TempDir)
		again, err := dst.ImportState(ctx, bytes.NewReader(full))
		if err != nil || again.Changed != 0 {
			t.Fatalf("importing again: %+v, %v; want nothing changed", again, err)
		}
		if _, err := src.ImportState(ctx, bytes.NewReader(exportOf(t, dst))); err != nil {
			t.Fatal(err)
		}
		for _, c := range []string{"snapshots", "images"} {
			if a, b := dump(t, src, c), dump(t, dst, c); a != b {
				t.Fatalf("%s differ after exchanging full states:\n%s\n%s", c, a, b)
			}
		}
		_, as := src.Contexts()
		_, ad := dst.Contexts()
		if !as.Equal(ad) {
			t.Fatal("applied contexts differ after exchanging full states")
		}
		if _, err := dst.Get(ctx, key("snapshots", "s03")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("the removed item: %v, want ErrNotFound", err)
		}
		// Both concurrent adds of s07 survive, with their fields.
		it, err := dst.Get(ctx, key("snapshots", "s07"))
		if err != nil || string(it.Metadata["dst"]) != `"concurrent"` || string(it.Metadata["src"]) != "true" {
			t.Fatalf("the concurrently written item: %+v, %v", it, err)
		}
	})
}

// TestNode_ImportSpoolLimit: a stream that must be spooled may be exactly
// MaxStateBytes long, not a byte more; a longer one is ErrStateTooLarge
// (which is crdt.ErrTooLarge too) and changes nothing. A seekable stream
// is not spooled, so the limit does not apply to it.
func TestNode_ImportSpoolLimit(t *testing.T) {
	ctx := context.Background()
	src := openMem(t, testConfig(nil))
	for i := range 10 {
		if _, err := src.Add(ctx, key("snapshots", fmt.Sprint("s", i)), mustDoc(t, `{"a":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	full := exportOf(t, src)
	cfg := testConfig(nil)
	cfg.TempDir = t.TempDir()
	cfg.MaxStateBytes = int64(len(full) - 1)
	dst := openMem(t, cfg)
	before := fingerprint(t, dst)
	_, err := dst.ImportState(ctx, onlyReader{bytes.NewReader(full)})
	if !errors.Is(err, ErrStateTooLarge) || !errors.Is(err, crdt.ErrTooLarge) {
		t.Fatalf("got %v, want ErrStateTooLarge", err)
	}
	if fingerprint(t, dst) != before {
		t.Fatal("a stream over the limit changed the node")
	}
	emptyDir(t, cfg.TempDir)
	if _, err := dst.ImportState(ctx, bytes.NewReader(full)); err != nil {
		t.Fatalf("a seekable stream over the spool limit: %v", err)
	}

	cfg.MaxStateBytes = int64(len(full))
	exact := openMem(t, cfg)
	if _, err := exact.ImportState(ctx, onlyReader{bytes.NewReader(full)}); err != nil {
		t.Fatalf("a stream of exactly MaxStateBytes: %v", err)
	}
	if dump(t, exact, "snapshots") != dump(t, src, "snapshots") {
		t.Fatal("the import at the limit is incomplete")
	}
	emptyDir(t, cfg.TempDir)
}

// TestNode_ImportSeeksBackToItsStart: a seekable reader already advanced
// past other data is read from where it stands, twice.
func TestNode_ImportSeeksBackToItsStart(t *testing.T) {
	ctx := context.Background()
	src := openMem(t, testConfig(nil))
	if _, err := src.Add(ctx, key("images", "one"), mustDoc(t, `{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	r := bytes.NewReader(concat([]byte("preamble"), exportOf(t, src)))
	if _, err := r.Seek(int64(len("preamble")), io.SeekStart); err != nil {
		t.Fatal(err)
	}
	dst := openMem(t, testConfig(nil))
	if res, err := dst.ImportState(ctx, r); err != nil || res.Items != 1 || res.Changed != 1 {
		t.Fatalf("import: %+v, %v", res, err)
	}
	if _, err := dst.Get(ctx, key("images", "one")); err != nil {
		t.Fatal(err)
	}
}
