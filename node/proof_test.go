package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"pgregory.net/rapid"
)

// signedConfig is testConfig with a new identity key.
func signedConfig(tb testing.TB) Config {
	tb.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := testConfig(nil)
	cfg.Key = k
	return cfg
}

// pull hands to the deltas from holds that to lacks, as p2p's sync stream
// does, and returns what to made of them.
func pull(tb testing.TB, from, to *Node) ApplyResult {
	tb.Helper()
	ctx := context.Background()
	_, have := to.Contexts()
	var ds []*crdt.Delta
	if _, err := from.DeltasFor(ctx, have, func(d *crdt.Delta, _ []byte) error {
		ds = append(ds, d)
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return mustApply(tb, to, ds...)
}

func TestProof_SignedNodesConvergeByEveryPath(t *testing.T) {
	ctx := context.Background()
	a, b, c := openMem(t, signedConfig(t)), openMem(t, signedConfig(t)), openMem(t, signedConfig(t))
	if _, ok := a.ReplicaID().PublicKey(); !ok {
		t.Fatalf("a signed node's replica %q is not keyed", a.ReplicaID())
	}
	sub := a.Subscribe(1000)
	defer sub.Close()
	// Concurrent writers, so that commits group several writes and only
	// the last of each group is signed.
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 10 {
				mustAdd(t, a, fmt.Sprintf("s%d-%d", w, i), `{"n":1}`)
			}
		})
	}
	wg.Wait()
	// Gossip: a's changes as they were published, in commit order.
	var gossip []*crdt.Delta
	for len(gossip) < 40 {
		gossip = append(gossip, (<-sub.C).Delta)
	}
	if res := mustApply(t, b, gossip...); res.New != 40 || res.Refused != 0 {
		t.Fatalf("gossip: %+v, want 40 new", res)
	}
	// Anti-entropy: c pulls from b, which forwards a's deltas with the
	// signatures it checked.
	if res := pull(t, b, c); res.New != 40 || res.Refused != 0 {
		t.Fatalf("anti-entropy through a forwarder: %+v, want 40 new", res)
	}
	// The seed's pending deltas, a page at a time: each page ends signed.
	d := openMem(t, signedConfig(t))
	for cursor := uint64(0); ; {
		p, err := a.DeltasSince(ctx, cursor, 7, true)
		if err != nil {
			t.Fatal(err)
		}
		if res := mustApply(t, d, p.Deltas...); res.Refused != 0 {
			t.Fatalf("page after %d: %+v", cursor, res)
		}
		if cursor = p.Cursor; !p.More {
			break
		}
	}
	for _, n := range []*Node{b, c, d} {
		if got, want := dump(t, n, "snapshots"), dump(t, a, "snapshots"); got != want {
			t.Fatalf("replica %s differs from a:\n%s\n%s", n.ReplicaID(), got, want)
		}
	}
}

func TestProof_ForgeriesAreRefused(t *testing.T) {
	ctx := context.Background()
	a, b := openMem(t, signedConfig(t)), openMem(t, signedConfig(t))
	mustAdd(t, a, "x", `{"v":"a"}`)
	pull(t, a, b)
	var last *crdt.Delta
	if _, err := a.DeltasFor(ctx, crdt.NewContext(), func(d *crdt.Delta, _ []byte) error { last = d; return nil }); err != nil {
		t.Fatal(err)
	}
	aRep := a.ReplicaID()
	next := crdt.Dot{Replica: aRep, Counter: 2}

	// A swarm peer writes a:2 without a's key: no signature, so it waits
	// for a later delta of a that would prove it...
	forged := forgedAdd(t, key("snapshots", "x"), next)
	enc, _ := crdt.EncodeDelta(last)
	forged.Proof.Prev = crdt.ChainNext(last.Proof.Prev, enc)
	if res := mustApply(t, b, forged); res.Waiting != 1 || res.New != 0 {
		t.Fatalf("unsigned forgery: %+v, want it waiting", res)
	}
	// ... or signed with its own key: rejected as invalid.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	fenc, _ := crdt.EncodeDelta(forged)
	forged.Proof.Sig = crdt.SignHead(other, aRep, 2, crdt.ChainNext(forged.Proof.Prev, fenc))
	if _, err := b.ApplyDeltas(ctx, []*crdt.Delta{forged}); !errors.Is(err, crdt.ErrInvalid) {
		t.Fatalf("forgery signed by another key: err = %v, want ErrInvalid", err)
	}
	// A delta of a replica that names no key: a signed node takes none.
	if res := mustApply(t, b, forgedAdd(t, key("snapshots", "y"), crdt.Dot{Replica: "plain", Counter: 1})); res.Refused != 1 {
		t.Fatalf("delta of an unkeyed replica: %+v, want refused", res)
	}
	// a's real a:2, signed, takes the forgery's place and joins; b shows
	// a's value.
	mustAdd(t, a, "x", `{"v":"a2"}`)
	if res := pull(t, a, b); res.New != 1 {
		t.Fatalf("a's own a:2 after the forgeries: %+v, want 1 new", res)
	}
	if it, err := b.Get(ctx, key("snapshots", "x")); err != nil || string(it.Metadata["v"]) != `"a2"` {
		t.Fatalf("b's x = %v, %v; want a's value", it.Metadata, err)
	}
	if s := b.Stats(); s.Unproven != 1 || s.Waiting != 0 || s.Fork != "" {
		t.Fatalf("b's stats: unproven %d, waiting %d, fork %q; want 1, 0 and none", s.Unproven, s.Waiting, s.Fork)
	}
}

