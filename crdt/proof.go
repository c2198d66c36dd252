package crdt

import (
	"bytes"
	"cmp"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"slices"
	"strings"
	"sync"
)

// Proof of origin.
//
// A keyed replica's ID names the Ed25519 key of the node that owns it (see
// NewKeyedReplicaID), and its deltas form a hash chain: the chain hash after
// counter c is Proof.Next of delta c, starting from ChainStart(replica).
// Deltas of the split format (Proof.Split, every delta written since stubs
// exist) chain SplitDigest's two parts — the delta without its own entries,
// and its own entries — so that a stub, which carries the second part's
// digest instead of the entries, is checked like the whole delta (see
// stub.go); deltas written before chain EncodeDelta's bytes (ChainNext). The owner signs chain heads: a signature over
// (replica, c, hash after c) vouches for every delta 1..c of the replica at
// once, since no other sequence of deltas hashes to the same head. So a run
// of deltas c1..c2 is proven by the Prev hash of its first delta, the deltas
// themselves and one signature at c2 (or at any later counter whose deltas
// come with it): one signature check per run, one SHA-256 per delta.
// Forwarders cannot forge or alter a delta, and a replica that signs two
// different chains (equivocation) is caught by whoever holds both.

// HashSize is the size of a Hash.
const HashSize = sha256.Size

// Hash is a SHA-256 digest: a position in a replica's hash chain.
type Hash [HashSize]byte

// IsZero reports whether h is the zero hash, which no chain position has
// (but for a broken SHA-256).
func (h Hash) IsZero() bool { return h == Hash{} }

// String formats h in hex.
func (h Hash) String() string { return fmt.Sprintf("%x", h[:]) }

// SigSize is the size of a proof's signature.
const SigSize = ed25519.SignatureSize

// Proof carries a delta's place in its replica's hash chain and, where the
// origin signed the head there, the signature. It is not part of the
// delta's encoding (EncodeDelta), which is what the chain hashes.
type Proof struct {
	// Prev is the replica's chain hash before this delta; zero for a delta
	// that carries no proof (of a replica that is not keyed).
	Prev Hash
	// Sig is nil, or the replica's signature of its chain head after this
	// delta (see SignHead).
	Sig []byte
	// Split reports that the chain hashes the delta's SplitDigest rather
	// than its encoding (deltas written before stubs existed); see Next.
	Split bool
	// Elided is zero, or, for a stub, the digest of the delta's own
	// entries (SplitDigest's second part), which the stub leaves out. A
	// stub is always of the split format.
	Elided Hash
}

// Next returns the chain hash after d, whose proof is p and whose binary
// encoding is enc: ChainNext(p.Prev, enc) for a delta of the old format,
// ChainNextSplit(p.Prev, SplitDigest(d)) for one of the split format. enc
// is not read for the split format.
func (p Proof) Next(d *Delta, enc []byte) Hash {
	if !p.Split {
		return ChainNext(p.Prev, enc)
	}
	head, own := SplitDigest(d)
	return ChainNextSplit(p.Prev, head, own)
}

// ChainStart returns the chain hash of replica r before its first delta.
func ChainStart(r ReplicaID) Hash {
	return sha256.Sum256(append([]byte("crdt-catalog chain v1\x00"), r...))
}

// ChainNext returns the chain hash after the delta whose binary encoding
// is enc, given the hash before it.
func ChainNext(prev Hash, enc []byte) Hash {
	h := hashers.Get().(hash.Hash)
	h.Reset()
	h.Write(prev[:])
	h.Write(enc)
	var out Hash
	h.Sum(out[:0])
	hashers.Put(h)
	return out
}

// ChainNextSplit returns the chain hash after a delta of the split format
// whose SplitDigest is (head, own), given the hash before it.
func ChainNextSplit(prev, head, own Hash) Hash {
	b := make([]byte, 0, len(chainSplitTag)+3*HashSize)
	b = append(append(append(append(b, chainSplitTag...), prev[:]...), head[:]...), own[:]...)
	return sha256.Sum256(b)
}

// chainSplitTag starts what ChainNextSplit hashes, so that no encoding
// ChainNext hashes can give the same input.
const chainSplitTag = "crdt-catalog chain v2\x00"

// hashers holds SHA-256 states for ChainNext, which runs once per delta.
var hashers = sync.Pool{New: func() any { return sha256.New() }}

