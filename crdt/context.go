package crdt

import (
	"maps"
	"slices"
)

// Context is a causal context: a set of dots, kept as a version vector (for
// each replica, every counter up to a maximum) plus a dot cloud (counters
// seen out of order). Adding the dot that fills a gap folds the cloud into
// the vector, so a replica that has seen everything costs one number.
//
// The zero value is not usable; create one with NewContext. A Context is not
// safe for concurrent use.
type Context struct {
	vv    map[ReplicaID]uint64
	cloud map[ReplicaID]map[uint64]struct{}
	// touched holds the replicas whose entries changed since Track or the
	// last TakeTouched; nil when c does not track them.
	touched map[ReplicaID]struct{}
}

// NewContext returns an empty context.
func NewContext() *Context {
	return &Context{vv: map[ReplicaID]uint64{}, cloud: map[ReplicaID]map[uint64]struct{}{}}
}

// Track makes c record which replicas' entries (see AppendEntry) change
// from now on, for TakeTouched: a store that keeps one record per replica
// rewrites only those.
func (c *Context) Track() {
	if c.touched == nil {
		c.touched = map[ReplicaID]struct{}{}
	}
}

// TakeTouched returns the replicas whose entries changed since Track or
// the last TakeTouched, sorted, and starts afresh. It returns nil if c does
// not track changes.
func (c *Context) TakeTouched() []ReplicaID {
	if len(c.touched) == 0 {
		return nil
	}
	rs := make([]ReplicaID, 0, len(c.touched))
	for r := range c.touched {
		rs = append(rs, r)
	}
	clear(c.touched)
	slices.Sort(rs)
	return rs
}

// touch records that r's entry changed, if c tracks changes.
func (c *Context) touch(r ReplicaID) {
	if c.touched != nil {
		c.touched[r] = struct{}{}
	}
}

// Contains reports whether d is in c.
func (c *Context) Contains(d Dot) bool {
	if d.Counter <= c.vv[d.Replica] {
		return true
	}
	_, ok := c.cloud[d.Replica][d.Counter]
	return ok
}

// Add puts d into c and folds the cloud into the vector where d fills a gap.
// It reports whether d was new.
func (c *Context) Add(d Dot) bool {
	if c.Contains(d) || d.Counter == 0 {
		return false
	}
	c.touch(d.Replica)
	if d.Counter == c.vv[d.Replica]+1 {
		c.vv[d.Replica] = d.Counter
		c.fold(d.Replica)
		return true
	}
	cl := c.cloud[d.Replica]
	if cl == nil {
		cl = map[uint64]struct{}{}
		c.cloud[d.Replica] = cl
	}
	cl[d.Counter] = struct{}{}
	return true
}

// fold moves counters from r's cloud into its vector entry while they are
// contiguous with it.
func (c *Context) fold(r ReplicaID) {
	cl := c.cloud[r]
	if cl == nil {
		return
	}
	n := c.vv[r]
	for {
		if _, ok := cl[n+1]; !ok {
			break
		}
		delete(cl, n+1)
		n++
	}
	c.vv[r] = n
	if len(cl) == 0 {
		delete(c.cloud, r)
	}
}

// Merge adds every dot of o to c.
func (c *Context) Merge(o *Context) {
	for r, n := range o.vv {
		if n > c.vv[r] {
			c.touch(r)
			c.vv[r] = n
			if cl := c.cloud[r]; cl != nil {
				for k := range cl {
					if k <= n {
						delete(cl, k)
					}
				}
			}
			c.fold(r)
		}
	}
	for r, cl := range o.cloud {
		for k := range cl {
			c.Add(Dot{r, k})
		}
	}
}

// Clone returns a deep copy of c's dots; the copy does not track changes.
func (c *Context) Clone() *Context {
	n := &Context{vv: maps.Clone(c.vv), cloud: make(map[ReplicaID]map[uint64]struct{}, len(c.cloud))}
	for r, cl := range c.cloud {
		n.cloud[r] = maps.Clone(cl)
	}
	return n
}

