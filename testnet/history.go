package testnet

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// Kind names a write operation of the history.
type Kind string

// The operations the checker understands.
const (
	KindAdd    Kind = "add"    // POST /{collection}/add/{id}
	KindRemove Kind = "remove" // DELETE /{collection}/remove/{id}
	KindPut    Kind = "put"    // PUT /{collection}/metadata/{id}
)

// Outcome is what the client learned about an operation.
type Outcome uint8

// The outcomes, from the client's point of view.
const (
	// Pending: invoked, not completed yet.
	Pending Outcome = iota
	// OK: acknowledged (2xx); the operation took effect and is durable.
	OK
	// Failed: definitely without effect (4xx, or the connection was
	// refused so the request never reached the peer).
	Failed
	// Unknown: may or may not have taken effect (timeout, reset
	// connection, 5xx); the checker assumes either.
	Unknown
)

// String returns "ok", "fail", "unknown" or "pending".
func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case Failed:
		return "fail"
	case Unknown:
		return "unknown"
	}
	return "pending"
}

// Replica names one incarnation of a peer: its index and how many times
// its store was wiped before. A wiped peer comes back as a new replica.
type Replica struct {
	Peer        int
	Incarnation int
}

// String formats r as "p2" or "p2#1" (second incarnation).
func (r Replica) String() string {
	if r.Incarnation == 0 {
		return fmt.Sprintf("p%d", r.Peer)
	}
	return fmt.Sprintf("p%d#%d", r.Peer, r.Incarnation)
}

// Key names an item: collection and id.
type Key struct {
	Collection string
	ID         string
}

// String formats k as "collection/id".
func (k Key) String() string { return k.Collection + "/" + k.ID }

// Op is one recorded write: where and when it was invoked, when and how it
// completed. Add and put operations carry a unique Tag that the client
// wrote into the document's "op" field, so that the checker can tell which
// write's metadata won.
type Op struct {
	Index    int // position in the history
	Replica  Replica
	Kind     Kind
	Key      Key
	Tag      string         // add and put only
	Doc      map[string]any // add and put only; the document sent, tag included
	Invoke   time.Time
	Complete time.Time // zero while pending
	Outcome  Outcome
	Status   int    // HTTP status, 0 if none
	Err      string // transport error or error body
}

// Barrier records a moment when the listed replicas were seen converged
// (equal applied version vectors), sampled between Start and End: every
// write that one of them held before Start was held by all of them by End.
type Barrier struct {
	Start, End time.Time
	Members    []Replica
}

// Cut records a partition: from Start to End (the heal), peers in
// different groups could not exchange anything. Group maps every peer
// index to its group number.
type Cut struct {
	Start, End time.Time
	Group      map[int]int
}

// Exit records that a peer's process ended (Stop, Kill or a crash) at
// Time: an operation on it still pending then took effect before Time or
// never.
type Exit struct {
	Replica Replica
	Time    time.Time
	How     string // "stop", "kill" or "crash"
}

// Record is a copy of a history for the checker and for printing. The
// caller owns it.
type Record struct {
	Seed     int64
	Start    time.Time
	Ops      []Op
	Barriers []Barrier
	Cuts     []Cut
	Exits    []Exit
}

// History collects operations and cluster events as they happen. It is
// safe for concurrent use.
type History struct {
	mu       sync.Mutex // guards everything below
	seed     int64
	start    time.Time
	ops      []Op
	barriers []Barrier
	cuts     []Cut
	open     *Cut // the partition in force, if any
	exits    []Exit
}

// NewHistory returns an empty history that remembers seed for replay
// instructions.
func NewHistory(seed int64) *History {
	return &History{seed: seed, start: time.Now()}
}

// Begin records the invocation of an operation and returns its index for
// End. For an add or a put, it also returns a copy of doc with the
// operation's unique tag in the field "op" (the document to send, kept in
// the history); otherwise nil.
func (h *History) Begin(r Replica, kind Kind, k Key, doc map[string]any) (int, map[string]any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i := len(h.ops)
	op := Op{Index: i, Replica: r, Kind: kind, Key: k}
	if kind == KindAdd || kind == KindPut {
		op.Tag = fmt.Sprintf("%s.%d", r, i)
		op.Doc = make(map[string]any, len(doc)+1)
		maps.Copy(op.Doc, doc)
		op.Doc["op"] = op.Tag
	}
	op.Invoke = time.Now()
	h.ops = append(h.ops, op)
	return i, op.Doc
}

// End records the completion of operation i.
func (h *History) End(i int, o Outcome, status int, err string) {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	op := &h.ops[i]
	op.Complete, op.Outcome, op.Status, op.Err = now, o, status, err
}

// AddBarrier records a convergence observation.
func (h *History) AddBarrier(b Barrier) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.barriers = append(h.barriers, b)
}

// startCut records a partition in force from now; groupOf maps every peer
// to its group. An open partition is closed first.
func (h *History) startCut(groupOf map[int]int, at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closeCutLocked(at)
	h.open = &Cut{Start: at, Group: groupOf}
}

// endCut closes the partition in force, if any.
func (h *History) endCut(at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closeCutLocked(at)
}

func (h *History) closeCutLocked(at time.Time) {
	if h.open != nil {
		h.open.End = at
		h.cuts = append(h.cuts, *h.open)
		h.open = nil
	}
}

// addExit records a process exit.
func (h *History) addExit(e Exit) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.exits = append(h.exits, e)
}

// Record returns a copy of the history. A partition still in force is
// included as lasting until now; pending operations are reported as
// pending.
func (h *History) Record() Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := Record{
		Seed:     h.seed,
		Start:    h.start,
		Ops:      slices.Clone(h.ops),
		Barriers: slices.Clone(h.barriers),
		Cuts:     slices.Clone(h.cuts),
		Exits:    slices.Clone(h.exits),
	}
	if h.open != nil {
		c := *h.open
		c.End = time.Now()
		r.Cuts = append(r.Cuts, c)
	}
	return r
}

// Counts returns how many operations ended with each outcome.
func (r Record) Counts() map[Outcome]int {
	out := map[Outcome]int{}
	for _, op := range r.Ops {
		out[op.Outcome]++
	}
	return out
}

// rel formats t relative to the start of the history, in milliseconds.
func (r *Record) rel(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%.1fms", float64(t.Sub(r.Start).Microseconds())/1000)
}

// FormatOp formats one operation on one line, times relative to the start
// of the history.
func (r *Record) FormatOp(op Op) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#%d %s %s %s invoke=%s complete=%s %s", op.Index, op.Replica, op.Kind, op.Key, r.rel(op.Invoke), r.rel(op.Complete), op.Outcome)
	if op.Status != 0 {
		fmt.Fprintf(&b, " status=%d", op.Status)
	}
	if op.Tag != "" {
		fmt.Fprintf(&b, " tag=%s", op.Tag)
	}
	if op.Err != "" {
		fmt.Fprintf(&b, " err=%q", op.Err)
	}
	return b.String()
}

// FormatEvents lists the barriers, partitions and exits, one per line.
func (r *Record) FormatEvents() string {
	var b strings.Builder
	for _, c := range r.Cuts {
		fmt.Fprintf(&b, "partition %s..%s groups %v\n", r.rel(c.Start), r.rel(c.End), c.Group)
	}
	for _, e := range r.Exits {
		fmt.Fprintf(&b, "exit %s %s at %s\n", e.Replica, e.How, r.rel(e.Time))
	}
	for _, x := range r.Barriers {
		fmt.Fprintf(&b, "converged %s..%s members %v\n", r.rel(x.Start), r.rel(x.End), x.Members)
	}
	return b.String()
}
