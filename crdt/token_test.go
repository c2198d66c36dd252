package crdt

import (
	"errors"
	"strings"
	"testing"
)

func TestToken_RoundTripAndMerge(t *testing.T) {
	a := Token{}
	a.Add(Dot{"r2", 5})
	a.Add(Dot{"r1:x", 3})
	a.Add(Dot{"r2", 4}) // older: changes nothing
	if got, want := a.String(), "r1:x:3,r2:5"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	b, err := ParseToken("r2:7,r3:1,r2:6")
	if err != nil {
		t.Fatal(err)
	}
	a.Merge(b)
	if got, want := a.String(), "r1:x:3,r2:7,r3:1"; got != want {
		t.Fatalf("merged %q, want %q", got, want)
	}
	back, err := ParseToken(a.String())
	if err != nil || back.String() != a.String() {
		t.Fatalf("round trip %q: %v, %v", a, back, err)
	}
	if tok, err := ParseToken(""); err != nil || len(tok) != 0 {
		t.Fatalf("empty token: %v, %v", tok, err)
	}

	applied := NewContext()
	for c := uint64(1); c <= 7; c++ {
		applied.Add(Dot{"r2", c})
	}
	applied.Add(Dot{"r1:x", 1})
	got := a.Missing(applied)
	if len(got) != 2 || got[0] != (Dot{"r1:x", 3}) || got[1] != (Dot{"r3", 1}) {
		t.Fatalf("Missing = %v", got)
	}
}

func TestToken_ParseRejects(t *testing.T) {
	for _, c := range []struct {
		in   string
		want error
	}{
		{"r1", ErrInvalid},
		{"r1:", ErrInvalid},
		{":5", ErrInvalid},
		{"r1:0", ErrInvalid},
		{"r1:-1", ErrInvalid},
		{"r1:18446744073709551616", ErrInvalid},
		{"r 1:5", ErrInvalid},
		{"r1:5,", ErrInvalid},
		{strings.Repeat("x", 65) + ":1", ErrInvalid},
		{strings.Repeat("r:1,", MaxTokenReplicas) + "r:1", ErrTooLarge},
	} {
		if _, err := ParseToken(c.in); !errors.Is(err, c.want) {
			t.Errorf("ParseToken(%.40q) = %v, want %v", c.in, err, c.want)
		}
	}
}

// FuzzParseToken: no input panics; what parses prints back to a token
// that parses to the same text.
func FuzzParseToken(f *testing.F) {
	f.Add("r1:3,r2:5")
	f.Add("12D3KooWabc.k3x7q2ab:9")
	f.Add("a:b:1,,")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			return
		}
		back, err := ParseToken(tok.String())
		if err != nil || back.String() != tok.String() {
			t.Fatalf("%q → %q → %v, %v", s, tok, back, err)
		}
	})
}
