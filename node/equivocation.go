package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	ds "github.com/ipfs/go-datastore"
)

// Equivocation: a keyed replica that signed two histories.
//
// Nodes that received different histories of a replica r hold different
// entries under the same dots, and their applied contexts look equal. They
// find out by comparing signed chain heads (HeadSums, HeadsFor,
// Contradictions): a peer's signed head of r at counter c that this
// node's chain of r does not pass through. The peer's run of r's chain up
// to c (Chain) against this node's own then proves the equivocation
// (CheckChain, crdt.ForkOf) and pins the first counter F at which the
// histories differ. A node that holds such a proof, found or received
// (AddFork):
//
//   - refuses r's deltas from F on, and drops from its items every entry
//     of r from F on, whichever history it came from;
//   - counts every dot of r from F on that a delta depends on as applied
//     and removed (it joins the dot into both contexts), so that honest
//     writes made on top of either history join everywhere;
//   - strips r's entries from F on from full states it imports, and does
//     not serve r's deltas from F on.
//
// Every honest node that holds the proof so ends with the same entries:
// the two histories agree before F, and nothing of r from F on survives.
// What r wrote from F on is lost, which is what equivocating costs; no
// other replica's write is.

// equivocationsPrefix holds the proofs of equivocation this node holds,
// one per replica: /e/r<replica>.
const equivocationsPrefix = "/e"

func forkKey(r crdt.ReplicaID) ds.Key { return ds.RawKey(equivocationsPrefix + "/r" + string(r)) }

// forkRec is a proof of equivocation this node holds, with its encoding.
type forkRec struct {
	fork *crdt.Fork
	enc  []byte
}

// readForks reads every proof of equivocation in store.
func readForks(ctx context.Context, store ds.Datastore) (map[crdt.ReplicaID]forkRec, error) {
	forks := map[crdt.ReplicaID]forkRec{}
	err := scan(ctx, store, equivocationsPrefix, "", func(key string, val []byte) (bool, error) {
		f, err := crdt.DecodeFork(val)
		if err != nil || key != forkKey(f.Replica()).String() {
			return false, fmt.Errorf("%w: proof of equivocation under %q: %v", ErrCorrupt, key, err)
		}
		forks[f.Replica()] = forkRec{f, bytes.Clone(val)} // the iterator reuses val's buffer
		return true, nil
	})
	return forks, err
}

// Equivocator is a replica proven to have signed two histories.
type Equivocator struct {
	Replica crdt.ReplicaID
	// From is the first counter at which its histories differ: its deltas
	// from there on are refused, and their entries dropped.
	From uint64
}

// Equivocators returns the replicas this node holds a proof of
// equivocation against, sorted.
func (n *Node) Equivocators() []Equivocator {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Equivocator, 0, len(n.bans))
	for r, f := range n.bans {
		out = append(out, Equivocator{r, f.fork.Counter()})
	}
	slices.SortFunc(out, func(a, b Equivocator) int { return strings.Compare(string(a.Replica), string(b.Replica)) })
	return out
}

// Forks returns the encoded proofs of equivocation (crdt.EncodeFork) this
// node holds that a peer holding the proofs known lacks: those of
// replicas it does not name, or names with a later first counter. known
// maps replicas to the first counters of the proofs the peer holds (see
// Equivocators).
func (n *Node) Forks(known map[crdt.ReplicaID]uint64) [][]byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out [][]byte
	for r, f := range n.bans {
		if c, ok := known[r]; !ok || c > f.fork.Counter() {
			out = append(out, f.enc)
		}
	}
	return out
}

// banned reports whether d is a dot this node refuses: of a replica it
// holds a proof of equivocation against, from the proof's first counter
// on. Caller holds mu.
func (n *Node) banned(d crdt.Dot) bool {
	f, ok := n.bans[d.Replica]
	return ok && d.Counter >= f.fork.Counter()
}

// withoutBanned returns it without the entries of banned dots: it itself
// if it holds none. Caller holds mu.
func (n *Node) withoutBanned(it *crdt.Item) *crdt.Item {
	if len(n.bans) == 0 || it == nil {
		return it
	}
	drop := false
	for _, d := range it.Dots() {
		if n.banned(d) {
			drop = true
			break
		}
	}
	if !drop {
		return it
	}
	keep := crdt.NewContext()
	for _, d := range it.Dots() {
		if !n.banned(d) {
			keep.Add(d)
		}
	}
	return it.Within(keep)
}