// headMessage is what a head signature signs.
func headMessage(r ReplicaID, counter uint64, h Hash) []byte {
	m := make([]byte, 0, 32+len(r)+8+len(h))
	m = append(m, "crdt-catalog head v1\x00"...)
	m = append(m, r...)
	m = append(m, 0)
	m = binary.BigEndian.AppendUint64(m, counter)
	return append(m, h[:]...)
}

// SignHead signs the chain head h of replica r after its counter-th delta
// with key, which must be the key r names.
func SignHead(key ed25519.PrivateKey, r ReplicaID, counter uint64, h Hash) []byte {
	return ed25519.Sign(key, headMessage(r, counter, h))
}

// VerifyHead checks sig, a signature of chain head h of replica r after its
// counter-th delta, against the key r names. It returns an error wrapping
// ErrInvalid if r is not keyed or the signature does not verify.
func VerifyHead(r ReplicaID, counter uint64, h Hash, sig []byte) error {
	pub, ok := r.PublicKey()
	if !ok {
		return fmt.Errorf("%w: replica %q names no key", ErrInvalid, r)
	}
	if len(sig) != SigSize || !ed25519.Verify(pub, headMessage(r, counter, h), sig) {
		return fmt.Errorf("%w: bad signature of %s's chain head at %d", ErrInvalid, r, counter)
	}
	return nil
}

// Proof tags: which of a proof's fields follow the tag byte. A tag with a
// signature is the one before it plus one.
const (
	proofNone     = 0 // nothing
	proofPrev     = 1 // Prev
	proofSig      = 2 // Prev, Sig
	proofSplit    = 3 // Prev; Split
	proofSplitSig = 4 // Prev, Sig; Split
	proofStub     = 5 // Prev, Elided; Split
	proofStubSig  = 6 // Prev, Sig, Elided; Split
	proofTags     = 7

	proofSigTags = 1<<proofSig | 1<<proofSplitSig | 1<<proofStubSig
)

// AppendProof appends the binary encoding of p to b: a tag byte (0: none;
// 1 and 2: Prev, and Sig for 2, of the old format; 3 and 4: the same of
// the split format; 5 and 6: the same of a stub, followed by Elided) and
// the fields it announces. A proof without Prev encodes as none.
func AppendProof(b []byte, p Proof) []byte {
	if p.Prev.IsZero() {
		return append(b, proofNone)
	}
	tag := byte(proofPrev)
	switch {
	case !p.Elided.IsZero():
		tag = proofStub
	case p.Split:
		tag = proofSplit
	}
	if p.Sig != nil {
		tag++
	}
	b = append(append(b, tag), p.Prev[:]...)
	if p.Sig != nil {
		b = append(b, p.Sig...)
	}
	if tag >= proofStub {
		b = append(b, p.Elided[:]...)
	}
	return b
}

// ParseProof decodes a proof that AppendProof wrote at the start of b and
// returns it with the number of bytes it took. It never panics.
func ParseProof(b []byte) (Proof, int, error) {
	var p Proof
	if len(b) == 0 {
		return p, 0, fmt.Errorf("%w: proof: no tag", ErrInvalid)
	}
	tag := b[0]
	if tag >= proofTags {
		return p, 0, fmt.Errorf("%w: proof: tag %d", ErrInvalid, tag)
	}
	if tag == proofNone {
		return p, 1, nil
	}
	need := 1 + HashSize
	if proofSigTags&(1<<tag) != 0 {
		need += SigSize
	}
	if tag >= proofStub {
		need += HashSize
	}
	if len(b) < need {
		return p, 0, fmt.Errorf("%w: proof cut short", ErrInvalid)
	}
	n := 1 + copy(p.Prev[:], b[1:])
	if p.Prev.IsZero() {
		return p, 0, fmt.Errorf("%w: proof: zero chain hash", ErrInvalid)
	}
	if proofSigTags&(1<<tag) != 0 {
		p.Sig = bytes.Clone(b[n : n+SigSize])
		n += SigSize
	}
	p.Split = tag >= proofSplit
	if tag >= proofStub {
		n += copy(p.Elided[:], b[n:])
		if p.Elided.IsZero() {
			return p, 0, fmt.Errorf("%w: proof: zero elided digest", ErrInvalid)
		}
	}
	return p, n, nil
}

// DecodeProof decodes a proof that is all of b.
func DecodeProof(b []byte) (Proof, error) {
	p, n, err := ParseProof(b)
	if err == nil && n != len(b) {
		err = fmt.Errorf("%w: %d bytes after the proof", ErrInvalid, len(b)-n)
	}
	return p, err
}

