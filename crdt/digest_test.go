package crdt

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// genWideContext draws a context of up to 40 replicas (so that several
// share buckets only by chance) with small counters, and a cloud now and
// then.
func genWideContext(t *rapid.T, label string) *Context {
	c := NewContext()
	for _, d := range rapid.SliceOfN(rapid.Custom(func(t *rapid.T) Dot {
		return Dot{ReplicaID(fmt.Sprintf("r%d", rapid.IntRange(0, 39).Draw(t, "replica"))), rapid.Uint64Range(1, 6).Draw(t, "counter")}
	}), 0, 120).Draw(t, label) {
		c.Add(d)
	}
	return c
}

// differing returns the buckets whose hashes differ.
func differing(a, b []uint64) []int {
	var out []int
	for i := range a {
		if a[i] != b[i] {
			out = append(out, i)
		}
	}
	return out
}

// bucketEntries returns c's entries of the replicas in buckets.
func bucketEntries(c *Context, buckets []int) map[ReplicaID][]byte {
	out := map[ReplicaID][]byte{}
	for _, r := range c.Replicas() {
		if slices.Contains(buckets, BucketOf(r)) {
			out[r] = c.AppendEntry(nil, r)
		}
	}
	return out
}

// TestDigest_FindsExactlyTheDifference: digests of equal contexts are
// equal; the buckets whose hashes differ hold every replica whose entries
// differ, and no other; patching one context with the other's entries of
// those buckets yields the other; and a digest kept up to date with
// Update equals one built afresh.
func TestDigest_FindsExactlyTheDifference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genWideContext(t, "c")
		o := genWideContext(t, "o")
		c.Track()
		dc, do := NewDigest(c), NewDigest(o)
		// Grow c after its digest was built, reporting the changes.
		for _, d := range rapid.SliceOfN(rapid.Custom(func(t *rapid.T) Dot {
			return Dot{ReplicaID(fmt.Sprintf("r%d", rapid.IntRange(0, 45).Draw(t, "replica"))), rapid.Uint64Range(1, 8).Draw(t, "counter")}
		}), 0, 20).Draw(t, "more") {
			c.Add(d)
		}
		dc.Update(c.TakeTouched())
		fresh := NewDigest(c)
		if dc.Root() != fresh.Root() || !slices.Equal(dc.Buckets(), fresh.Buckets()) {
			t.Fatal("an updated digest differs from one built afresh")
		}
		if (dc.Root() == do.Root()) != c.Equal(o) {
			t.Fatalf("roots equal %v, contexts equal %v", dc.Root() == do.Root(), c.Equal(o))
		}
		diff := differing(dc.Buckets(), do.Buckets())
		var groups []int
		for _, b := range diff {
			if g := GroupOf(b); !slices.Contains(groups, g) {
				groups = append(groups, g)
			}
		}
		if got := differing(GroupHashes(dc.Buckets()), GroupHashes(do.Buckets())); !slices.Equal(got, groups) {
			t.Fatalf("differing groups %v, want the groups %v of the differing buckets %v", got, groups, diff)
		}
		for _, g := range groups {
			if first, end := GroupBuckets(g); first != g*DigestBuckets/DigestGroups || end-first != DigestBuckets/DigestGroups {
				t.Fatalf("group %d spans buckets %d to %d", g, first, end)
			}
		}
		for _, r := range append(c.Replicas(), o.Replicas()...) {
			// A bucket may also differ because of another replica in it.
			same := slices.Equal(c.AppendEntry(nil, r), o.AppendEntry(nil, r))
			if !same && !slices.Contains(diff, BucketOf(r)) {
				t.Fatalf("replica %s differs, but its bucket %d does not", r, BucketOf(r))
			}
		}
		for _, b := range diff {
			if !slices.ContainsFunc(append(c.Replicas(), o.Replicas()...), func(r ReplicaID) bool {
				return BucketOf(r) == b && !slices.Equal(c.AppendEntry(nil, r), o.AppendEntry(nil, r))
			}) {
				t.Fatalf("bucket %d differs, but none of its replicas does", b)
			}
		}
		var drop []ReplicaID
		for _, b := range diff {
			drop = append(drop, dc.Members(b)...)
		}
		p := c.Clone()
		if err := p.Patch(diff, drop, bucketEntries(o, diff)); err != nil {
			t.Fatal(err)
		}
		if !p.Equal(o) {
			t.Fatalf("patched: %v %v, want %v %v", p.Version(), p.Cloud(), o.Version(), o.Cloud())
		}
	})
}

// TestDigest_PatchRejects: an entry outside the listed buckets, or one
// that does not decode, is refused and changes nothing.
func TestDigest_PatchRejects(t *testing.T) {
	c := NewContext()
	c.Add(Dot{"a", 1})
	c.Add(Dot{"b", 2})
	good := c.AppendEntry(nil, "a")
	for name, tc := range map[string]struct {
		buckets []int
		entries map[ReplicaID][]byte
	}{
		"outside the buckets": {[]int{(BucketOf("a") + 1) % DigestBuckets}, map[ReplicaID][]byte{"a": good}},
		"bad entry":           {[]int{BucketOf("a")}, map[ReplicaID][]byte{"a": {FormatVersion, 0, 0}}},
		"bad replica":         {[]int{BucketOf("a b")}, map[ReplicaID][]byte{"a b": good}},
	} {
		t.Run(name, func(t *testing.T) {
			p := c.Clone()
			if err := p.Patch(tc.buckets, []ReplicaID{"a"}, tc.entries); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Patch = %v, want ErrInvalid", err)
			}
			if !p.Equal(c) {
				t.Fatal("a refused patch changed the context")
			}
		})
	}
}

// TestDigest_EmptyContexts: an empty context's digest has all-zero
// buckets, and a replica added and reported changes its bucket only.
func TestDigest_EmptyContexts(t *testing.T) {
	c := NewContext()
	c.Track()
	d := NewDigest(c)
	empty := d.Root()
	if slices.ContainsFunc(d.Buckets(), func(s uint64) bool { return s != 0 }) {
		t.Fatal("an empty context has a non-zero bucket")
	}
	c.Add(Dot{"a", 1})
	d.Update(c.TakeTouched())
	if d.Root() == empty {
		t.Fatal("the root did not change")
	}
	if got := differing(d.Buckets(), make([]uint64, DigestBuckets)); !slices.Equal(got, []int{BucketOf("a")}) {
		t.Fatalf("changed buckets %v, want [%d]", got, BucketOf("a"))
	}
}