// coverBanned joins into both contexts the banned dots that d depends on,
// as applied and removed: the entries they made are dropped here, and a
// delta written on top of them must not wait for them. Caller holds mu.
func (n *Node) coverBanned(d *crdt.Delta) {
	if len(n.bans) == 0 {
		return
	}
	n.eachDep(d, func(c crdt.Dot) bool {
		if n.banned(c) && !n.applied.Contains(c) {
			n.applied.Add(c)
			n.seen.Add(c)
		}
		return true
	})
}

// AddFork verifies enc, an encoded proof of equivocation (crdt.EncodeFork),
// and acts on it as the package comment says, unless it holds a proof
// against the same replica with the same or an earlier first counter. It
// reports whether the proof was new. A proof against this node's own
// replica proves that another process writes under it (see ErrForked).
// The proof is durable when it returns.
func (n *Node) AddFork(ctx context.Context, enc []byte) (bool, error) {
	f, err := crdt.DecodeFork(enc)
	if err != nil {
		return false, err
	}
	g, err := n.begin()
	if err != nil {
		return false, err
	}
	added, err := n.installFork(ctx, g, f, enc)
	return added, n.endWith(ctx, g, added, err)
}

// installFork installs f, a verified proof whose encoding is enc, into g.
// Caller holds mu.
func (n *Node) installFork(ctx context.Context, g *group, f *crdt.Fork, enc []byte) (bool, error) {
	r, from := f.Replica(), f.Counter()
	if r == n.replica {
		added := n.forked == ""
		n.proveFork(g, crdt.Dot{Replica: r, Counter: from}, "a peer sent proof that this node's replica signed two histories")
		return added, nil
	}
	if old, ok := n.bans[r]; ok && old.fork.Counter() <= from {
		return false, nil
	}
	if n.bans == nil {
		n.bans = map[crdt.ReplicaID]forkRec{}
	}
	n.bans[r] = forkRec{f, enc}
	n.put(g, forkKey(r), enc)
	n.touchBans()
	n.log.Error("a replica signed two histories (equivocation): its deltas from the first counter where they differ are refused and their entries dropped",
		"replica", r, "from", from)
	dropped, err := n.dropBanned(ctx, g, r, from)
	if err != nil {
		return true, err
	}
	// Deltas waiting here: r's own from `from` on are refused; the others
	// no longer wait for r's.
	var unblocked bool
	for dot, x := range n.parked.byDot {
		if n.banned(dot) {
			n.parked.remove(x)
			n.stats.deltasRefused.Add(1)
			continue
		}
		before := n.applied.Len()
		n.coverBanned(x.d)
		unblocked = unblocked || n.applied.Len() != before
	}
	if unblocked {
		if _, err := n.releaseAll(ctx, g); err != nil {
			return true, err
		}
	}
	n.log.Info("dropped the equivocating replica's entries", "replica", r, "from", from, "items", dropped)
	return true, nil
}

// dropBanned stages every item that holds an entry of replica r from
// counter from on without those entries, and returns how many it changed.
// It finds the items through the log, by their dots; if any of them is no
// longer logged, it reads every item. Caller holds mu.
func (n *Node) dropBanned(ctx context.Context, g *group, r crdt.ReplicaID, from uint64) (int, error) {
	keys := map[crdt.Key]bool{}
	complete := true
	for c := from; c <= n.applied.Max(r); c++ {
		dot := crdt.Dot{Replica: r, Counter: c}
		if !n.applied.Contains(dot) {
			continue
		}
		b, err := n.loggedOrStaged(ctx, dot)
		if errors.Is(err, ErrLogGap) {
			complete = false
			break
		}
		if err != nil {
			return 0, err
		}
		_, d, _, err := decodeLogEntry(b)
		if err != nil {
			return 0, err
		}
		keys[d.Key()] = true
	}
	if !complete {
		clear(keys)
		err := scan(ctx, n.store, itemsPrefix, "", func(key string, _ []byte) (bool, error) {
			if k, ok := parseItemKey(key); ok {
				keys[k] = true
			}
			return true, nil
		})
		if err != nil {
			return 0, err
		}
		for key, s := range n.overlay {
			if k, ok := parseItemKey(key); ok && s.val != nil {
				keys[k] = true
			}
		}
	}
	changed := 0
	for k := range keys {
		cur, err := n.readItem(ctx, k)
		if err != nil {
			return changed, err
		}
		post := n.withoutBanned(cur)
		if post == cur {
			continue
		}
		if err := n.restage(g, k, cur, post, crdt.Dot{Replica: r, Counter: from}); err != nil {
			return changed, err
		}
		changed++
	}
	return changed, nil
}

