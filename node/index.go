package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node/query"
	ds "github.com/ipfs/go-datastore"
	leveldb "github.com/ipfs/go-ds-leveldb"
	gleveldb "github.com/syndtr/goleveldb/leveldb"
	levelIter "github.com/syndtr/goleveldb/leveldb/iterator"
	levelOpt "github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// Secondary indexes (Config.Indexes).
//
// An index on field f of collection c holds one entry for each visible
// item of c that has f: its key is
//
//	/x/c<collection>/f<field>/<encoded value><id>
//
// where the encoded value is query.AppendIndexValue of the field's
// winning value (order-preserving, prefix-free), and its value is the id.
// The entries of an item are staged with the item's record, in the group
// that commits it (stageIndexes): local writes and remote deltas through
// stageJoin, full-state imports through the importer. Entries and items
// are therefore always consistent in the store, after a crash included.
//
// An index of Config.Indexes the store has not built (declared on a
// store that already has items, or whose build a crash cut short) is
// built by Open before it returns, and marked built by the record
// /m/index/c<collection>/f<field>, written last. Indexes added at runtime
// build in the background instead (index_admin.go). The entries of an
// index no longer declared are deleted in the background after Open,
// then its marker. Repair deletes every marker, so that the next Open
// rebuilds every index from the items the repair kept.

const (
	indexesPrefix = "/x"
	markersPrefix = "/m/index"
	// indexVersion is the version of the entries' encoding, the value of
	// a built index's marker. A store with another version rebuilds.
	indexVersion = 1
)

// indexChunk is how many entries Open writes or deletes per batch (a
// variable for tests).
var indexChunk = 10_000

func indexPrefix(coll, field string) string { return indexesPrefix + "/c" + coll + "/f" + field }

func indexMarker(coll, field string) ds.Key {
	return ds.RawKey(markersPrefix + "/c" + coll + "/f" + field)
}

// indexEntry returns the key of the entry of item id (in state it) in the
// index of coll on field; "" if it has none (it is not visible or has no
// such field).
func indexEntry(coll, field, id string, it *crdt.Item) string {
	if !it.Visible() {
		return ""
	}
	e, ok := it.Field(field)
	if !ok {
		return ""
	}
	b := make([]byte, 0, len(indexesPrefix)+len(coll)+len(field)+len(e.Value)+len(id)+8)
	b = append(append(append(append(b, indexesPrefix+"/c"...), coll...), "/f"...), field...)
	b = query.AppendIndexValue(append(b, '/'), e.Value)
	return string(append(b, id...))
}

