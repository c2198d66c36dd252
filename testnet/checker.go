package testnet

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"
)

// Anomaly kinds reported by Check.
const (
	// AnomalyLost: an acknowledged add that no remove could have observed,
	// yet the item is absent.
	AnomalyLost = "lost"
	// AnomalyResurrected: an acknowledged remove that provably observed
	// every add that may have taken effect, yet the item is present.
	AnomalyResurrected = "resurrected"
	// AnomalyPhantom: an item present that no add may have created.
	AnomalyPhantom = "phantom"
	// AnomalyForeignMetadata: the winning metadata carries no tag of a
	// write of this item.
	AnomalyForeignMetadata = "foreign-metadata"
	// AnomalyMixedMetadata: the winning metadata is not exactly the
	// document of the write whose tag it carries.
	AnomalyMixedMetadata = "mixed-metadata"
	// AnomalyStaleMetadata: the winning metadata belongs to a write that
	// an acknowledged later write observed and so superseded.
	AnomalyStaleMetadata = "stale-metadata"
)

// Anomaly is one violation found by Check, with every operation on its
// key for replay.
type Anomaly struct {
	Kind   string
	Key    Key
	Detail string
	Ops    []Op
}

// Report is the result of Check. Its String is meant to be printed on
// failure: it names the seed and lists, for every anomaly, the operations
// on that key and the cluster events.
type Report struct {
	Record    Record
	Counts    map[Outcome]int // outcomes of the operations on the keys checked
	Keys      int             // keys checked
	Present   int             // of them, present in the final state
	Anomalies []Anomaly
}

// OK reports whether no anomaly was found.
func (r *Report) OK() bool { return len(r.Anomalies) == 0 }

// Summary is one line: keys, presence, outcome counts, anomalies.
func (r *Report) Summary() string {
	c := r.Counts
	return fmt.Sprintf("%d ops (%d ok, %d failed, %d unknown), %d keys, %d present, %d anomalies",
		c[OK]+c[Failed]+c[Unknown]+c[Pending], c[OK], c[Failed], c[Unknown]+c[Pending], r.Keys, r.Present, len(r.Anomalies))
}

// String lists the anomalies (at most 20 in full) with what is needed to
// replay them.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s; seed %d (replay: TESTNET_SEED=%d, or -seed %d)\n", r.Summary(), r.Record.Seed, r.Record.Seed, r.Record.Seed)
	for i, a := range r.Anomalies {
		if i == 20 {
			fmt.Fprintf(&b, "... and %d more anomalies\n", len(r.Anomalies)-i)
			break
		}
		fmt.Fprintf(&b, "%s %s: %s\n", a.Kind, a.Key, a.Detail)
		for _, op := range a.Ops {
			fmt.Fprintf(&b, "    %s\n", r.Record.FormatOp(op))
		}
	}
	if !r.OK() {
		b.WriteString("events (times since the history began):\n")
		b.WriteString(r.Record.FormatEvents())
	}
	return b.String()
}

// Check classifies every key of the history (and every key of final)
// accepted by keys (nil: all) against final, the converged state, in the
// manner of a Jepsen set checker adapted to an add-wins observed-remove
// set.
//
// The checker knows causality only where it can prove it: an operation
// observed an earlier one if both ran on the same replica one after the
// other, or if a convergence barrier lies between them (knowledge spreads
// transitively through barriers). It knows that an operation could not
// observe another if it ended before the other began, or if a partition
// separated them for the whole time. Unknown outcomes are taken as
// possibly effective until the peer's process exited.
//
//   - lost: the item is absent although some acknowledged add could not
//     have been observed by any remove that may have taken effect;
//   - resurrected: the item is present although an acknowledged remove
//     provably observed every add that may have taken effect (so a
//     remove concurrent with an add on the other side of a partition
//     expects the item present: add wins);
//   - phantom: present without any add;
//   - foreign-, mixed-, stale-metadata: the winning document is not the
//     document of one write of the item, or is one that an acknowledged
//     write provably superseded.
func Check(rec Record, final State, keys func(Key) bool) *Report {
	rep := &Report{Record: rec, Counts: map[Outcome]int{}}
	byKey := map[Key][]Op{}
	for _, op := range rec.Ops {
		if keys == nil || keys(op.Key) {
			byKey[op.Key] = append(byKey[op.Key], op)
			rep.Counts[op.Outcome]++
		}
	}
	for k := range final {
		if _, ok := byKey[k]; !ok && (keys == nil || keys(k)) {
			byKey[k] = nil
		}
	}
	ck := newChecker(&rec)
	for _, k := range slices.SortedFunc(maps.Keys(byKey), func(a, b Key) int {
		return strings.Compare(a.String(), b.String())
	}) {
		rep.Keys++
		it, present := final[k]
		if present {
			rep.Present++
		}
		for _, a := range ck.checkKey(k, byKey[k], it, present) {
			a.Ops = byKey[k]
			rep.Anomalies = append(rep.Anomalies, a)
		}
	}
	return rep
}

// forever stands for "no upper bound" on when an operation took effect.
var forever = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

type checker struct {
	rec      *Record
	barriers []Barrier // by Start
}

func newChecker(rec *Record) *checker {
	bs := slices.Clone(rec.Barriers)
	slices.SortFunc(bs, func(a, b Barrier) int { return a.Start.Compare(b.Start) })
	return &checker{rec: rec, barriers: bs}
}

// mayHaveEffect reports whether op may have taken effect.
func mayHaveEffect(op Op) bool { return op.Outcome != Failed }

