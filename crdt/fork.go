package crdt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Proof of equivocation.
//
// A keyed replica that signs two different histories (equivocates) splits
// the nodes that receive them: each holds one history and refuses the
// other's deltas, since their Prev does not extend the chain it holds. A
// Fork proves it to anyone, trusting no one: two runs of the replica's
// chain (Chain) that start from one chain hash at one counter, differ in
// their first step, and each end in a valid signature of the replica. No
// honest replica signs two heads that do not lie on one chain, so a valid
// Fork convicts its replica and pins the first counter at which its
// histories differ (Fork.Counter).

// MaxChainSteps bounds the steps of one Chain: a run of a replica's chain
// that a proof of equivocation carries, 64 bytes a step.
const MaxChainSteps = 4096

// ChainStep is one delta's place in a chain of the split format: the two
// parts of its SplitDigest, which ChainNextSplit hashes.
type ChainStep struct {
	Head, Own Hash
}

// StepOf returns d's ChainStep. It is meaningful only for a delta of the
// split format (d.Proof.Split): the chain of an older delta hashes its
// whole encoding.
func StepOf(d *Delta) ChainStep {
	h, o := SplitDigest(d)
	return ChainStep{Head: h, Own: o}
}

// Chain is a run of a keyed replica's hash chain: Base is the chain hash
// after counter From-1 (ChainStart for From 1), Steps the chain steps of
// the deltas From, From+1, ..., and Sig the replica's signature of the
// chain hash after the last step (see SignHead).
type Chain struct {
	Replica ReplicaID
	From    uint64
	Base    Hash
	Steps   []ChainStep
	Sig     []byte
}

// End returns the counter of c's last step.
func (c *Chain) End() uint64 { return c.From + uint64(len(c.Steps)) - 1 }

// Hashes returns the chain hashes after each of c's steps.
func (c *Chain) Hashes() []Hash {
	out := make([]Hash, len(c.Steps))
	h := c.Base
	for i, s := range c.Steps {
		h = ChainNextSplit(h, s.Head, s.Own)
		out[i] = h
	}
	return out
}

// Verify checks c's shape and its signature: a keyed replica, at least one
// and at most MaxChainSteps steps, counters that do not overflow, a base
// that is ChainStart exactly when c starts at counter 1, and the
// replica's valid signature of the hash after the last step. Errors wrap
// ErrInvalid (ErrTooLarge for too many steps).
func (c *Chain) Verify() error {
	switch {
	case len(c.Steps) == 0:
		return fmt.Errorf("%w: chain of %s without steps", ErrInvalid, c.Replica)
	case len(c.Steps) > MaxChainSteps:
		return fmt.Errorf("%w: chain of %d steps (at most %d)", ErrTooLarge, len(c.Steps), MaxChainSteps)
	case c.From == 0 || c.End() < c.From:
		return fmt.Errorf("%w: chain from counter %d of %d steps", ErrInvalid, c.From, len(c.Steps))
	case (c.From == 1) != (c.Base == ChainStart(c.Replica)):
		return fmt.Errorf("%w: chain of %s from %d: base is not where its chain starts", ErrInvalid, c.Replica, c.From)
	}
	hs := c.Hashes()
	return VerifyHead(c.Replica, c.End(), hs[len(hs)-1], c.Sig)
}

// Fork is a proof that replica A.Replica signed two histories: chains A
// and B start at one counter from one base and differ in their first step.
type Fork struct {
	A, B Chain
}

// Replica returns the replica the fork convicts.
func (f *Fork) Replica() ReplicaID { return f.A.Replica }

// Counter returns the first counter at which the replica's two histories
// differ: every delta of the replica from there on is suspect.
func (f *Fork) Counter() uint64 { return f.A.From }