// stageIndexes stages the index entries of item k as it moves from cur to
// post: the old entries deleted, the new ones put, in the same group as
// the item's record, for every index writes maintain, complete or
// building; for a building one, it records k as touched if the build has
// not passed it (see index_admin.go), and then stages its entry whether
// or not it changed. Caller holds mu.
func (n *Node) stageIndexes(g *group, k crdt.Key, cur, post *crdt.Item) {
	for _, ix := range n.liveIndexes(k.Collection) {
		// The build will skip an item a write touched before it reached
		// it, whose entry may not be in the store yet: stage it even if
		// the write leaves it as it was.
		ahead := ix.touched != nil && k.ID > ix.pos
		if ahead {
			ix.touched[k.ID] = struct{}{}
		}
		old, nu := indexEntry(k.Collection, ix.field, k.ID, cur), indexEntry(k.Collection, ix.field, k.ID, post)
		if old == nu && !ahead {
			continue
		}
		if old != "" && old != nu {
			n.put(g, ds.RawKey(old), nil)
		}
		if nu != "" {
			n.put(g, ds.RawKey(nu), []byte(k.ID))
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// indexMarkerKeys returns the markers of the indexes built in store.
func indexMarkerKeys(ctx context.Context, store ds.Datastore) ([]ds.Key, error) {
	var keys []ds.Key
	err := scan(ctx, store, markersPrefix, "", func(key string, _ []byte) (bool, error) {
		keys = append(keys, ds.RawKey(key))
		return true, nil
	})
	return keys, err
}

// clearIndex deletes every entry of an index, indexChunk at a time.
func (n *Node) clearIndex(ctx context.Context, coll, field string) error {
	var keys []string
	err := scan(ctx, n.store, indexPrefix(coll, field), "", func(key string, _ []byte) (bool, error) {
		if keys = append(keys, key); len(keys) < indexChunk {
			return true, nil
		}
		err := n.writeBatch(ctx, keys, nil)
		keys = keys[:0]
		return true, err
	})
	if err == nil {
		err = n.writeBatch(ctx, keys, nil)
	}
	if err != nil {
		return fmt.Errorf("index %s.%s: clear: %w", coll, field, err)
	}
	return nil
}

// writeBatch writes keys (with vals, or deletes them if vals is nil) in
// one batch.
func (n *Node) writeBatch(ctx context.Context, keys []string, vals [][]byte) error {
	b, err := n.store.Batch(ctx)
	if err != nil {
		return err
	}
	for i, k := range keys {
		if vals == nil {
			err = b.Delete(ctx, ds.RawKey(k))
		} else {
			err = b.Put(ctx, ds.RawKey(k), vals[i])
		}
		if err != nil {
			return err
		}
	}
	return b.Commit(ctx)
}

// buildIndex writes the entries of every visible item of coll that has
// field, after deleting any an earlier, cut build left, then its marker.
func (n *Node) buildIndex(ctx context.Context, coll, field string) error {
	if err := n.clearIndex(ctx, coll, field); err != nil {
		return err
	}
	n.log.Info("building index", "collection", coll, "field", field, "items", n.meta.Visible[coll])
	var keys []string
	var vals [][]byte
	entries := 0
	flush := func() error {
		err := n.writeBatch(ctx, keys, vals)
		entries += len(keys)
		keys, vals = keys[:0], vals[:0]
		return err
	}
	err := scan(ctx, n.store, collectionPrefix(coll), "", func(key string, val []byte) (bool, error) {
		k, ok := parseItemKey(key)
		if !ok {
			return false, fmt.Errorf("%w: item key %q", ErrCorrupt, key)
		}
		it, err := crdt.DecodeStoredItem(val)
		if err != nil {
			return false, fmt.Errorf("%w: item %s: %v", ErrCorrupt, k, err)
		}
		if e := indexEntry(coll, field, k.ID, it); e != "" {
			keys, vals = append(keys, e), append(vals, []byte(k.ID))
		}
		if len(keys) == indexChunk {
			return true, flush()
		}
		return true, nil
	})
	if err == nil {
		err = flush()
	}
	if err == nil {
		err = n.store.Put(ctx, indexMarker(coll, field), []byte{indexVersion})
	}
	if err != nil {
		return fmt.Errorf("index %s.%s: build: %w", coll, field, err)
	}
	n.log.Info("built index", "collection", coll, "field", field, "entries", entries)
	return nil
}

// The planner.

// estimateCap bounds how many entries the planner counts to compare
// candidate terms: a term with fewer is exact, more is "at least this".
const estimateCap = 2048

// maxRangeIDs bounds the ids a range term may collect for one page; a
// wider range scans instead.
const maxRangeIDs = 200_000

// candidate is an indexed term of a query with the key ranges of its
// entries.
type candidate struct {
	ix     *index
	eq     bool
	ranges []util.Range
	count  int // entries within ranges, up to the cap it was counted to
}

// queryIndexed answers a query through an index when one of its terms is
// indexed (see query.Query.IndexTerms): it reads the entries of the term
// with the fewest, in id order for an equality and collected and sorted
// for a range, and fetches and matches each item, so that the page is the
// one a scan returns. It reports false, with nothing read, when no term is
// indexed, the store is not LevelDB, or the query names one id; a range
// wider than maxRangeIDs also reports false. It reads one snapshot of
// the store, as a scan does.
func (n *Node) queryIndexed(ctx context.Context, collection string, q *query.Query, limit int, cursor string) (Page, bool, error) {
	idPrefix, exact := q.IDPrefix()
	if exact {
		return Page{}, false, nil
	}
	// The candidates are complete before the snapshot is taken, and not
	// dropped after: the snapshot holds all their entries.
	cands := n.candidates(collection, q)
	if len(cands) == 0 {
		return Page{}, false, nil
	}
	snap, release, ok, err := n.snapshot()
	if !ok || err != nil {
		return Page{}, false, err
	}
	defer release()
	cands = slices.DeleteFunc(cands, func(c candidate) bool { return c.ix.dropped.Load() })
	if len(cands) == 0 {
		return Page{}, false, nil
	}
	c, err := pick(snap, cands)
	if err != nil {
		return Page{}, false, fmt.Errorf("query %s: %w", collection, err)
	}

	after := ""
	if cursor != "" {
		after = cursor + "\x00"
	}
	if idPrefix > after {
		after = idPrefix
	}
	page := Page{}
	var rd crdt.MetadataReader
	var ferr error
	// visit fetches and matches one item; false stops the read.
	visit := func(id string) bool {
		if ferr = ctx.Err(); ferr != nil {
			return false
		}
		k := crdt.Key{Collection: collection, ID: id}
		val, err := snap.Get([]byte(itemKey(k).String()), nil)
		page.Read++
		if err != nil {
			if !errors.Is(err, gleveldb.ErrNotFound) {
				ferr = err
				return false
			}
			return true // an entry without its item (there should be none): not a match
		}
		md, visible, err := rd.Read(val)
		if err != nil {
			ferr = fmt.Errorf("%w: item %s: %v", ErrCorrupt, k, err)
			return false
		}
		if !visible || !q.Match(id, md) {
			return true
		}
		it, err := crdt.DecodeStoredItem(val)
		if err != nil {
			ferr = fmt.Errorf("%w: item %s: %v", ErrCorrupt, k, err)
			return false
		}
		page.Items = append(page.Items, view(k, it))
		return len(page.Items) < limit
	}
	if c.eq {
		err = mergeEq(snap, c.ranges, after, idPrefix, visit)
	} else {
		var ids []string
		if ids, err = collectRange(snap, c.ranges, after, idPrefix); err == nil && ids == nil {
			return Page{}, false, nil
		}
		for _, id := range ids {
			if !visit(id) {
				break
			}
		}
	}
	if err == nil {
		err = ferr
	}
	if err == nil && len(page.Items) == limit {
		// As a scan does: a next page exists if any visible item follows.
		var more bool
		var read int
		more, read, err = visibleAfter(snap, collection, page.Items[limit-1].ID, idPrefix)
		page.Read += read
		if more {
			page.NextCursor = page.Items[limit-1].ID
		}
	}
	if err != nil {
		return Page{}, true, fmt.Errorf("query %s: %w", collection, err)
	}
	return page, true, nil
}

// snapshot returns a snapshot of a LevelDB store and its release; ok
// false, with nothing to release, on another store.
func (n *Node) snapshot() (snapshot, func(), bool, error) {
	l, ok := n.store.(*leveldb.Datastore)
	if !ok {
		return nil, nil, false, nil
	}
	snap, err := l.DB.GetSnapshot()
	if err != nil {
		return nil, nil, false, fmt.Errorf("index snapshot: %w", err)
	}
	return snap, snap.Release, true, nil
}

// candidates returns the terms of q on complete indexes of collection,
// with the key ranges of their entries.
func (n *Node) candidates(collection string, q *query.Query) []candidate {
	var cands []candidate
	for _, t := range q.IndexTerms() {
		if ix := n.readyIndex(collection, t.Field); ix != nil {
			cands = append(cands, candidate{ix: ix, eq: t.Eq, ranges: indexRanges(collection, t)})
		}
	}
	return cands
}

// indexRanges returns the key ranges of the entries within t's spans.
func indexRanges(collection string, t query.IndexTerm) []util.Range {
	p := indexPrefix(collection, t.Field) + "/"
	var ranges []util.Range
	for _, s := range t.Spans {
		r := util.Range{Start: append([]byte(p), s.From...), Limit: query.PrefixEnd([]byte(p))}
		if s.To != nil {
			r.Limit = append([]byte(p), s.To...)
		}
		ranges = append(ranges, r)
	}
	return ranges
}

// pick counts the entries of each candidate, up to estimateCap and to the
// fewest counted so far, and returns the one with the fewest; an equality
// beats a range with as many, as it reads in id order.
func pick(snap snapshot, cands []candidate) (candidate, error) {
	best := -1
	for i := range cands {
		c := &cands[i]
		limit := estimateCap
		if best >= 0 {
			limit = cands[best].count
		}
		for _, r := range c.ranges {
			it := snap.NewIterator(&r, nil)
			for c.count <= limit && it.Next() {
				c.count++
			}
			it.Release()
			if err := it.Error(); err != nil {
				return candidate{}, err
			}
		}
		if best < 0 || c.count < cands[best].count || c.count == cands[best].count && c.eq && !cands[best].eq {
			best = i
		}
	}
	return cands[best], nil
}

// snapshot is what the planner reads: a LevelDB snapshot.
type snapshot interface {
	Get(key []byte, ro *levelOpt.ReadOptions) ([]byte, error)
	NewIterator(slice *util.Range, ro *levelOpt.ReadOptions) levelIter.Iterator
}

// mergeEq yields, in id order and once each, the ids of the entries of an
// equality's ranges (each holding one encoded value's entries, by id) from
// id after on, while they start with idPrefix.
func mergeEq(snap snapshot, ranges []util.Range, after, idPrefix string, yield func(string) bool) error {
	its := make([]levelIter.Iterator, 0, len(ranges))
	defer func() {
		for _, it := range its {
			it.Release()
		}
	}()
	heads := make([]string, 0, len(ranges))
	for _, r := range ranges {
		start := append(bytes.Clone(r.Start), after...)
		it := snap.NewIterator(&util.Range{Start: start, Limit: r.Limit}, nil)
		its = append(its, it)
		heads = append(heads, "")
	}
	advance := func(i int) error {
		heads[i] = ""
		if its[i].Next() {
			id, err := entryID(its[i].Key(), its[i].Value())
			if err != nil {
				return err
			}
			if strings.HasPrefix(id, idPrefix) {
				heads[i] = id
			}
		}
		return its[i].Error()
	}
	for i := range its {
		if err := advance(i); err != nil {
			return err
		}
	}
	for {
		min := ""
		for _, h := range heads {
			if h != "" && (min == "" || h < min) {
				min = h
			}
		}
		if min == "" {
			return nil
		}
		if !yield(min) {
			return nil
		}
		for i, h := range heads {
			if h == min {
				if err := advance(i); err != nil {
					return err
				}
			}
		}
	}
}

// entryID checks an index entry (its value is a valid id that ends its
// key) and returns its id.
func entryID(key, val []byte) (string, error) {
	id := string(val)
	if !bytes.HasSuffix(key, val) || crdt.ValidateID(id) != nil {
		return "", fmt.Errorf("%w: index entry %q", ErrCorrupt, key)
	}
	return id, nil
}

// collectRange returns, sorted and once each, the ids of the entries in
// ranges that are at least after and start with idPrefix; nil if there
// are more than maxRangeIDs.
func collectRange(snap snapshot, ranges []util.Range, after, idPrefix string) ([]string, error) {
	ids := []string{}
	for _, r := range ranges {
		it := snap.NewIterator(&r, nil)
		for it.Next() {
			id, err := entryID(it.Key(), it.Value())
			if err != nil {
				it.Release()
				return nil, err
			}
			if id >= after && strings.HasPrefix(id, idPrefix) {
				if len(ids) == maxRangeIDs {
					it.Release()
					return nil, nil
				}
				ids = append(ids, id)
			}
		}
		it.Release()
		if err := it.Error(); err != nil {
			return nil, err
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// visibleAfter reports whether a visible item of coll whose id starts
// with idPrefix follows id, and how many records it read to tell.
func visibleAfter(snap snapshot, coll, id, idPrefix string) (bool, int, error) {
	r := util.BytesPrefix([]byte(collectionPrefix(coll) + "/"))
	r.Start = []byte(itemKey(crdt.Key{Collection: coll, ID: id}).String() + "\x00")
	it := snap.NewIterator(r, nil)
	defer it.Release()
	var rd crdt.MetadataReader
	read := 0
	for it.Next() {
		k, ok := parseItemKey(string(it.Key()))
		if !ok {
			return false, read, fmt.Errorf("%w: item key %q", ErrCorrupt, it.Key())
		}
		if !strings.HasPrefix(k.ID, idPrefix) {
			return false, read, nil
		}
		read++
		_, visible, err := rd.Read(it.Value())
		if err != nil {
			return false, read, fmt.Errorf("%w: item %s: %v", ErrCorrupt, k, err)
		}
		if visible {
			return true, read, nil
		}
	}
	return false, read, it.Error()
}