// restage stages item k, now cur, as post, which a proof of equivocation
// against fork's replica from fork's counter made: its record, its index
// entries, the visible count and the change. Caller holds mu.
func (n *Node) restage(g *group, k crdt.Key, cur, post *crdt.Item, fork crdt.Dot) error {
	var rec []byte
	if !post.Empty() {
		var err error
		if rec, err = crdt.EncodeItem(post); err != nil {
			return err
		}
	}
	n.stageIndexes(g, k, cur, post)
	n.put(g, itemKey(k), rec)
	n.stageChange(g, k, cur, post, nil, rec, ViaEquivocation, fork)
	n.countVisible(k, cur, post)
	return nil
}

// BanStamp returns a value that changes whenever this node's state moves
// because of a proof of equivocation: the proof is installed, or, while
// it holds one, a full-state import changes an item. 0 while it holds
// none. A peer that holds a proof too pulls this node's full state once
// per stamp: the two histories' removals reach each honest node only in
// full states (see the package comment of equivocation.go), and a node
// whose state moved has something new to pass on.
func (n *Node) BanStamp() uint64 { return n.banStamp.Load() }

// touchBans draws a new BanStamp if this node holds a proof of
// equivocation. Caller holds mu, or owns n alone.
func (n *Node) touchBans() {
	if len(n.bans) > 0 {
		n.banStamp.Store(rand.Uint64() | 1)
	}
}

// installForks installs proofs of equivocation a full state carried,
// durably.
func (n *Node) installForks(ctx context.Context, forks []forkRec) error {
	g, err := n.stage()
	if err != nil {
		return err
	}
	staged := false
	for _, f := range forks {
		var added bool
		if added, err = n.installFork(ctx, g, f.fork, f.enc); err != nil {
			break
		}
		staged = staged || added
	}
	n.mu.Unlock()
	// Known proofs stage nothing: every piece of a state carries them,
	// and must not cost a commit each.
	if werr := n.wait(ctx, g, staged || err != nil); err == nil {
		err = werr
	}
	return err
}

// bannedFrom returns the first counter of replica r that this node or the
// state's header holds a proof against, or 0. Caller holds mu.
func (sr *stateReader) bannedFrom(n *Node, r crdt.ReplicaID) uint64 {
	from := uint64(0)
	if f, ok := n.bans[r]; ok {
		from = f.fork.Counter()
	}
	for _, f := range sr.forks {
		if f.fork.Replica() == r && (from == 0 || f.fork.Counter() < from) {
			from = f.fork.Counter()
		}
	}
	return from
}

// Comparing histories with a peer.

// headBuckets is the number of buckets HeadSums splits the keyed
// replicas into, and headSumSize the size of each bucket's sum.
const (
	headBuckets = 64
	headSumSize = 16
)

// MaxHeadsExchanged bounds the signed heads HeadsFor returns and
// Contradictions accepts.
const MaxHeadsExchanged = 1024

// headBucket returns the bucket of replica r.
func headBucket(r crdt.ReplicaID) int {
	h := sha256.Sum256([]byte(r))
	return int(h[0]) % headBuckets
}

// headDigest returns what h, the chain head of r, adds to its bucket's
// sum: 16 bytes of a SHA-256, so that two histories cannot be made to
// sum alike.
func headDigest(r crdt.ReplicaID, h head) (out [headSumSize]byte) {
	b := make([]byte, 0, len(r)+8+crdt.HashSize+1)
	b = append(append(b, r...), 0)
	b = binary.BigEndian.AppendUint64(b, h.Counter)
	b = append(b, h.Hash[:]...)
	s := sha256.Sum256(b)
	copy(out[:], s[:])
	return out
}