// Verify checks that f proves an equivocation: both chains valid (see
// Chain.Verify), of one replica, from one counter and one base, with
// different first steps. Errors wrap ErrInvalid.
func (f *Fork) Verify() error {
	switch {
	case f.A.Replica != f.B.Replica:
		return fmt.Errorf("%w: fork of two replicas %s and %s", ErrInvalid, f.A.Replica, f.B.Replica)
	case f.A.From != f.B.From || f.A.Base != f.B.Base:
		return fmt.Errorf("%w: fork of %s: the two chains do not start at one place", ErrInvalid, f.A.Replica)
	case len(f.A.Steps) == 0 || len(f.B.Steps) == 0 || f.A.Steps[0] == f.B.Steps[0]:
		return fmt.Errorf("%w: fork of %s: the two chains do not differ at their start", ErrInvalid, f.A.Replica)
	}
	if err := f.A.Verify(); err != nil {
		return fmt.Errorf("fork of %s, first chain: %w", f.A.Replica, err)
	}
	if err := f.B.Verify(); err != nil {
		return fmt.Errorf("fork of %s, second chain: %w", f.A.Replica, err)
	}
	return nil
}

// ErrNoFork is returned by ForkOf when two chains do not prove an
// equivocation.
var ErrNoFork = errors.New("the chains do not prove a fork")

// ForkOf compares two verified chains of one replica and returns the Fork
// they prove: both cut to start at the first counter where they differ,
// after one they agree on. It returns an error wrapping ErrNoFork if they
// agree wherever both reach, or if they never agree where they overlap
// (base included), so that the first difference lies before both and
// cannot be pinned.
func ForkOf(a, b *Chain) (*Fork, error) {
	if a.Replica != b.Replica {
		return nil, fmt.Errorf("%w: chains of two replicas", ErrNoFork)
	}
	ha, hb := a.Hashes(), b.Hashes()
	// at returns the chain hash of x (with hashes hs) after counter k, if x
	// holds it: its base for From-1, a step's hash up to End.
	at := func(x *Chain, hs []Hash, k uint64) (Hash, bool) {
		switch {
		case k+1 == x.From:
			return x.Base, true
		case k >= x.From && k <= x.End():
			return hs[k-x.From], true
		}
		return Hash{}, false
	}
	lo, hi := max(a.From, b.From)-1, min(a.End(), b.End())
	agreed := false
	for k := lo; k <= hi; k++ {
		x, _ := at(a, ha, k)
		y, _ := at(b, hb, k)
		if x == y {
			agreed = true
			continue
		}
		if !agreed {
			return nil, fmt.Errorf("%w: the chains of %s differ from counter %d on, before either starts", ErrNoFork, a.Replica, lo)
		}
		// They agree after k-1 and differ after k: both histories are cut
		// to start at k.
		base, _ := at(a, ha, k-1)
		cut := func(c *Chain) Chain {
			out := *c
			out.From, out.Base, out.Steps = k, base, c.Steps[k-c.From:]
			return out
		}
		return &Fork{A: cut(a), B: cut(b)}, nil
	}
	return nil, fmt.Errorf("%w: the chains of %s agree up to counter %d", ErrNoFork, a.Replica, hi)
}

// Binary encoding of chains and forks: a version byte, then for a chain
// the replica (uvarint length and bytes), From (uvarint), Base, the number
// of steps (uvarint) and the steps, and the signature; a fork is its two
// chains.
const forkVersion = 1

// AppendChain appends the binary encoding of c to b.
func AppendChain(b []byte, c *Chain) []byte {
	b = binary.AppendUvarint(b, uint64(len(c.Replica)))
	b = append(b, c.Replica...)
	b = binary.AppendUvarint(b, c.From)
	b = append(b, c.Base[:]...)
	b = binary.AppendUvarint(b, uint64(len(c.Steps)))
	for _, s := range c.Steps {
		b = append(append(b, s.Head[:]...), s.Own[:]...)
	}
	b = binary.AppendUvarint(b, uint64(len(c.Sig)))
	return append(b, c.Sig...)
}

// EncodeChain returns the binary encoding of c.
func EncodeChain(c *Chain) []byte { return AppendChain([]byte{forkVersion}, c) }

