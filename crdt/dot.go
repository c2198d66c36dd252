package crdt

import (
	"fmt"
	"slices"
	"sort"
)

// ReplicaID names one replica: one store of one node. It is created together
// with the store and never reused, so a node whose store is wiped comes back
// as a new replica and can never mint a dot that an old one already used.
// Replica IDs are 1–64 bytes of [A-Za-z0-9._:-]; they order lexicographically,
// and that order breaks ties between metadata writes with equal timestamps.
type ReplicaID string

// MaxReplicaIDLen is the longest valid ReplicaID, in bytes.
const MaxReplicaIDLen = 64

// Validate reports whether r is a well-formed replica ID.
func (r ReplicaID) Validate() error {
	if len(r) == 0 || len(r) > MaxReplicaIDLen {
		return fmt.Errorf("%w: replica id must be 1-%d bytes, got %d", ErrInvalid, MaxReplicaIDLen, len(r))
	}
	if i := badIDByte(string(r)); i >= 0 {
		return fmt.Errorf("%w: replica id %q: byte %d is not one of [A-Za-z0-9._:-]", ErrInvalid, string(r), i)
	}
	return nil
}

// Dot identifies one operation: the Counter-th operation of Replica.
// Counters start at 1; the zero Dot is not a valid operation.
type Dot struct {
	Replica ReplicaID
	Counter uint64
}

// String formats d as "replica:counter".
func (d Dot) String() string { return fmt.Sprintf("%s:%d", d.Replica, d.Counter) }

// Less orders dots by replica, then counter.
func (d Dot) Less(o Dot) bool {
	if d.Replica != o.Replica {
		return d.Replica < o.Replica
	}
	return d.Counter < o.Counter
}

// Validate reports whether d names a possible operation.
func (d Dot) Validate() error {
	if err := d.Replica.Validate(); err != nil {
		return err
	}
	if d.Counter == 0 {
		return fmt.Errorf("%w: dot %s: counter must be at least 1", ErrInvalid, d)
	}
	return nil
}

// compareDots is the three-way form of Dot.Less.
func compareDots(a, b Dot) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return 0
}

// sortDots sorts ds in place by Less and removes duplicates.
func sortDots(ds []Dot) []Dot {
	slices.SortFunc(ds, compareDots)
	out := ds[:0]
	for i, d := range ds {
		if i == 0 || d != ds[i-1] {
			out = append(out, d)
		}
	}
	return out
}

// DotSet is anything that can answer whether it holds a dot: a *Context, or
// the dot list of a delta.
type DotSet interface {
	Contains(Dot) bool
}

// dotList is a sorted, duplicate-free slice of dots used as a DotSet.
type dotList []Dot

func (l dotList) Contains(d Dot) bool {
	if len(l) <= 8 { // a delta's context is mostly a dot or two
		for _, x := range l {
			if x == d {
				return true
			}
		}
		return false
	}
	i := sort.Search(len(l), func(i int) bool { return !l[i].Less(d) })
	return i < len(l) && l[i] == d
}

// idBytes marks the bytes allowed in ids, collection names and replica
// IDs: [A-Za-z0-9._:-].
var idBytes = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == ':' || c == '-'
	}
	return t
}()

// badIDByte returns the index of the first byte of s outside
// [A-Za-z0-9._:-], or -1.
func badIDByte(s string) int {
	for i := 0; i < len(s); i++ {
		if !idBytes[s[i]] {
			return i
		}
	}
	return -1
}
