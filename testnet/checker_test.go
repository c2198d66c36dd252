package testnet

import (
	"strings"
	"testing"
	"time"
)

// hist builds synthetic histories for the checker: times are milliseconds
// after t0.
type hist struct {
	t0  time.Time
	rec Record
}

func newHist() *hist {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &hist{t0: t0, rec: Record{Seed: 42, Start: t0}}
}

func (h *hist) at(ms int) time.Time { return h.t0.Add(time.Duration(ms) * time.Millisecond) }

var testKey = Key{Collection: "snapshots", ID: "x"}

// op appends an operation on testKey and returns its tag (add and put).
func (h *hist) op(peer int, kind Kind, from, to int, o Outcome) string {
	return h.opInc(Replica{Peer: peer}, kind, from, to, o)
}

func (h *hist) opInc(r Replica, kind Kind, from, to int, o Outcome) string {
	i := len(h.rec.Ops)
	op := Op{Index: i, Replica: r, Kind: kind, Key: testKey, Invoke: h.at(from), Complete: h.at(to), Outcome: o}
	if kind != KindRemove {
		op.Tag = r.String() + "." + string(rune('a'+i))
		op.Doc = map[string]any{"op": op.Tag}
	}
	h.rec.Ops = append(h.rec.Ops, op)
	return op.Tag
}

func (h *hist) barrier(from, to int, peers ...int) {
	b := Barrier{Start: h.at(from), End: h.at(to)}
	for _, p := range peers {
		b.Members = append(b.Members, Replica{Peer: p})
	}
	h.rec.Barriers = append(h.rec.Barriers, b)
}

func (h *hist) cut(from, to int, groups ...[]int) {
	c := Cut{Start: h.at(from), End: h.at(to), Group: map[int]int{}}
	for g, ps := range groups {
		for _, p := range ps {
			c.Group[p] = g
		}
	}
	h.rec.Cuts = append(h.rec.Cuts, c)
}

func (h *hist) exit(peer, ms int) {
	h.rec.Exits = append(h.rec.Exits, Exit{Replica: Replica{Peer: peer}, Time: h.at(ms), How: "kill"})
}

// final is a state holding testKey with the document of tag, or nothing.
func final(tag string) State {
	if tag == "" {
		return State{}
	}
	return State{testKey: {Key: testKey, Metadata: map[string]any{"op": tag}}}
}

