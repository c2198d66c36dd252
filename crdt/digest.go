package crdt

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
)

// DigestBuckets is the number of buckets a Digest splits a context's
// replicas into, by the first 12 bits of the SHA-256 of their IDs.
// DigestGroups groups them, DigestBuckets/DigestGroups consecutive
// buckets each, so that two replicas can compare 64 group hashes, then the
// bucket hashes of the groups that differ only.
const (
	DigestBuckets = 4096
	DigestGroups  = 64
	groupBuckets  = DigestBuckets / DigestGroups
)

// GroupHashes returns the hash of each group of bucket hashes (as
// Digest.Buckets returns them): the first 8 bytes of the SHA-256 of the
// group's bucket hashes, big-endian.
func GroupHashes(buckets []uint64) []uint64 {
	out := make([]uint64, DigestGroups)
	buf := make([]byte, 0, 8*groupBuckets)
	for g := range out {
		buf = buf[:0]
		for _, h := range buckets[g*groupBuckets : (g+1)*groupBuckets] {
			buf = binary.BigEndian.AppendUint64(buf, h)
		}
		sum := sha256.Sum256(buf)
		out[g] = binary.BigEndian.Uint64(sum[:8])
	}
	return out
}

// GroupOf returns the digest group of bucket b.
func GroupOf(b int) int { return b / groupBuckets }

// GroupBuckets returns the first bucket of group g and the one past its last.
func GroupBuckets(g int) (first, end int) { return g * groupBuckets, (g + 1) * groupBuckets }

// BucketOf returns the digest bucket of r.
func BucketOf(r ReplicaID) int {
	h := sha256.Sum256([]byte(r))
	return int(binary.BigEndian.Uint16(h[:2]) >> 4)
}

// Digest summarises a Context so that two replicas can find where their
// contexts differ by exchanging hashes: a root hash, then one 8-byte hash
// per bucket, then the entries (Context.AppendEntry) of the differing
// buckets only. A bucket's hash covers the IDs and entries of its
// replicas in ID order, so equal buckets hash alike on every node.
//
// A Digest follows its context as the caller reports changes (Update);
// it hashes again only the buckets that changed, when asked. It is not
// safe for concurrent use.
type Digest struct {
	c       *Context
	members [DigestBuckets][]ReplicaID // sorted
	sums    [DigestBuckets]uint64
	stale   map[int]struct{} // buckets whose sums are out of date
	root    Hash
	rootOK  bool
}

// NewDigest returns the digest of c, which it reads from then on: the
// caller reports every change of c with Update.
func NewDigest(c *Context) *Digest {
	d := &Digest{c: c, stale: map[int]struct{}{}}
	for _, r := range c.Replicas() {
		b := BucketOf(r)
		d.members[b] = append(d.members[b], r)
		d.stale[b] = struct{}{}
	}
	return d
}

// Update records that the entries of rs changed in the context (see
// Context.TakeTouched).
func (d *Digest) Update(rs []ReplicaID) {
	for _, r := range rs {
		b := BucketOf(r)
		m := d.members[b]
		i, found := slices.BinarySearch(m, r)
		has := d.c.vv[r] > 0 || len(d.c.cloud[r]) > 0
		switch {
		case has && !found:
			d.members[b] = slices.Insert(m, i, r)
		case !has && found:
			d.members[b] = slices.Delete(m, i, i+1)
		}
		d.stale[b] = struct{}{}
		d.rootOK = false
	}
}

// Members returns the replicas of bucket b, sorted. The caller must not
// change the slice.
func (d *Digest) Members(b int) []ReplicaID { return d.members[b] }

// Buckets returns the hash of every bucket, in bucket order. The caller
// owns the slice.
func (d *Digest) Buckets() []uint64 {
	d.refresh()
	return slices.Clone(d.sums[:])
}

// Root returns the hash of the bucket hashes: equal roots mean equal
// contexts, but for a SHA-256 collision.
func (d *Digest) Root() Hash {
	d.refresh()
	if !d.rootOK {
		buf := make([]byte, 0, 8*DigestBuckets)
		for _, s := range d.sums {
			buf = binary.BigEndian.AppendUint64(buf, s)
		}
		d.root, d.rootOK = sha256.Sum256(buf), true
	}
	return d.root
}

// refresh hashes the stale buckets again.
func (d *Digest) refresh() {
	var buf []byte
	for b := range d.stale {
		d.sums[b] = 0
		if len(d.members[b]) > 0 {
			buf = buf[:0]
			for _, r := range d.members[b] {
				buf = append(append(buf, byte(len(r))), r...)
				e := d.c.AppendEntry(nil, r)
				buf = append(binary.AppendUvarint(buf, uint64(len(e))), e...)
			}
			h := sha256.Sum256(buf)
			d.sums[b] = binary.BigEndian.Uint64(h[:8])
		}
		d.rootOK = false
	}
	clear(d.stale)
}

// Drop removes every dot of r from c.
func (c *Context) Drop(r ReplicaID) {
	if _, ok := c.vv[r]; ok {
		c.touch(r)
		delete(c.vv, r)
	}
	if _, ok := c.cloud[r]; ok {
		c.touch(r)
		delete(c.cloud, r)
	}
}

// Patch replaces, in c, the replicas of the given digest buckets (drop,
// the replicas c holds there, as its Digest's Members list them) with
// the ones entries names (replica -> Context.AppendEntry form): what a
// node knows of a peer's context after the peer sent its entries of the
// buckets where the two differ. Every replica of entries must be in one
// of buckets; an error wraps ErrInvalid (ErrVersion for an entry of
// another version) and leaves c unchanged. Patching a clone costs the
// clone plus the entries.
func (c *Context) Patch(buckets []int, drop []ReplicaID, entries map[ReplicaID][]byte) error {
	in := make(map[int]bool, len(buckets))
	for _, b := range buckets {
		in[b] = true
	}
	scratch := NewContext()
	for r, e := range entries {
		if !in[BucketOf(r)] {
			return fmt.Errorf("patch context: %w: replica %s is not in a listed bucket", ErrInvalid, r)
		}
		if err := scratch.SetEntry(r, e); err != nil {
			return fmt.Errorf("patch context: %w", err)
		}
	}
	for _, r := range drop {
		c.Drop(r)
	}
	for r, n := range scratch.vv {
		c.touch(r)
		c.vv[r] = n
	}
	for r, cl := range scratch.cloud {
		c.touch(r)
		c.cloud[r] = cl
	}
	return nil
}