func TestProof_EquivocationIsRefused(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := signedConfig(t)
	a := openDir(t, dir, cfg)
	mustAdd(t, a, "x", `{"v":1}`)
	b := openMem(t, signedConfig(t))
	pull(t, a, b)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	// A copy of a's directory, with a's key: the same replica, a second
	// history from counter 2 on.
	copyDir := t.TempDir()
	if err := os.CopyFS(copyDir, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	a = openDir(t, dir, cfg)
	defer a.Close()
	twin := openDir(t, copyDir, cfg)
	defer twin.Close()
	mustAdd(t, a, "x", `{"v":"a"}`)
	mustAdd(t, a, "y", `{"v":"a"}`)
	mustAdd(t, twin, "x", `{"v":"twin"}`)
	mustAdd(t, twin, "z", `{"v":"twin"}`)
	if res := pull(t, a, b); res.New != 2 {
		t.Fatalf("a's writes: %+v", res)
	}
	// The twin's a:2 and a:3 are duplicates by dot on b; its a:4 does not
	// extend the chain b holds, which a signed.
	mustAdd(t, twin, "w", `{"v":"twin"}`)
	res := pull(t, twin, b)
	if res.New != 0 || b.Stats().Equivocations != 1 {
		t.Fatalf("twin's history on b: %+v, equivocations %d; want nothing joined, 1 equivocation", res, b.Stats().Equivocations)
	}
	if _, err := b.Get(ctx, key("snapshots", "w")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the twin's w reached b: %v", err)
	}
}

func TestProof_ChainSurvivesRestartAndRekey(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	// A store written by a node without a key...
	n := openDir(t, dir, testConfig(nil))
	mustAdd(t, n, "old", `{"v":1}`)
	old := n.ReplicaID()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	// ... opened with one takes a keyed replica and keeps what it holds.
	cfg := signedConfig(t)
	n = openDir(t, dir, cfg)
	if n.ReplicaID() == old {
		t.Fatal("the replica was not rekeyed")
	}
	if _, err := n.Get(ctx, key("snapshots", "old")); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, n, "a", `{"v":1}`)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopened, it continues its chain where it stood.
	n = openDir(t, dir, cfg)
	defer n.Close()
	mustAdd(t, n, "b", `{"v":1}`)
	peer := openMem(t, signedConfig(t))
	_, have := peer.Contexts()
	var ds []*crdt.Delta
	_, err := n.DeltasFor(ctx, have, func(d *crdt.Delta, _ []byte) error { ds = append(ds, d); return nil })
	if !errors.Is(err, ErrLogGap) {
		t.Fatalf("DeltasFor with the unsigned old history: err = %v, want ErrLogGap", err)
	}
	// Its own writes, signed across the restart, are what a peer that
	// holds the rest lacks.
	var mine []*crdt.Delta
	if _, err := n.DeltasFor(ctx, contextWithout(t, n, n.ReplicaID()), func(d *crdt.Delta, _ []byte) error { mine = append(mine, d); return nil }); err != nil {
		t.Fatal(err)
	}
	if res := mustApply(t, peer, mine...); res.New != 2 || res.Refused != 0 {
		t.Fatalf("the rekeyed replica's chain across a restart: %+v, want 2 new", res)
	}
}