// effectBy returns the latest time at which op can have taken effect: its
// completion if acknowledged, else the first exit of its peer's process
// after its invocation, else forever.
func (c *checker) effectBy(op Op) time.Time {
	if op.Outcome == OK {
		return op.Complete
	}
	end := forever
	for _, e := range c.rec.Exits {
		if e.Replica.Peer == op.Replica.Peer && !e.Time.Before(op.Invoke) && e.Time.Before(end) {
			end = e.Time
		}
	}
	return end
}

// knowledge returns, for an acknowledged op, from when each replica
// provably held it: its own replica from its completion, then every member
// of a barrier from the barrier's end once some member held it before the
// barrier's start.
func (c *checker) knowledge(op Op) map[Replica]time.Time {
	if op.Outcome != OK {
		return nil
	}
	know := map[Replica]time.Time{op.Replica: op.Complete}
	for _, b := range c.barriers {
		held := false
		for _, m := range b.Members {
			if t, ok := know[m]; ok && t.Before(b.Start) {
				held = true
				break
			}
		}
		if !held {
			continue
		}
		for _, m := range b.Members {
			if t, ok := know[m]; !ok || b.End.Before(t) {
				know[m] = b.End
			}
		}
	}
	return know
}

// observed reports whether b provably observed a (a's replica-knowledge
// know, from knowledge(a)).
func observed(know map[Replica]time.Time, b Op) bool {
	t, ok := know[b.Replica]
	return ok && t.Before(b.Invoke)
}

// groupOf returns p's group in cut; peers the cut does not list are alone.
func groupOf(cut Cut, p int) int {
	if g, ok := cut.Group[p]; ok {
		return g
	}
	return -1 - p
}

// couldObserve reports whether remove r may have observed add a: not if r
// took effect before a began, nor if a partition separated their peers
// from before a began until after r could last have taken effect.
func (c *checker) couldObserve(a, r Op) bool {
	rEnd := c.effectBy(r)
	if rEnd.Before(a.Invoke) {
		return false
	}
	for _, cut := range c.rec.Cuts {
		if groupOf(cut, a.Replica.Peer) != groupOf(cut, r.Replica.Peer) &&
			!a.Invoke.Before(cut.Start) && !rEnd.After(cut.End) {
			return false
		}
	}
	return true
}

func (c *checker) checkKey(k Key, ops []Op, it Item, present bool) []Anomaly {
	var adds, removes, writes []Op
	for _, op := range ops {
		switch op.Kind {
		case KindAdd:
			adds = append(adds, op)
			writes = append(writes, op)
		case KindRemove:
			removes = append(removes, op)
		case KindPut:
			writes = append(writes, op)
		}
	}
	var out []Anomaly
	if !present {
		for _, a := range adds {
			if a.Outcome != OK {
				continue
			}
			survives := true
			for _, r := range removes {
				if mayHaveEffect(r) && c.couldObserve(a, r) {
					survives = false
					break
				}
			}
			if survives {
				out = append(out, Anomaly{Kind: AnomalyLost, Key: k,
					Detail: fmt.Sprintf("absent, but add #%d (%s) was acknowledged and no remove could have observed it", a.Index, a.Replica)})
				break
			}
		}
		return out
	}

	effective := 0
	for _, a := range adds {
		if mayHaveEffect(a) {
			effective++
		}
	}
	if effective == 0 {
		return append(out, Anomaly{Kind: AnomalyPhantom, Key: k, Detail: "present, but no add of it may have taken effect"})
	}
	knows := map[int]map[Replica]time.Time{}
	know := func(op Op) map[Replica]time.Time {
		m, ok := knows[op.Index]
		if !ok {
			m = c.knowledge(op)
			knows[op.Index] = m
		}
		return m
	}
	for _, r := range removes {
		if r.Outcome != OK {
			continue
		}
		all := true
		for _, a := range adds {
			if mayHaveEffect(a) && !observed(know(a), r) {
				all = false
				break
			}
		}
		if all {
			out = append(out, Anomaly{Kind: AnomalyResurrected, Key: k,
				Detail: fmt.Sprintf("present, but remove #%d (%s) was acknowledged after observing every add", r.Index, r.Replica)})
			break
		}
	}

	tag, _ := it.Metadata["op"].(string)
	var w *Op
	for i := range writes {
		if writes[i].Tag == tag && tag != "" && mayHaveEffect(writes[i]) {
			w = &writes[i]
		}
	}
	if w == nil {
		return append(out, Anomaly{Kind: AnomalyForeignMetadata, Key: k,
			Detail: fmt.Sprintf("winning metadata %s carries no tag of a write of this item", jsonString(it.Metadata))})
	}
	if !sameJSON(w.Doc, it.Metadata) {
		out = append(out, Anomaly{Kind: AnomalyMixedMetadata, Key: k,
			Detail: fmt.Sprintf("winning metadata %s is not the document %s of write #%d", jsonString(it.Metadata), jsonString(w.Doc), w.Index)})
	}
	for _, w2 := range writes {
		if w2.Outcome == OK && w2.Index != w.Index && observed(know(*w), w2) {
			out = append(out, Anomaly{Kind: AnomalyStaleMetadata, Key: k,
				Detail: fmt.Sprintf("metadata of write #%d won, but acknowledged write #%d observed and superseded it", w.Index, w2.Index)})
			break
		}
	}
	return out
}

// sameJSON compares two documents as JSON values.
func sameJSON(a, b map[string]any) bool {
	var x, y any
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil || json.Unmarshal(ja, &x) != nil || json.Unmarshal(jb, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