// Checked is what CheckProofs found out about one delta.
type Checked struct {
	// Keyed reports that the delta's replica is keyed, so that the delta
	// must be proven to be joined.
	Keyed bool
	// Proven reports that a valid signature of the replica covers the
	// delta: its own, or one of a later delta of the same call that
	// chains back to it.
	Proven bool
	// Next is the replica's chain hash after the delta; zero for a delta
	// without proof.
	Next Hash
	// Sig is the verified signature of the chain head after this delta, if
	// it carries one and it was checked; the signatures CheckProofs does
	// not need to check are not kept, since nothing vouches for them.
	Sig []byte
}

// CheckProofs checks the proofs of deltas, whose binary encodings are
// encs. For each keyed replica it links the deltas into chains (a delta
// whose Prev is the Next of the delta before it) and checks the last
// signature of each chain, which proves every delta up to it. Deltas of
// replicas that are not keyed, and deltas after the last signature of
// their chain, are not proven. It fails, wrapping ErrInvalid, if a
// signature it checks does not verify: an honest sender never forwards
// one.
func CheckProofs(deltas []*Delta, encs [][]byte) ([]Checked, error) {
	out := make([]Checked, len(deltas))
	byReplica := map[ReplicaID][]int{}
	for i, d := range deltas {
		byReplica[d.Dot.Replica] = append(byReplica[d.Dot.Replica], i)
	}
	for r, idx := range byReplica {
		if _, ok := r.PublicKey(); !ok {
			continue
		}
		for _, i := range idx {
			out[i].Keyed = true
			if p := deltas[i].Proof; !p.Prev.IsZero() {
				out[i].Next = p.Next(deltas[i], encs[i])
			}
		}
		if err := checkChains(r, deltas, idx, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// maxChecksPerReplica bounds the signatures CheckProofs checks for one
// replica in one call, so that a replica signing many histories of its
// own cannot make a receiver spend a signature check per delta.
const maxChecksPerReplica = 8

// checkChains proves the deltas deltas[idx] of keyed replica r.
func checkChains(r ReplicaID, deltas []*Delta, idx []int, out []Checked) error {
	slices.SortStableFunc(idx, func(a, b int) int {
		return cmp.Compare(deltas[a].Dot.Counter, deltas[b].Dot.Counter)
	})
	// prev[k] is the position in idx of the delta that idx[k] chains from,
	// or -1: found by its counter and chain hash, so that many deltas under
	// one dot cost no more than as many distinct ones.
	type link struct {
		counter uint64
		next    Hash
	}
	at := make(map[link]int, len(idx))
	for k, i := range idx {
		if n := out[i].Next; !n.IsZero() {
			if _, dup := at[link{deltas[i].Dot.Counter, n}]; !dup {
				at[link{deltas[i].Dot.Counter, n}] = k
			}
		}
	}
	prev := make([]int, len(idx))
	for k, i := range idx {
		prev[k] = -1
		if j, ok := at[link{deltas[i].Dot.Counter - 1, deltas[i].Proof.Prev}]; ok && deltas[i].Dot.Counter > 1 {
			prev[k] = j
		}
	}
	// Walk from the newest: a checked signature proves its delta and every
	// one it chains back to.
	// An honest replica's deltas make one chain, which one check proves; a
	// replica that signed many histories gets maxChecksPerReplica, and
	// the deltas left unproven wait for a later call.
	checks := 0
	for k := len(idx) - 1; k >= 0 && checks < maxChecksPerReplica; k-- {
		i := idx[k]
		d := deltas[i]
		if out[i].Proven || d.Proof.Sig == nil || out[i].Next.IsZero() {
			continue
		}
		checks++
		if err := VerifyHead(r, d.Dot.Counter, out[i].Next, d.Proof.Sig); err != nil {
			return fmt.Errorf("delta %d (%s): %w", i, d.Dot, err)
		}
		out[i].Sig = d.Proof.Sig
		for j := k; j >= 0 && !out[idx[j]].Proven; j = prev[j] {
			out[idx[j]].Proven = true
		}
	}
	return nil
}

// Keyed replica IDs.
//
// A keyed replica ID is "<peer>.<incarnation>": <peer> is the libp2p peer
// ID of an Ed25519 key in its text form (base58btc of the identity
// multihash of the key's protobuf encoding: "12D3KooW" and 44 more
// characters), and <incarnation> is 8 random characters of [a-z2-7], drawn
// when the replica is created, so one key may own many replicas over time
// (a reincarnated store keeps its key). Its public key is read from the ID
// itself: no directory is needed to check a signature.

// keyedPrefix is the identity-multihash and protobuf framing of an
// Ed25519 public key in a libp2p peer ID: multihash code 0 (identity),
// length 36; protobuf field 1 (key type) = 1 (Ed25519), field 2 (data),
// length 32.
var keyedPrefix = []byte{0x00, 0x24, 0x08, 0x01, 0x12, 0x20}

// incarnationLen is the length of a keyed replica ID's incarnation.
const incarnationLen = 8

const incarnationAlphabet = "abcdefghijklmnopqrstuvwxyz234567"

// PeerIDOf returns the libp2p peer ID, in text form, of Ed25519 key pub.
func PeerIDOf(pub ed25519.PublicKey) string {
	return base58Encode(append(slices.Clone(keyedPrefix), pub...))
}

// NewKeyedReplicaID returns a new replica ID owned by the Ed25519 key pub,
// drawing its incarnation from random.
func NewKeyedReplicaID(pub ed25519.PublicKey, random io.Reader) (ReplicaID, error) {
	if len(pub) != ed25519.PublicKeySize {
		return "", fmt.Errorf("%w: public key of %d bytes", ErrInvalid, len(pub))
	}
	var raw [incarnationLen]byte
	if _, err := io.ReadFull(random, raw[:]); err != nil {
		return "", fmt.Errorf("new replica id: %w", err)
	}
	inc := make([]byte, incarnationLen)
	for i, c := range raw {
		inc[i] = incarnationAlphabet[c%32]
	}
	return ReplicaID(PeerIDOf(pub) + "." + string(inc)), nil
}

// PublicKey returns the Ed25519 key that owns r, if r is a keyed replica
// ID.
func (r ReplicaID) PublicKey() (ed25519.PublicKey, bool) {
	peer, inc, ok := strings.Cut(string(r), ".")
	if !ok || len(inc) != incarnationLen || strings.Trim(inc, incarnationAlphabet) != "" {
		return nil, false
	}
	raw, ok := base58Decode(peer)
	if !ok || len(raw) != len(keyedPrefix)+ed25519.PublicKeySize || !bytes.HasPrefix(raw, keyedPrefix) || base58Encode(raw) != peer {
		return nil, false
	}
	return ed25519.PublicKey(raw[len(keyedPrefix):]), true
}

// Peer returns the libp2p peer ID (text form) of the key that owns r, or
// "" if r is not keyed.
func (r ReplicaID) Peer() string {
	if _, ok := r.PublicKey(); !ok {
		return ""
	}
	peer, _, _ := strings.Cut(string(r), ".")
	return peer
}

const base58Alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

var base58Index = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := range len(base58Alphabet) {
		t[base58Alphabet[i]] = int8(i)
	}
	return t
}()

func base58Encode(b []byte) string {
	zeros := 0
	for zeros < len(b) && b[zeros] == 0 {
		zeros++
	}
	// Little-endian base-58 digits of the big-endian number b.
	digits := make([]byte, 0, len(b)*138/100+1)
	for _, c := range b[zeros:] {
		carry := int(c)
		for i := range digits {
			carry += int(digits[i]) << 8
			digits[i] = byte(carry % 58)
			carry /= 58
		}
		for carry > 0 {
			digits = append(digits, byte(carry%58))
			carry /= 58
		}
	}
	out := make([]byte, zeros, zeros+len(digits))
	for i := range out {
		out[i] = base58Alphabet[0]
	}
	for i := len(digits) - 1; i >= 0; i-- {
		out = append(out, base58Alphabet[digits[i]])
	}
	return string(out)
}

// base58Decode decodes s, of at most 64 characters.
func base58Decode(s string) ([]byte, bool) {
	if len(s) == 0 || len(s) > 64 {
		return nil, false
	}
	zeros := 0
	for zeros < len(s) && s[zeros] == base58Alphabet[0] {
		zeros++
	}
	// Little-endian base-256 bytes of the number.
	var num []byte
	for i := zeros; i < len(s); i++ {
		carry := int(base58Index[s[i]])
		if carry < 0 {
			return nil, false
		}
		for j := range num {
			carry += int(num[j]) * 58
			num[j] = byte(carry)
			carry >>= 8
		}
		for carry > 0 {
			num = append(num, byte(carry))
			carry >>= 8
		}
	}
	out := make([]byte, zeros, zeros+len(num))
	for i := len(num) - 1; i >= 0; i-- {
		out = append(out, num[i])
	}
	return out, true
}
