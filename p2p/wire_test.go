package p2p

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// TestReadFrame_MemoryFollowsBytesReceived: a frame that announces the
// largest allowed size and carries a few bytes costs about those bytes,
// not the announced size, and ends as a stream cut short; a frame over
// the limit is refused before any of it is read; a whole frame round-trips.
func TestReadFrame_MemoryFollowsBytesReceived(t *testing.T) {
	announce := func(size uint64, body []byte) *bufio.Reader {
		return bufio.NewReader(bytes.NewReader(append(binary.AppendUvarint(nil, size), body...)))
	}

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 8 {
		_, _, err := readFrame(announce(maxSyncFrame, make([]byte, 1000)), maxSyncFrame)
		if !errors.Is(err, io.ErrUnexpectedEOF) || isGarbage(err) {
			t.Fatalf("a frame cut short: %v, want io.ErrUnexpectedEOF, not garbage", err)
		}
	}
	runtime.ReadMemStats(&after)
	// Eight frames announcing 64 MiB each; allow 1 MiB in all.
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("eight frames of 1000 bytes announcing %d bytes each allocated %d bytes", maxSyncFrame, got)
	}

	if _, _, err := readFrame(announce(maxSyncFrame+1, nil), maxSyncFrame); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("a frame over the limit: %v, want ErrBadMessage", err)
	}

	enc, err := crdt.EncodeContext(crdt.NewContext())
	if err != nil {
		t.Fatal(err)
	}
	want := &syncFrame{Kind: frameRequest, Version: wireVersion, Network: "n", Context: enc, Deltas: [][]byte{make([]byte, 12<<10)}}
	var buf bytes.Buffer
	n, err := writeFrame(&buf, want)
	if err != nil {
		t.Fatal(err)
	}
	got, m, err := readFrame(bufio.NewReader(&buf), maxSyncFrame)
	if err != nil || m != n || got.Network != "n" || len(got.Deltas) != 1 || len(got.Deltas[0]) != 12<<10 {
		t.Fatalf("round trip: %+v, %d bytes (wrote %d), %v", got, m, n, err)
	}
}
