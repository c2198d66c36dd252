package crdt

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
)

// The JSON form of a delta, used by GET and POST /crdt/delta:
//
//	{
//	  "dot": {"replica": "a1b2", "counter": 7},
//	  "ts": "2023-12-07T10:30:45.000Z/0",
//	  "op": "add",
//	  "collection": "snapshots",
//	  "id": "snap1",
//	  "context": [{"replica": "a1b2", "counter": 7}],
//	  "presence": [{"replica": "a1b2", "counter": 7}],
//	  "fields": {"size": [{"dot": {"replica": "a1b2", "counter": 7}, "ts": "...", "value": 1024}]},
//	  "proof": {"prev": "<64 hex digits>", "sig": "<128 hex digits, or absent>", "split": true}
//	}
//
// "proof" is absent for a delta without one (see Proof); "split" for a
// delta of the old chain format; a stub (see stub.go) has "elided": "<64
// hex digits>" and none of its own entries.

// MaxDeltaJSONBytes bounds the JSON form UnmarshalJSON takes: room for the
// JSON form of any delta that DecodeDelta accepts — its strings and values
// at most twice their binary size (escapes), plus a dot, a timestamp and
// their keys, some 170 bytes, for each of the up to MaxDeltaDots dots and
// entries it names — with white space besides.
const MaxDeltaJSONBytes = 2*MaxDeltaBytes + 256*MaxDeltaDots

type jsonDot struct {
	Replica ReplicaID `json:"replica"`
	Counter uint64    `json:"counter"`
}

type jsonEntry struct {
	Dot   jsonDot         `json:"dot"`
	TS    Timestamp       `json:"ts"`
	Value json.RawMessage `json:"value"`
}

type jsonDelta struct {
	Dot        jsonDot                `json:"dot"`
	TS         Timestamp              `json:"ts"`
	Op         string                 `json:"op"`
	Collection string                 `json:"collection"`
	ID         string                 `json:"id"`
	Context    []jsonDot              `json:"context"`
	Presence   []jsonDot              `json:"presence"`
	Fields     map[string][]jsonEntry `json:"fields"`
	Proof      *jsonProof             `json:"proof,omitempty"`
}

// jsonProof is a delta's Proof: its chain hash before it, and the
// signature of the chain head after it if it carries one, both in hex.
type jsonProof struct {
	Prev string `json:"prev"`
	Sig  string `json:"sig,omitempty"`
	// Split is set for a delta of the split chain format; Elided, in hex,
	// for a stub (see Proof).
	Split  bool   `json:"split,omitempty"`
	Elided string `json:"elided,omitempty"`
}

func toJSONProof(p Proof) *jsonProof {
	if p.Prev.IsZero() {
		return nil
	}
	j := &jsonProof{Prev: hex.EncodeToString(p.Prev[:]), Sig: hex.EncodeToString(p.Sig), Split: p.Split}
	if !p.Elided.IsZero() {
		j.Elided = hex.EncodeToString(p.Elided[:])
	}
	return j
}

func fromJSONProof(j *jsonProof) (Proof, error) {
	var p Proof
	if j == nil {
		return p, nil
	}
	prev, err := hex.DecodeString(j.Prev)
	if err != nil || len(prev) != len(p.Prev) {
		return p, fmt.Errorf("%w: proof: prev must be %d hex bytes", ErrInvalid, len(p.Prev))
	}
	copy(p.Prev[:], prev)
	if p.Prev.IsZero() {
		return p, fmt.Errorf("%w: proof: zero chain hash", ErrInvalid)
	}
	if j.Sig != "" {
		if p.Sig, err = hex.DecodeString(j.Sig); err != nil || len(p.Sig) != SigSize {
			return p, fmt.Errorf("%w: proof: sig must be %d hex bytes", ErrInvalid, SigSize)
		}
	}
	p.Split = j.Split
	if j.Elided != "" {
		e, err := hex.DecodeString(j.Elided)
		if err != nil || len(e) != HashSize || !j.Split {
			return p, fmt.Errorf("%w: proof: elided must be %d hex bytes, of a split proof", ErrInvalid, HashSize)
		}
		copy(p.Elided[:], e)
		if p.Elided.IsZero() {
			return p, fmt.Errorf("%w: proof: zero elided digest", ErrInvalid)
		}
	}
	return p, nil
}

func toJSONDots(ds []Dot) []jsonDot {
	out := make([]jsonDot, len(ds))
	for i, d := range ds {
		out[i] = jsonDot(d)
	}
	return out
}

func fromJSONDots(ds []jsonDot) []Dot {
	if len(ds) == 0 {
		return nil
	}
	out := make([]Dot, len(ds))
	for i, d := range ds {
		out[i] = Dot(d)
	}
	return out
}

// MarshalJSON encodes d in its JSON form.
func (d *Delta) MarshalJSON() ([]byte, error) {
	j := jsonDelta{
		Dot: jsonDot(d.Dot), TS: d.TS, Op: d.Op.String(), Collection: d.Collection, ID: d.ID,
		Context: toJSONDots(d.Context), Presence: toJSONDots(d.Item.Presence),
		Fields: make(map[string][]jsonEntry, len(d.Item.Fields)),
		Proof:  toJSONProof(d.Proof),
	}
	for f, es := range d.Item.Fields {
		for _, e := range es {
			j.Fields[f] = append(j.Fields[f], jsonEntry{jsonDot(e.Dot), e.TS, e.Value})
		}
	}
	// Values are stored JSON: escaping "<", ">", "&" or U+2028 would change
	// their bytes, and two replicas would then hold different copies of one
	// write.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(j); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// UnmarshalJSON decodes the JSON form and validates the result like
// DecodeDelta. Unknown keys are an error; on error d is left unchanged.
func (d *Delta) UnmarshalJSON(b []byte) error {
	if len(b) > MaxDeltaJSONBytes {
		return fmt.Errorf("decode delta: %w: %d bytes of JSON", ErrTooLarge, len(b))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var j jsonDelta
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("decode delta: %w: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("decode delta: %w: data after the delta", ErrInvalid)
	}
	op, err := ParseOp(j.Op)
	if err != nil {
		return fmt.Errorf("decode delta: %w", err)
	}
	n := Delta{
		Dot: Dot(j.Dot), TS: j.TS, Op: op, Collection: j.Collection, ID: j.ID,
		Context: fromJSONDots(j.Context), Item: Item{Presence: fromJSONDots(j.Presence)},
	}
	if n.Proof, err = fromJSONProof(j.Proof); err != nil {
		return fmt.Errorf("decode delta: %w", err)
	}
	for f, es := range j.Fields {
		if n.Item.Fields == nil {
			n.Item.Fields = map[string][]Entry{}
		}
		list := make([]Entry, len(es))
		for i, e := range es {
			v, err := canonicalJSON(e.Value)
			if err != nil {
				return fmt.Errorf("decode delta: %w: field %q: %v", ErrInvalid, f, err)
			}
			list[i] = Entry{Dot(e.Dot), e.TS, v}
		}
		n.Item.Fields[f] = list
	}
	// Accept dot lists and entries in any order, as a person may write them.
	n.Context = sortDots(slices.Clone(n.Context))
	slices.SortFunc(n.Item.Presence, compareDots)
	for _, es := range n.Item.Fields {
		slices.SortFunc(es, func(a, b Entry) int { return compareDots(a.Dot, b.Dot) })
	}
	if err := n.Validate(); err != nil {
		return fmt.Errorf("decode delta: %w", err)
	}
	*d = n
	return nil
}
