package crdt

import (
	"fmt"
	"slices"
)

// Op names the operation that produced a delta. It is informative only: the
// join does not depend on it.
type Op uint8

// The operations.
const (
	OpAdd     Op = 1 // add an item with a metadata document
	OpRemove  Op = 2 // remove an item and all its observed metadata
	OpReplace Op = 3 // replace the whole metadata document
	OpPatch   Op = 4 // JSON merge patch of the metadata document
)

var opNames = map[Op]string{OpAdd: "add", OpRemove: "remove", OpReplace: "replace", OpPatch: "patch"}

// String returns "add", "remove", "replace" or "patch".
func (o Op) String() string {
	if s, ok := opNames[o]; ok {
		return s
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// ParseOp is the inverse of Op.String.
func ParseOp(s string) (Op, error) {
	for o, n := range opNames {
		if n == s {
			return o, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown op %q", ErrInvalid, s)
}

// Delta is the effect of one operation on one item, as a small state: the
// operation's dot and timestamp, the dots it covers (Context: its own dot
// and every dot whose entries it removed), and the entries of the item after
// the operation whose dots are in Context. Joining a delta into a state
// therefore adds the operation's new entries, deletes the entries it
// removed, and — because a delta is a state — changes nothing when it is
// stale or duplicated.
//
// A Delta is a value: functions of this package never modify one.
type Delta struct {
	Dot        Dot
	TS         Timestamp
	Op         Op
	Collection string
	ID         string
	Context    []Dot // sorted, no duplicates, contains Dot
	Item       Item  // every dot in Item is in Context
	// Proof places the delta in its replica's hash chain (see proof.go).
	// It is not part of EncodeDelta's encoding: it travels beside it.
	Proof Proof
}

// Key returns the item the delta is about.
func (d *Delta) Key() Key { return Key{d.Collection, d.ID} }

// Kind returns the CRDT that the seed's transcript names for the delta:
// "orset" for membership changes (add, remove) and "lww" for metadata
// writes.
func (d *Delta) Kind() string {
	if d.Op == OpAdd || d.Op == OpRemove {
		return "orset"
	}
	return "lww"
}

// Covers returns Context as a DotSet.
func (d *Delta) Covers() DotSet { return dotList(d.Context) }

// Validate checks that d is well formed: valid names, dots and
// timestamps, sorted dot lists, every entry's dot in Context, values that are
// valid compact JSON, and the size limits. A delta that passes can be joined
// into any state.
func (d *Delta) Validate() error {
	if err := ValidateCollection(d.Collection); err != nil {
		return err
	}
	if err := ValidateID(d.ID); err != nil {
		return err
	}
	var rc replicaCheck
	if err := rc.dot(d.Dot); err != nil {
		return err
	}
	if err := d.TS.Validate(); err != nil {
		return err
	}
	if _, ok := opNames[d.Op]; !ok {
		return fmt.Errorf("%w: unknown op %d", ErrInvalid, d.Op)
	}
	n := len(d.Context) + len(d.Item.Presence)
	for _, es := range d.Item.Fields {
		n += len(es)
	}
	if n > MaxDeltaDots {
		return fmt.Errorf("%w: delta names %d dots, limit %d", ErrTooLarge, n, MaxDeltaDots)
	}
	if err := rc.sortedDots(d.Context, "context"); err != nil {
		return err
	}
	cov := dotList(d.Context)
	i, found := slices.BinarySearchFunc(d.Context, d.Dot, compareDots)
	if !found {
		return fmt.Errorf("%w: delta context lacks the delta's own dot %s", ErrInvalid, d.Dot)
	}
	if i+1 < len(d.Context) && d.Context[i+1].Replica == d.Dot.Replica {
		// A replica can only have observed its own earlier operations.
		return fmt.Errorf("%w: delta %s: context names %s, a later dot of its own replica", ErrInvalid, d.Dot, d.Context[i+1])
	}
	if err := d.Item.validateWith(&rc, cov, true); err != nil {
		return err
	}
	// An add holds its presence, unless it holds none of its own entries:
	// a stub's encoding (see stub.go) is decoded before its proof.
	if d.Op == OpAdd && !slices.Contains(d.Item.Presence, d.Dot) && d.HasOwn() {
		return fmt.Errorf("%w: add delta lacks its presence dot", ErrInvalid)
	}
	if err := d.validateStub(); err != nil {
		return err
	}
	if d.Proof.Sig != nil && (len(d.Proof.Sig) != SigSize || d.Proof.Prev.IsZero()) {
		return fmt.Errorf("%w: delta %s: a signature of %d bytes needs a chain hash and %d bytes", ErrInvalid, d.Dot, len(d.Proof.Sig), SigSize)
	}
	return nil
}

// validate checks an item's dots, field names and values — that they are
// canonical JSON if values is set, else only that they are not empty; when
// cov is not nil every dot must be in it.
func (it *Item) validate(cov DotSet, values bool) error {
	var rc replicaCheck
	return it.validateWith(&rc, cov, values)
}

func (it *Item) validateWith(rc *replicaCheck, cov DotSet, values bool) error {
	if err := rc.sortedDots(it.Presence, "presence"); err != nil {
		return err
	}
	if len(it.Fields) > MaxFields*16 {
		return fmt.Errorf("%w: item has %d fields", ErrTooLarge, len(it.Fields))
	}
	for _, p := range it.Presence {
		if cov != nil && !cov.Contains(p) {
			return fmt.Errorf("%w: presence dot %s outside the delta's context", ErrInvalid, p)
		}
	}
	for f, es := range it.Fields {
		if err := ValidateFieldName(f); err != nil {
			return err
		}
		if len(es) == 0 {
			return fmt.Errorf("%w: field %q has no entries", ErrInvalid, f)
		}
		for i, e := range es {
			if err := rc.dot(e.Dot); err != nil {
				return err
			}
			if i > 0 && !es[i-1].Dot.Less(e.Dot) {
				return fmt.Errorf("%w: field %q: entries not sorted by dot", ErrInvalid, f)
			}
			if cov != nil && !cov.Contains(e.Dot) {
				return fmt.Errorf("%w: field %q: dot %s outside the delta's context", ErrInvalid, f, e.Dot)
			}
			if err := e.TS.Validate(); err != nil {
				return err
			}
			if values && !isCanonical(e.Value) {
				return fmt.Errorf("%w: field %q: value is not canonical JSON", ErrInvalid, f)
			}
			if len(e.Value) == 0 {
				return fmt.Errorf("%w: field %q: empty value", ErrInvalid, f)
			}
		}
	}
	return nil
}

// replicaCheck validates dots as Dot.Validate does, remembering the last
// replica ID it found valid: the dots of one delta or item mostly name one
// replica.
type replicaCheck struct {
	last ReplicaID
	ok   bool
}

func (c *replicaCheck) dot(d Dot) error {
	if !c.ok || d.Replica != c.last {
		if err := d.Validate(); err != nil {
			return err
		}
		c.last, c.ok = d.Replica, true
		return nil
	}
	if d.Counter == 0 {
		return d.Validate()
	}
	return nil
}

// sortedDots checks that ds are valid, strictly increasing dots.
func (c *replicaCheck) sortedDots(ds []Dot, what string) error {
	for i, d := range ds {
		if err := c.dot(d); err != nil {
			return err
		}
		if i > 0 && !ds[i-1].Less(d) {
			return fmt.Errorf("%w: %s dots not sorted or duplicated at %s", ErrInvalid, what, d)
		}
	}
	return nil
}