// EncodeFork returns the binary encoding of f.
func EncodeFork(f *Fork) []byte {
	return AppendChain(AppendChain([]byte{forkVersion}, &f.A), &f.B)
}

// DecodeChain decodes and verifies (Chain.Verify) a chain that EncodeChain
// wrote. It allocates only for steps the input holds and never panics.
func DecodeChain(b []byte) (*Chain, error) {
	r, err := forkReader(b)
	if err != nil {
		return nil, err
	}
	c, err := r.chain()
	if err == nil {
		err = r.end()
	}
	if err == nil {
		err = c.Verify()
	}
	if err != nil {
		return nil, fmt.Errorf("chain: %w", err)
	}
	return c, nil
}

// DecodeFork decodes a fork that EncodeFork wrote and verifies it (see
// Fork.Verify). It allocates only for steps the input holds and never
// panics.
func DecodeFork(b []byte) (*Fork, error) {
	r, err := forkReader(b)
	if err != nil {
		return nil, err
	}
	var f Fork
	a, err := r.chain()
	if err == nil {
		f.A = *a
		var c *Chain
		if c, err = r.chain(); err == nil {
			f.B = *c
			err = r.end()
		}
	}
	if err == nil {
		err = f.Verify()
	}
	if err != nil {
		return nil, fmt.Errorf("fork proof: %w", err)
	}
	return &f, nil
}

type chainReader struct{ b []byte }

func forkReader(b []byte) (*chainReader, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrInvalid)
	}
	if b[0] != forkVersion {
		return nil, fmt.Errorf("%w: fork proof version %d", ErrVersion, b[0])
	}
	return &chainReader{b: b[1:]}, nil
}

func (r *chainReader) uvarint(what string) (uint64, error) {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		return 0, fmt.Errorf("%w: %s: bad varint", ErrInvalid, what)
	}
	r.b = r.b[n:]
	return v, nil
}

func (r *chainReader) bytes(what string, n uint64) ([]byte, error) {
	if n > uint64(len(r.b)) {
		return nil, fmt.Errorf("%w: %s cut short", ErrInvalid, what)
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out, nil
}

func (r *chainReader) chain() (*Chain, error) {
	var c Chain
	n, err := r.uvarint("replica length")
	if err != nil {
		return nil, err
	}
	if n > MaxReplicaIDLen {
		return nil, fmt.Errorf("%w: replica id of %d bytes", ErrInvalid, n)
	}
	id, err := r.bytes("replica", n)
	if err != nil {
		return nil, err
	}
	c.Replica = ReplicaID(id)
	if err := c.Replica.Validate(); err != nil {
		return nil, err
	}
	if c.From, err = r.uvarint("from"); err != nil {
		return nil, err
	}
	base, err := r.bytes("base", HashSize)
	if err != nil {
		return nil, err
	}
	copy(c.Base[:], base)
	steps, err := r.uvarint("steps")
	if err != nil {
		return nil, err
	}
	if steps > MaxChainSteps {
		return nil, fmt.Errorf("%w: chain of %d steps (at most %d)", ErrTooLarge, steps, MaxChainSteps)
	}
	raw, err := r.bytes("steps", steps*2*HashSize)
	if err != nil {
		return nil, err
	}
	c.Steps = make([]ChainStep, steps)
	for i := range c.Steps {
		copy(c.Steps[i].Head[:], raw[i*2*HashSize:])
		copy(c.Steps[i].Own[:], raw[i*2*HashSize+HashSize:])
	}
	n, err = r.uvarint("signature length")
	if err != nil {
		return nil, err
	}
	if n != SigSize {
		return nil, fmt.Errorf("%w: signature of %d bytes", ErrInvalid, n)
	}
	sig, err := r.bytes("signature", n)
	if err != nil {
		return nil, err
	}
	c.Sig = bytes.Clone(sig)
	return &c, nil
}

func (r *chainReader) end() error {
	if len(r.b) > 0 {
		return fmt.Errorf("%w: %d bytes after the proof", ErrInvalid, len(r.b))
	}
	return nil
}