func TestCheck_Classifies(t *testing.T) {
	tests := []struct {
		name  string
		build func(h *hist) string // returns the winning tag, "" for absent
		want  string               // anomaly kind, "" for none
	}{
		{"add then remove on one replica, absent", func(h *hist) string {
			h.op(0, KindAdd, 0, 1, OK)
			h.op(0, KindRemove, 2, 3, OK)
			return ""
		}, ""},
		{"add then remove on one replica, present", func(h *hist) string {
			a := h.op(0, KindAdd, 0, 1, OK)
			h.op(0, KindRemove, 2, 3, OK)
			return a
		}, AnomalyResurrected},
		{"remove on another replica without a barrier may miss the add", func(h *hist) string {
			a := h.op(0, KindAdd, 0, 1, OK)
			h.op(1, KindRemove, 2, 3, OK)
			return a
		}, ""},
		{"remove on another replica after a barrier observed the add", func(h *hist) string {
			a := h.op(0, KindAdd, 0, 1, OK)
			h.barrier(2, 3, 0, 1)
			h.op(1, KindRemove, 4, 5, OK)
			return a
		}, AnomalyResurrected},
		{"knowledge spreads through barriers without the writer", func(h *hist) string {
			a := h.op(0, KindAdd, 0, 1, OK)
			h.barrier(2, 3, 0, 1)
			h.barrier(4, 5, 1, 2)
			h.op(2, KindRemove, 6, 7, OK)
			return a
		}, AnomalyResurrected},
		{"a barrier that began before the add completed proves nothing", func(h *hist) string {
			a := h.op(0, KindAdd, 0, 3, OK)
			h.barrier(2, 4, 0, 1)
			h.op(1, KindRemove, 5, 6, OK)
			return a
		}, ""},
		{"add after a completed remove is lost if absent", func(h *hist) string {
			h.op(0, KindAdd, 0, 1, OK)
			h.op(0, KindRemove, 2, 3, OK)
			h.op(1, KindAdd, 4, 5, OK)
			return ""
		}, AnomalyLost},
		{"add overlapping a remove may be observed", func(h *hist) string {
			h.op(1, KindAdd, 0, 10, OK)
			h.op(0, KindRemove, 5, 6, OK)
			return ""
		}, ""},
		{"partition: remove on one side, add on the other, add wins", func(h *hist) string {
			h.op(0, KindAdd, 0, 1, OK)
			h.barrier(2, 3, 0, 1, 2)
			h.cut(4, 20, []int{0, 1}, []int{2})
			h.op(0, KindRemove, 5, 6, OK)
			a := h.op(2, KindAdd, 7, 8, OK)
			return a
		}, ""},
		{"partition: the add across the cut is lost if absent", func(h *hist) string {
			h.op(0, KindAdd, 0, 1, OK)
			h.barrier(2, 3, 0, 1, 2)
			h.cut(4, 20, []int{0, 1}, []int{2})
			h.op(2, KindAdd, 5, 6, OK)
			h.op(0, KindRemove, 7, 8, OK)
			return ""
		}, AnomalyLost},
		{"partition: a remove after the heal may observe the add", func(h *hist) string {
			h.cut(0, 10, []int{0}, []int{1})
			h.op(1, KindAdd, 1, 2, OK)
			h.op(0, KindRemove, 11, 12, OK)
			return ""
		}, ""},
		{"unknown add may explain presence", func(h *hist) string {
			h.op(0, KindAdd, 0, 1, OK)
			b := h.op(0, KindAdd, 2, 3, Unknown)
			h.op(0, KindRemove, 4, 5, OK)
			return b
		}, ""},
		{"unknown remove may explain absence", func(h *hist) string {
			h.op(0, KindAdd, 0, 1, OK)
			h.op(1, KindRemove, 2, 3, Unknown)
			return ""
		}, ""},
		{"unknown remove on a peer killed before the add cannot", func(h *hist) string {
			h.op(1, KindRemove, 0, 1, Unknown)
			h.exit(1, 2)
			h.op(0, KindAdd, 3, 4, OK)
			return ""
		}, AnomalyLost},
		{"unknown remove on a peer still running may take effect late", func(h *hist) string {
			h.op(1, KindRemove, 0, 1, Unknown)
			h.op(0, KindAdd, 3, 4, OK)
			return ""
		}, ""},
		{"failed operations have no effect", func(h *hist) string {
			h.op(0, KindAdd, 0, 1, Failed)
			return ""
		}, ""},
		{"present without an add", func(h *hist) string {
			h.op(0, KindAdd, 0, 1, Failed)
			return "p0.z"
		}, AnomalyPhantom},
		{"metadata of the last write on a replica wins", func(h *hist) string {
			h.op(0, KindAdd, 0, 1, OK)
			return h.op(0, KindPut, 2, 3, OK)
		}, ""},
		{"metadata superseded by a later write on the same replica", func(h *hist) string {
			h.op(0, KindAdd, 0, 1, OK)
			w := h.op(0, KindPut, 2, 3, OK)
			h.op(0, KindPut, 4, 5, OK)
			return w
		}, AnomalyStaleMetadata},
		{"concurrent metadata writes: either may win", func(h *hist) string {
			h.op(0, KindAdd, 0, 1, OK)
			h.barrier(2, 3, 0, 1)
			w := h.op(0, KindPut, 4, 5, OK)
			h.op(1, KindPut, 4, 5, OK)
			return w
		}, ""},
		{"metadata of no write", func(h *hist) string {
			h.op(0, KindAdd, 0, 1, OK)
			return "nobody"
		}, AnomalyForeignMetadata},
		{"second incarnation is another replica", func(h *hist) string {
			a := h.op(0, KindAdd, 0, 1, OK)
			h.opInc(Replica{Peer: 0, Incarnation: 1}, KindRemove, 2, 3, OK)
			return a
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHist()
			tag := tc.build(h)
			rep := Check(h.rec, final(tag), nil)
			var got []string
			for _, a := range rep.Anomalies {
				got = append(got, a.Kind)
			}
			if tc.want == "" && len(got) > 0 || tc.want != "" && (len(got) != 1 || got[0] != tc.want) {
				t.Errorf("anomalies %v, want [%s]\n%s", got, tc.want, rep)
			}
		})
	}
}

func TestCheck_MixedMetadataAndReport(t *testing.T) {
	h := newHist()
	tag := h.op(0, KindAdd, 0, 1, OK)
	st := State{testKey: {Key: testKey, Metadata: map[string]any{"op": tag, "extra": 1.0}}}
	rep := Check(h.rec, st, nil)
	if len(rep.Anomalies) != 1 || rep.Anomalies[0].Kind != AnomalyMixedMetadata {
		t.Fatalf("anomalies %+v, want one %s", rep.Anomalies, AnomalyMixedMetadata)
	}
	s := rep.String()
	for _, want := range []string{"seed 42", "TESTNET_SEED=42", "#0 p0 add snapshots/x", "mixed-metadata"} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
}

func TestCheck_KeysFilter(t *testing.T) {
	h := newHist()
	h.op(0, KindAdd, 0, 1, OK)
	if rep := Check(h.rec, State{}, func(Key) bool { return false }); rep.Keys != 0 || !rep.OK() {
		t.Errorf("filtered check: %s", rep)
	}
	if rep := Check(h.rec, State{}, nil); rep.OK() {
		t.Errorf("unfiltered check found nothing: %s", rep)
	}
}