// HeadSums returns a digest of the chain heads this node holds: for each
// of 64 buckets of keyed replicas, the XOR of 16 bytes of a hash of each
// head (replica, counter, chain hash). Two nodes with equal sums in a
// bucket hold the same heads there; a peer sends its signed heads of the
// buckets that differ (HeadsFor). The sums are kept up to date at each
// commit, for the heads it moved: this costs nothing per call.
func (n *Node) HeadSums() []byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]byte, 0, headBuckets*headSumSize)
	for _, s := range n.headSums {
		out = append(out, s[:]...)
	}
	return out
}

// sumHeads computes the head sums of every head anew (at Open, and after
// a failed commit reloads the heads). Caller holds mu, or owns n alone.
func (n *Node) sumHeads() {
	n.headSums, n.headSum = [headBuckets][headSumSize]byte{}, make(map[crdt.ReplicaID][headSumSize]byte, len(n.heads))
	for r := range n.heads {
		n.sumHead(r)
	}
}

// sumHead brings replica r's part of the head sums up to its head now.
// Caller holds mu.
func (n *Node) sumHead(r crdt.ReplicaID) {
	s := &n.headSums[headBucket(r)]
	if old, ok := n.headSum[r]; ok {
		for i := range old {
			s[i] ^= old[i]
		}
	}
	d := headDigest(r, n.heads[r])
	for i := range d {
		s[i] ^= d[i]
	}
	n.headSum[r] = d
}

// HeadsFor returns, encoded, this node's signed chain heads in the buckets
// where theirs, a peer's HeadSums, differs from this node's (at most
// MaxHeadsExchanged, from a bucket that rotates with start), or nil if
// none differs. It fails if theirs is not a HeadSums.
func (n *Node) HeadsFor(theirs []byte, start int) ([]byte, error) {
	if len(theirs) != headBuckets*headSumSize {
		return nil, fmt.Errorf("%w: head sums of %d bytes", crdt.ErrInvalid, len(theirs))
	}
	mine := n.HeadSums()
	var differ [headBuckets]bool
	any := false
	for b := range headBuckets {
		s := b * headSumSize
		differ[b] = string(mine[s:s+headSumSize]) != string(theirs[s:s+headSumSize])
		any = any || differ[b]
	}
	if !any {
		return nil, nil
	}
	n.mu.Lock()
	byBucket := make([][]crdt.ReplicaID, headBuckets)
	for r, h := range n.heads {
		if b := headBucket(r); differ[b] && h.Sig != nil {
			byBucket[b] = append(byBucket[b], r)
		}
	}
	var body []byte
	count := 0
	for i := range headBuckets {
		b := ((start+i)%headBuckets + headBuckets) % headBuckets
		for _, r := range byBucket[b] {
			if count == MaxHeadsExchanged {
				break
			}
			body = appendSignedHead(body, r, n.heads[r])
			count++
		}
	}
	n.mu.Unlock()
	return append(binary.AppendUvarint(nil, uint64(count)), body...), nil
}

// appendSignedHead appends r and its head h: the replica's length and
// bytes, then encodeHead's form with a length.
func appendSignedHead(b []byte, r crdt.ReplicaID, h head) []byte {
	b = binary.AppendUvarint(b, uint64(len(r)))
	b = append(b, r...)
	e := encodeHead(h)
	b = binary.AppendUvarint(b, uint64(len(e)))
	return append(b, e...)
}

// signedHead is a peer's signed chain head of a replica.
type signedHead struct {
	r crdt.ReplicaID
	h head
}

// decodeHeads decodes what HeadsFor encoded: at most MaxHeadsExchanged
// heads, each signed (the signatures are not checked here).
func decodeHeads(b []byte) ([]signedHead, error) {
	bad := func(what string) error { return fmt.Errorf("%w: chain heads: %s", crdt.ErrInvalid, what) }
	count, k := binary.Uvarint(b)
	if k <= 0 || count > MaxHeadsExchanged {
		return nil, bad("bad count")
	}
	b = b[k:]
	out := make([]signedHead, 0, min(count, uint64(len(b)/64)))
	field := func() ([]byte, error) {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return nil, bad("cut short")
		}
		f := b[k : k+int(l)]
		b = b[k+int(l):]
		return f, nil
	}
	for range count {
		rb, err := field()
		if err != nil {
			return nil, err
		}
		r := crdt.ReplicaID(rb)
		if _, ok := r.PublicKey(); !ok {
			return nil, bad(fmt.Sprintf("replica %q is not keyed", rb))
		}
		hb, err := field()
		if err != nil {
			return nil, err
		}
		h, err := decodeHead(hb)
		if err != nil || h.Sig == nil || h.Counter == 0 {
			return nil, bad(fmt.Sprintf("head of %s", r))
		}
		out = append(out, signedHead{r, h})
	}
	if len(b) > 0 {
		return nil, bad("trailing bytes")
	}
	return out, nil
}

