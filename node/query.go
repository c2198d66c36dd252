package node

import (
	"context"
	"fmt"
	"strings"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node/query"
)

// MaxQueryLimit is the largest page Query returns.
const MaxQueryLimit = 1000

// Page is one page of query results.
type Page struct {
	Items []Item
	// NextCursor, when not empty, is the cursor of the next page.
	NextCursor string
	// Scanned reports that the query read the collection's items in id
	// order (no term of it is indexed); false when it read an index.
	Scanned bool
	// Read counts the item records the query read.
	Read int
}

// Query returns up to limit present items of a collection that match q
// (see package query for the language), sorted by id, starting after the
// id cursor ("" for the first page). It reads only durable state, scanning
// items in id order from the cursor and decoding them one at a time, so its
// memory does not grow with the catalog. When a term of q is an =, <, <=,
// > or >= on a field with a complete index (Config.Indexes or AddIndex),
// it reads that index instead (see queryIndexed), with the same result. A query that does not parse
// returns a *query.SyntaxError.
func (n *Node) Query(ctx context.Context, collection, q string, limit int, cursor string) (Page, error) {
	if err := n.checkKey(crdt.Key{Collection: collection, ID: "x"}); err != nil {
		return Page{}, err
	}
	if limit < 1 || limit > MaxQueryLimit {
		return Page{}, fmt.Errorf("%w: limit must be 1-%d, got %d", crdt.ErrInvalid, MaxQueryLimit, limit)
	}
	if cursor != "" {
		if err := crdt.ValidateID(cursor); err != nil {
			return Page{}, fmt.Errorf("cursor: %w", err)
		}
	}
	parsed, err := query.Parse(q)
	if err != nil {
		return Page{}, err
	}
	if page, ok, err := n.queryIndexed(ctx, collection, parsed, limit, cursor); ok || err != nil {
		return page, err
	}
	return n.scanPage(ctx, collection, parsed, limit, cursor)
}

// scanPage is Query without an index: it reads the collection's items in
// id order from the cursor.
func (n *Node) scanPage(ctx context.Context, collection string, parsed *query.Query, limit int, cursor string) (Page, error) {
	prefix := collectionPrefix(collection)
	from := ""
	if cursor != "" {
		from = itemKey(crdt.Key{Collection: collection, ID: cursor}).String() + "\x00"
	}
	idPrefix, _ := parsed.IDPrefix()
	if idPrefix != "" {
		if p := prefix + "/k" + idPrefix; p > from {
			from = p
		}
	}
	page := Page{Scanned: true}
	// The reader resolves each record's metadata into memory it reuses, so
	// the items that do not match cost no allocation; the ones returned are
	// decoded in full.
	var rd crdt.MetadataReader
	err := scan(ctx, n.store, prefix, from, func(key string, val []byte) (bool, error) {
		k, ok := parseItemKey(key)
		if !ok {
			return false, fmt.Errorf("%w: item key %q", ErrCorrupt, key)
		}
		if !strings.HasPrefix(k.ID, idPrefix) {
			return false, nil
		}
		page.Read++
		md, visible, err := rd.Read(val)
		if err != nil {
			return false, fmt.Errorf("%w: item %s: %v", ErrCorrupt, k, err)
		}
		if !visible {
			return true, nil
		}
		if len(page.Items) == limit {
			page.NextCursor = page.Items[limit-1].ID
			return false, nil
		}
		if parsed.Match(k.ID, md) {
			it, err := crdt.DecodeStoredItem(val)
			if err != nil {
				return false, fmt.Errorf("%w: item %s: %v", ErrCorrupt, k, err)
			}
			page.Items = append(page.Items, view(k, it))
		}
		return true, nil
	})
	if err != nil {
		return Page{}, fmt.Errorf("query %s: %w", collection, err)
	}
	return page, nil
}

// Count returns how many present items of a collection match q; scanned
// reports that it scanned the collection. When q is one = term on an
// indexed field whose value the index keeps whole (see
// query.Query.CountTerm), it counts the index's entries without reading
// any item; otherwise it reads the items as Query does, page after page
// (through an index when a term of q is indexed). It reads durable state
// only; writes committed while it runs may or may not be counted.
func (n *Node) Count(ctx context.Context, collection, q string) (count int, scanned bool, err error) {
	if err := n.checkKey(crdt.Key{Collection: collection, ID: "x"}); err != nil {
		return 0, false, err
	}
	parsed, err := query.Parse(q)
	if err != nil {
		return 0, false, err
	}
	if c, ok, err := n.countIndexed(ctx, collection, parsed); ok || err != nil {
		return c, false, err
	}
	cursor := ""
	for {
		p, err := n.Query(ctx, collection, q, MaxQueryLimit, cursor)
		if err != nil {
			return 0, false, err
		}
		count += len(p.Items)
		scanned = scanned || p.Scanned
		if p.NextCursor == "" {
			return count, scanned, nil
		}
		if err := ctx.Err(); err != nil {
			return 0, false, err
		}
		cursor = p.NextCursor
	}
}
