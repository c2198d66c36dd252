package p2p

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzUnpacker: any bytes under a packed full-state frame read through
// the unpacker to their end or to an error that is garbage
// (ErrBadMessage) or a stream cut short (io.ErrUnexpectedEOF); never a
// panic, and never more than a chunk (64 KiB) decoded per read.
func FuzzUnpacker(f *testing.F) {
	var z bytes.Buffer
	w := packer(&z)
	_, _ = w.Write(bytes.Repeat([]byte("a full state, repeated; "), 5000))
	_ = w.Close()
	f.Add(z.Bytes())
	f.Add(z.Bytes()[:z.Len()/2])
	f.Add([]byte{})
	f.Add([]byte{0xff, 0x06, 0x00, 0x00, 's', 'N', 'a', 'P', 'p', 'Y', 0x01, 0x05, 0x00, 0x00, 0, 0, 0, 0, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		u := newUnpacker(&countingReader{r: bytes.NewReader(b)})
		buf := make([]byte, 128<<10)
		for range 10000 {
			n, err := u.Read(buf)
			if n > 64<<10 {
				t.Fatalf("%d bytes in one read", n)
			}
			if err == io.EOF {
				return
			}
			if err != nil {
				if !errors.Is(err, ErrBadMessage) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("an error of no known class: %v", err)
				}
				if !isGarbage(err) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("%v is not classed as garbage", err)
				}
				return
			}
		}
		t.Fatal("no end after 10,000 reads")
	})
}