// ChainRange names a run of a replica's chain: counters From to To.
type ChainRange struct {
	Replica  crdt.ReplicaID
	From, To uint64
}

// Contradictions decodes heads (a peer's HeadsFor) and returns, for each
// signed head of a replica this node does not hold proof against, at a
// counter c where this node's chain of the replica has another hash, the
// run of the peer's chain to ask it for (Chain): up to c, at most
// crdt.MaxChainSteps long. It fails if heads does not decode, or if the
// signature of a head it would act on does not verify.
func (n *Node) Contradictions(ctx context.Context, heads []byte) ([]ChainRange, error) {
	hs, err := decodeHeads(heads)
	if err != nil {
		return nil, err
	}
	var out []ChainRange
	for _, sh := range hs {
		r, c := sh.r, sh.h.Counter
		n.mu.Lock()
		_, known := n.bans[r]
		mine, ok, err := n.hashAt(ctx, r, c)
		n.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if known || !ok || mine == sh.h.Hash {
			continue
		}
		if err := crdt.VerifyHead(r, c, sh.h.Hash, sh.h.Sig); err != nil {
			return nil, err
		}
		from := uint64(1)
		if c > crdt.MaxChainSteps {
			from = c - crdt.MaxChainSteps + 1
		}
		out = append(out, ChainRange{r, from, c})
	}
	return out, nil
}

// hashAt returns this node's chain hash of replica r after counter c, if
// it knows it: its head's, or the one the logged delta after c starts
// from. Caller holds mu.
func (n *Node) hashAt(ctx context.Context, r crdt.ReplicaID, c uint64) (crdt.Hash, bool, error) {
	h, ok := n.heads[r]
	switch {
	case !ok || h.Counter < c:
		return crdt.Hash{}, false, nil
	case h.Counter == c:
		return h.Hash, true, nil
	}
	d, err := n.loggedDelta(ctx, crdt.Dot{Replica: r, Counter: c + 1})
	if errors.Is(err, ErrLogGap) || (err == nil && d.Proof.Prev.IsZero()) {
		return crdt.Hash{}, false, nil
	}
	if err != nil {
		return crdt.Hash{}, false, err
	}
	return d.Proof.Prev, true, nil
}

// loggedDelta returns the logged delta of dot, staged or durable, with its
// proof, or ErrLogGap. Caller holds mu.
func (n *Node) loggedDelta(ctx context.Context, dot crdt.Dot) (*crdt.Delta, error) {
	b, err := n.loggedOrStaged(ctx, dot)
	if err != nil {
		return nil, err
	}
	_, d, _, err := decodeLogEntry(b)
	return d, err
}

// ErrNoChain is returned by Chain when this node cannot show the run of a
// replica's chain asked for: it does not hold or no longer logs its
// deltas, they are of the format before split digests, or it holds no
// signature at its end.
var ErrNoChain = errors.New("no such run of the chain here")