// Equal reports whether c and o hold the same dots.
func (c *Context) Equal(o *Context) bool {
	if len(c.vv) != len(o.vv) || len(c.cloud) != len(o.cloud) {
		return false
	}
	for r, n := range c.vv {
		if m, ok := o.vv[r]; !ok || m != n {
			return false
		}
	}
	for r, cl := range c.cloud {
		ocl := o.cloud[r]
		if len(ocl) != len(cl) {
			return false
		}
		for k := range cl {
			if _, ok := ocl[k]; !ok {
				return false
			}
		}
	}
	return true
}

// Max returns the highest counter of r that c holds, 0 if none.
func (c *Context) Max(r ReplicaID) uint64 {
	n := c.vv[r]
	for k := range c.cloud[r] {
		n = max(n, k)
	}
	return n
}

// Base returns r's version-vector entry: the highest counter up to which c
// holds every dot of r.
func (c *Context) Base(r ReplicaID) uint64 { return c.vv[r] }

// Version returns a copy of the version vector: for each replica, the
// highest counter below which c holds every dot.
func (c *Context) Version() map[ReplicaID]uint64 { return maps.Clone(c.vv) }

// Cloud returns the out-of-order dots, sorted. The caller owns the slice.
func (c *Context) Cloud() []Dot {
	var ds []Dot
	for r, cl := range c.cloud {
		for k := range cl {
			ds = append(ds, Dot{r, k})
		}
	}
	return sortDots(ds)
}

// Replicas returns the replicas c knows of, sorted.
func (c *Context) Replicas() []ReplicaID {
	rs := make([]ReplicaID, 0, len(c.vv)+len(c.cloud))
	for r := range c.vv {
		rs = append(rs, r)
	}
	for r := range c.cloud {
		if _, ok := c.vv[r]; !ok {
			rs = append(rs, r)
		}
	}
	slices.Sort(rs)
	return rs
}

// NumReplicas returns the number of replicas c knows of: len(c.Replicas())
// without building the list.
func (c *Context) NumReplicas() int {
	n := len(c.vv)
	for r := range c.cloud {
		if _, ok := c.vv[r]; !ok {
			n++
		}
	}
	return n
}

// Len returns the number of dots in c.
func (c *Context) Len() uint64 {
	var n uint64
	for _, v := range c.vv {
		n += v
	}
	for _, cl := range c.cloud {
		n += uint64(len(cl))
	}
	return n
}

// Missing calls fn for every dot in c that o lacks, replica by replica in
// order and counters ascending, until fn returns false. Its cost grows with
// the number of dots it reports plus the size of the two clouds and one
// pass over c's vector (no sort of every replica), not with the dots of c.
func (c *Context) Missing(o *Context, fn func(Dot) bool) {
	// Only a replica whose vector entry is ahead of o's, or that has a
	// cloud, can hold a dot o lacks: o holds every dot up to its entry.
	var rs []ReplicaID
	for r, n := range c.vv {
		if n > o.vv[r] {
			rs = append(rs, r)
		}
	}
	for r := range c.cloud {
		if c.vv[r] <= o.vv[r] {
			rs = append(rs, r)
		}
	}
	slices.Sort(rs)
	for _, r := range rs {
		for k := o.vv[r] + 1; k <= c.vv[r] && k != 0; k++ {
			if d := (Dot{r, k}); !o.Contains(d) && !fn(d) {
				return
			}
		}
		cl := make([]uint64, 0, len(c.cloud[r]))
		for k := range c.cloud[r] {
			cl = append(cl, k)
		}
		slices.Sort(cl)
		for _, k := range cl {
			if d := (Dot{r, k}); !o.Contains(d) && !fn(d) {
				return
			}
		}
	}
}

// Compare reports how many dots c holds that o lacks and how many o holds
// that c lacks. It counts arithmetically from the vectors and walks only
// the clouds, so a context from a peer claiming huge counters costs no more
// than a small one.
func (c *Context) Compare(o *Context) (ahead, behind uint64) {
	return c.countMissing(o), o.countMissing(c)
}

// countMissing returns |c \ o|.
func (c *Context) countMissing(o *Context) uint64 {
	var n uint64
	for r, top := range c.vv {
		if base := o.vv[r]; top > base {
			// c's vector covers base+1..top; o's cloud may hold some of it.
			n += top - base
			for k := range o.cloud[r] {
				if k > base && k <= top {
					n--
				}
			}
		}
	}
	for r, cl := range c.cloud {
		for k := range cl {
			if !o.Contains(Dot{r, k}) {
				n++
			}
		}
	}
	return n
}