// contextWithout returns n's applied context less replica r's dots.
func contextWithout(tb testing.TB, n *Node, r crdt.ReplicaID) *crdt.Context {
	tb.Helper()
	_, applied := n.Contexts()
	out := crdt.NewContext()
	for rep, c := range applied.Version() {
		if rep != r {
			for i := uint64(1); i <= c; i++ {
				out.Add(crdt.Dot{Replica: rep, Counter: i})
			}
		}
	}
	return out
}

// forkedPair returns a node on dir and a twin on a copy of it, with the
// same key: one replica, two processes.
func forkedPair(t *testing.T) (a, twin *Node, dir string, cfg Config) {
	t.Helper()
	return forkedPairAfter(t, func(a *Node) { mustAdd(t, a, "x", `{"v":1}`) })
}

// forkedPairAfter is forkedPair with before run on a's node before its
// directory is copied.
func forkedPairAfter(t *testing.T, before func(a *Node)) (a, twin *Node, dir string, cfg Config) {
	t.Helper()
	dir, cfg = t.TempDir(), signedConfig(t)
	a = openDir(t, dir, cfg)
	before(a)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	copyDir := t.TempDir()
	if err := os.CopyFS(copyDir, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	a, twin = openDir(t, dir, cfg), openDir(t, copyDir, cfg)
	t.Cleanup(func() { twin.Close() })
	return a, twin, dir, cfg
}

func TestProof_ProvenForkStopsWritesUntilReincarnate(t *testing.T) {
	ctx := context.Background()
	a, twin, dir, cfg := forkedPair(t)
	mustAdd(t, twin, "x", `{"v":"twin"}`) // a:2, which a never wrote
	if res := pull(t, twin, a); res.Refused != 1 {
		t.Fatalf("the twin's a:2 on a: %+v, want refused", res)
	}
	if _, err := a.Add(ctx, key("snapshots", "y"), mustDoc(t, `{}`)); !errors.Is(err, ErrForked) || !errors.Is(err, ErrForkSuspected) {
		t.Fatalf("a write after the proof: %v, want ErrForked", err)
	}
	if s := a.Stats(); !s.Forked || s.Fork == "" {
		t.Fatalf("stats: forked %v, fork %q", s.Forked, s.Fork)
	}
	// The proof is durable: a restart does not lift it.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a = openDir(t, dir, cfg)
	if _, err := a.Add(ctx, key("snapshots", "y"), mustDoc(t, `{}`)); !errors.Is(err, ErrForked) {
		t.Fatalf("a write after a restart: %v, want ErrForked", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	store, err := OpenLevelDB(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Reincarnate(ctx, store, cfg.Key); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	a = openDir(t, dir, cfg)
	defer a.Close()
	mustAdd(t, a, "y", `{}`)
	// The twin's writes under the old replica are now an ordinary peer's.
	if res := pull(t, twin, a); res.New != 1 {
		t.Fatalf("the twin's a:2 after reincarnation: %+v, want joined", res)
	}
}

func TestProof_DifferentDeltaUnderAWrittenDotProvesFork(t *testing.T) {
	ctx := context.Background()
	a, twin, _, _ := forkedPair(t)
	defer a.Close()
	mustAdd(t, a, "x", `{"v":"a"}`)
	mustAdd(t, twin, "x", `{"v":"twin"}`) // both wrote a:2
	p, err := twin.DeltasSince(ctx, 0, 10, true)
	if err != nil {
		t.Fatal(err)
	}
	if res := mustApply(t, a, p.Deltas...); res.Duplicate != 2 {
		t.Fatalf("the twin's a:1 and a:2 on a: %+v, want duplicates", res)
	}
	if _, err := a.Add(ctx, key("snapshots", "y"), mustDoc(t, `{}`)); !errors.Is(err, ErrForked) {
		t.Fatalf("a write after the twin's a:2: %v, want ErrForked", err)
	}
}

// A run whose signature comes in a later call (a sync frame or a page cut
// it) waits, unproven, and joins once the signed delta that chains back to
// it arrives, whatever the order of the calls.
func TestProof_RunCutBeforeItsSignatureJoinsLater(t *testing.T) {
	ctx := context.Background()
	a, b := openMem(t, signedConfig(t)), openMem(t, signedConfig(t))
	for i := range 20 {
		mustAdd(t, a, fmt.Sprintf("s%d", i), `{"n":1}`)
	}
	pull(t, a, b) // b keeps only the signature at the end of the run
	var run []*crdt.Delta
	if _, err := b.DeltasFor(ctx, crdt.NewContext(), func(d *crdt.Delta, _ []byte) error { run = append(run, d); return nil }); err != nil {
		t.Fatal(err)
	}
	signed := 0
	for _, d := range run {
		if d.Proof.Sig != nil {
			signed++
		}
	}
	if len(run) != 20 || signed != 1 || run[19].Proof.Sig == nil {
		t.Fatalf("b forwards %d deltas, %d signed; want 20, the last signed", len(run), signed)
	}
	frames := [][]*crdt.Delta{run[:7], run[7:14], run[14:]}
	for _, order := range [][]int{{0, 1, 2}, {2, 1, 0}, {1, 2, 0}, {0, 2, 1}} {
		c := openMem(t, signedConfig(t))
		total := 0
		for i, f := range order {
			res := mustApply(t, c, frames[f]...)
			total += res.New
			if i < 2 && res.New != 0 && f != 2 {
				t.Fatalf("order %v: frame %d joined %d before the signature came", order, f, res.New)
			}
		}
		if total != 20 || dump(t, c, "snapshots") != dump(t, a, "snapshots") {
			t.Fatalf("order %v: %d joined; state differs from a's", order, total)
		}
		if s := c.Stats(); s.Waiting != 0 || s.Unproven != 0 {
			t.Fatalf("order %v: %d still waiting, %d refused as unproven", order, s.Waiting, s.Unproven)
		}
	}
}

// byzSigner is a Byzantine replica with its own key: it signs what it
// likes under its own replica, and may sign two histories.
type byzSigner struct {
	id   crdt.ReplicaID
	key  ed25519.PrivateKey
	next uint64
	prev crdt.Hash
}

func newByzSigner(tb testing.TB) *byzSigner {
	tb.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	id, err := crdt.NewKeyedReplicaID(pub, rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return &byzSigner{id: id, key: key, next: 1, prev: crdt.ChainStart(id)}
}

// sign chains (in the split format) and signs d, made with dot s.dot();
// with advance unset the chain stays where it was, so the next delta
// signs a second history.
func (s *byzSigner) sign(tb testing.TB, d *crdt.Delta, advance bool) *crdt.Delta {
	tb.Helper()
	d.Proof = crdt.Proof{Prev: s.prev, Split: true}
	next := d.Proof.Next(d, nil)
	d.Proof.Sig = crdt.SignHead(s.key, s.id, d.Dot.Counter, next)
	if advance {
		s.prev, s.next = next, s.next+1
	}
	return d
}

func (s *byzSigner) dot() crdt.Dot { return crdt.Dot{Replica: s.id, Counter: s.next} }

// The property test of TestIntegrity_ByzantineReplicasCannotHarmHonestOnes
// for signed nodes, against Byzantine replicas that hold keys of their
// own: besides claims beyond what exists, they write honest replicas' next
// dots (unsigned, or signed with their own keys) and sign two histories of
// their own. Honest nodes keep every acknowledged write, end with the
// items a node that saw only honest deltas has, and agree on every honest
// replica's history; once they compare histories and exchange full states
// (as p2p does), they agree on the Byzantine replicas' items too.
func TestProof_ByzantineSignersCannotHarmHonestOnes(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		ctx := context.Background()
		cfgs := []Config{signedConfig(t), signedConfig(t), signedConfig(t), signedConfig(t)}
		for i := range cfgs {
			cfgs[i].MaxWaitingDeltas = 50
		}
		honest := []*Node{openMem(t, cfgs[0]), openMem(t, cfgs[1]), openMem(t, cfgs[2])}
		clean := openMem(t, cfgs[3]) // receives honest deltas only
		subs := map[*Node]*Subscription{}
		for _, n := range honest {
			subs[n] = n.Subscribe(100_000)
		}
		defer func() {
			for _, n := range append(honest, clean) {
				n.Close()
			}
		}()
		byzs := []*byzSigner{newByzSigner(t), newByzSigner(t)}
		ids := []string{"a", "b", "c"}
		var mine, byz []*crdt.Delta
		const beyond = 1_000
		evil := crdt.Document{"v": []byte(`"evil"`)}
		attack := func(n *Node) {
			victim := honest[rapid.IntRange(0, len(honest)-1).Draw(rt, "victim")]
			k := key("snapshots", rapid.SampledFrom(append(ids, "byz")).Draw(rt, "id"))
			far := crdt.Dot{Replica: victim.ReplicaID(), Counter: beyond + rapid.Uint64Range(0, 1<<63).Draw(rt, "far")}
			nextOf := crdt.Dot{Replica: victim.ReplicaID(), Counter: victim.Stats().Counter + 1}
			s := byzs[rapid.IntRange(0, len(byzs)-1).Draw(rt, "byz")]
			switch rapid.IntRange(0, 5).Draw(rt, "attack") {
			case 0: // the victim's next dot, unsigned: it waits, unproven
				d, _ := crdt.AddDelta(k, nil, evil, nextOf, testTS)
				d.Proof.Prev = crdt.ChainStart(nextOf.Replica)
				byz = append(byz, d)
			case 1: // the victim's next dot signed with another key
				d, _ := crdt.AddDelta(k, nil, evil, nextOf, testTS)
				enc, _ := crdt.EncodeDelta(d)
				d.Proof.Prev = crdt.ChainStart(nextOf.Replica)
				d.Proof.Sig = crdt.SignHead(s.key, nextOf.Replica, nextOf.Counter, crdt.ChainNext(d.Proof.Prev, enc))
				if _, err := n.ApplyDelta(ctx, d); !errors.Is(err, crdt.ErrInvalid) {
					rt.Fatalf("a forged signature: err = %v, want ErrInvalid", err)
				}
				return
			case 2: // a remove naming honest writes that do not exist
				byz = append(byz, s.sign(t, forgedRemove(k, s.dot(), far), true))
			case 3: // an overwrite naming them
				d, _ := crdt.AddDelta(k, &crdt.Item{Presence: []crdt.Dot{far}}, evil, s.dot(), testTS)
				byz = append(byz, s.sign(t, d, true))
			case 4: // two histories of its own item
				d1, _ := crdt.AddDelta(key("snapshots", "byz"), nil, evil, s.dot(), testTS)
				d2, _ := crdt.AddDelta(key("snapshots", "byz"), nil, crdt.Document{"v": []byte(`"twin"`)}, s.dot(), testTS)
				byz = append(byz, s.sign(t, d2, false), s.sign(t, d1, true))
			default: // its own add, on its own item
				d, _ := crdt.AddDelta(key("snapshots", "byz"), nil, evil, s.dot(), testTS)
				byz = append(byz, s.sign(t, d, true))
			}
			if _, err := n.ApplyDelta(ctx, byz[len(byz)-1]); err != nil {
				rt.Fatalf("well-formed Byzantine delta: %v", err)
			}
		}
		for range rapid.IntRange(1, 60).Draw(rt, "steps") {
			n := honest[rapid.IntRange(0, len(honest)-1).Draw(rt, "node")]
			switch rapid.IntRange(0, 4).Draw(rt, "step") {
			case 0:
				attack(n)
			case 1:
				if len(mine) > 0 {
					d := mine[rapid.IntRange(0, len(mine)-1).Draw(rt, "deliver")]
					if _, err := n.ApplyDeltas(ctx, []*crdt.Delta{d, d}); err != nil {
						rt.Fatal(err)
					}
				}
			default:
				honestWrite(ctx, rt, n, subs[n], ids, &mine)
			}
		}
		for _, n := range honest {
			if _, err := n.ApplyDeltas(ctx, byz); err != nil {
				rt.Fatal(err)
			}
		}
		for range 2 {
			for _, a := range honest {
				for _, b := range honest {
					if a != b {
						antiEntropy(t, a, b)
					}
				}
			}
		}
		// The clean node gets the honest deltas in any order, each run's
		// signature included (each honest delta left its node signed or
		// followed by a signed one).
		if _, err := clean.ApplyDeltas(ctx, shuffled(rt, mine)); err != nil {
			rt.Fatal(err)
		}
		for _, h := range honest {
			pull(t, h, clean)
		}
		honestItems := func(n *Node) string { return itemsOf(ctx, n, ids) }
		want := honestItems(clean)
		_, cleanApplied := clean.Contexts()
		for _, n := range honest {
			if got := honestItems(n); got != want {
				rt.Fatalf("honest items on %s:\n%s\nwithout Byzantine deltas:\n%s", n.ReplicaID(), got, want)
			}
			_, applied := n.Contexts()
			for _, h := range honest {
				if got, want := applied.Max(h.ReplicaID()), cleanApplied.Max(h.ReplicaID()); got != want {
					rt.Fatalf("%s holds %s up to %d, the clean node up to %d", n.ReplicaID(), h.ReplicaID(), got, want)
				}
			}
			if s := n.Stats(); s.Forked {
				rt.Fatalf("%s thinks it is forked: %s", n.ReplicaID(), s.Fork)
			}
		}
		// Equivocations: found, passed on, resolved by full states.
		for _, a := range honest {
			for _, b := range honest {
				if a != b {
					compareHistories(t, a, b)
				}
			}
		}
		for range 2 {
			for _, a := range honest {
				for _, b := range honest {
					if a != b {
						passForks(t, a, b)
						fullPull(t, a, b)
					}
				}
			}
		}
		all := append(slices.Clone(ids), "byz")
		for _, n := range honest {
			if got, first := itemsOf(ctx, n, all), itemsOf(ctx, honest[0], all); got != first {
				rt.Fatalf("after resolving equivocations, %s holds\n%s\nand %s\n%s", n.ReplicaID(), got, honest[0].ReplicaID(), first)
			}
			if got := honestItems(n); got != want {
				rt.Fatalf("honest items on %s after resolving:\n%s\nwithout Byzantine deltas:\n%s", n.ReplicaID(), got, want)
			}
		}
	})
}

// rewriteHeader returns the state stream b with its header changed by fn.
func rewriteHeader(t *testing.T, b []byte, fn func(*stateFrame)) []byte {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(b))
	var out bytes.Buffer
	for first := true; ; first = false {
		f, err := readFrame(r, nil, headerBytes(maxReplicasLimit))
		if err != nil {
			t.Fatal(err)
		}
		if first {
			fn(f)
		}
		if err := writeFrame(&out, f); err != nil {
			t.Fatal(err)
		}
		if f.Kind == frameEnd {
			return out.Bytes()
		}
	}
}

// A full state may claim a keyed replica's dots only as far as a head the
// replica signed: a crafted state that claims its future (whose deltas the
// receiver would then drop as seen) is refused whole.
func TestProof_StateClaimsNeedSignedHeads(t *testing.T) {
	ctx := context.Background()
	a, b := openMem(t, signedConfig(t)), openMem(t, signedConfig(t))
	for i := range 5 {
		mustAdd(t, a, fmt.Sprintf("s%d", i), `{"n":1}`)
	}
	var state bytes.Buffer
	if err := a.ExportState(ctx, &state); err != nil {
		t.Fatal(err)
	}
	ar := a.ReplicaID()
	future := func(f *stateFrame) {
		for _, ctxb := range []*[]byte{&f.Seen, &f.Applied} {
			c, err := crdt.DecodeContext(*ctxb)
			if err != nil {
				t.Fatal(err)
			}
			for i := uint64(6); i <= 105; i++ {
				c.Add(crdt.Dot{Replica: ar, Counter: i})
			}
			if *ctxb, err = crdt.EncodeContext(c); err != nil {
				t.Fatal(err)
			}
		}
	}
	heads, err := decodeStateHeads(headerHeads(t, state.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	bumped := heads[ar]
	bumped.Counter = 105 // the signature was made for 5
	for _, c := range []struct {
		what string
		fn   func(*stateFrame)
	}{
		{"a claim past the signed head", future},
		{"a claim with the head's counter moved", func(f *stateFrame) {
			future(f)
			f.Heads = encodeStateHeads(map[crdt.ReplicaID]head{ar: bumped})
		}},
		{"a claim without heads", func(f *stateFrame) { f.Heads = nil }},
	} {
		crafted := rewriteHeader(t, state.Bytes(), c.fn)
		if _, err := b.ImportState(ctx, bytes.NewReader(crafted)); !errors.Is(err, crdt.ErrInvalid) {
			t.Fatalf("%s: import err = %v, want ErrInvalid", c.what, err)
		}
		if st := b.Stats(); st.Items["snapshots"] != 0 || st.Version[ar] != 0 {
			t.Fatalf("%s: the refused state changed b: %+v", c.what, st)
		}
	}
	// The state as a exported it is taken, with a's head: a's next delta
	// then extends the chain b holds.
	if _, err := b.ImportState(ctx, bytes.NewReader(state.Bytes())); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, a, "s5", `{"n":1}`)
	if res := pull(t, a, b); res.New != 1 {
		t.Fatalf("a's delta after the state: %+v", res)
	}
	if h := b.heads[ar]; h.Counter != 6 {
		t.Fatalf("b's chain head of a at %d, want 6", h.Counter)
	}
}

// headerHeads returns the heads field of state b's header.
func headerHeads(t *testing.T, b []byte) []byte {
	t.Helper()
	f, err := readFrame(bufio.NewReader(bytes.NewReader(b)), nil, headerBytes(maxReplicasLimit))
	if err != nil {
		t.Fatal(err)
	}
	return f.Heads
}