// Chain returns the run rg of its replica's chain as this node holds it,
// encoded (crdt.EncodeChain): the chain hash before rg.From, the step of
// each delta, and the replica's signature of the hash after rg.To. It
// fails with ErrNoChain if it cannot, and wrapping crdt.ErrInvalid if rg
// is not a run of at most crdt.MaxChainSteps of a keyed replica.
func (n *Node) Chain(ctx context.Context, rg ChainRange) ([]byte, error) {
	if _, ok := rg.Replica.PublicKey(); !ok || rg.From == 0 || rg.To < rg.From || rg.To-rg.From >= crdt.MaxChainSteps {
		return nil, fmt.Errorf("%w: chain run %s %d-%d", crdt.ErrInvalid, rg.Replica, rg.From, rg.To)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	c, err := n.chainRun(ctx, rg.Replica, rg.From, rg.To, rg.To)
	if err != nil {
		return nil, err
	}
	return crdt.EncodeChain(c), nil
}

// chainRun returns this node's run of r's chain from counter from, ending
// at the first counter from `least` on (up to `most`) where it holds the
// replica's signature of the head. Caller holds mu.
func (n *Node) chainRun(ctx context.Context, r crdt.ReplicaID, from, least, most uint64) (*crdt.Chain, error) {
	c := &crdt.Chain{Replica: r, From: from}
	h := crdt.Hash{}
	for k := from; k <= most; k++ {
		d, err := n.loggedDelta(ctx, crdt.Dot{Replica: r, Counter: k})
		if errors.Is(err, ErrLogGap) {
			return nil, fmt.Errorf("%w: %v", ErrNoChain, err)
		}
		if err != nil {
			return nil, err
		}
		if !d.Proof.Split {
			return nil, fmt.Errorf("%w: %s is of the format before split digests", ErrNoChain, d.Dot)
		}
		if k == from {
			c.Base, h = d.Proof.Prev, d.Proof.Prev
		} else if d.Proof.Prev != h {
			return nil, fmt.Errorf("%w: %s does not extend the logged chain", ErrCorrupt, d.Dot)
		}
		step := crdt.StepOf(d)
		c.Steps = append(c.Steps, step)
		h = crdt.ChainNextSplit(h, step.Head, step.Own)
		if k < least {
			continue
		}
		sig := d.Proof.Sig
		if hd := n.heads[r]; hd.Counter == k && hd.Hash == h && hd.Sig != nil {
			sig = hd.Sig
		}
		if sig == nil && r == n.replica && n.cfg.Key != nil {
			sig = crdt.SignHead(n.cfg.Key, r, k, h)
		}
		if sig != nil {
			c.Sig = sig
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w: no signature of %s's chain from counter %d to %d", ErrNoChain, r, least, most)
}

// CheckChain compares enc, a peer's run of a replica's chain (see Chain),
// with this node's, and if they prove that the replica signed two
// histories, acts on the proof as AddFork does. It reports whether it
// found a new proof. Runs that agree, or that this node cannot compare
// (it does not log its own run there), prove nothing.
func (n *Node) CheckChain(ctx context.Context, enc []byte) (bool, error) {
	theirs, err := crdt.DecodeChain(enc)
	if err != nil {
		return false, err
	}
	g, err := n.begin()
	if err != nil {
		return false, err
	}
	added, err := n.checkChain(ctx, g, theirs)
	return added, n.endWith(ctx, g, added, err)
}

// checkChain is CheckChain's work. Caller holds mu.
func (n *Node) checkChain(ctx context.Context, g *group, theirs *crdt.Chain) (bool, error) {
	r := theirs.Replica
	if _, known := n.bans[r]; known || r == n.replica {
		return false, nil
	}
	top := min(theirs.End(), n.heads[r].Counter)
	if top < theirs.From {
		return false, nil
	}
	// Where does this node's chain first leave theirs?
	first := uint64(0)
	theirHashes := theirs.Hashes()
	for k := theirs.From; k <= top; k++ {
		mine, ok, err := n.hashAt(ctx, r, k)
		if err != nil || !ok {
			return false, err
		}
		if mine != theirHashes[k-theirs.From] {
			first = k
			break
		}
	}
	if first == 0 {
		return false, nil
	}
	mine, err := n.chainRun(ctx, r, theirs.From, first, min(n.heads[r].Counter, first+crdt.MaxChainSteps-1))
	if errors.Is(err, ErrNoChain) {
		n.log.Warn("a peer's chain of a replica contradicts this node's, but this node cannot show its own run to prove it",
			"replica", r, "counter", first, "err", err)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	f, err := crdt.ForkOf(mine, theirs)
	if err == nil {
		err = f.Verify()
	}
	if err != nil {
		n.log.Warn("a peer's chain of a replica contradicts this node's without proving a fork", "replica", r, "err", err)
		return false, nil
	}
	return n.installFork(ctx, g, f, crdt.EncodeFork(f))
}
