package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node/query"
	ds "github.com/ipfs/go-datastore"
	leveldb "github.com/ipfs/go-ds-leveldb"
	gleveldb "github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// The change feed: every change of an item this node holds (a local
// write, a remote delta, a full-state import) that makes it appear,
// changes it while present, or makes it disappear gets the next change
// sequence number of this node. Its record is staged in the same group
// as the item itself, so the store's atomic batch holds both or neither:
// no change is committed without its number, none is numbered twice, and
// the numbering survives a restart. The records are kept, oldest dropped
// first, within Config.ChangeHistory and Config.ChangeHistoryBytes.
//
// Key layout:
//
//	/w/meta            the feed's bookkeeping (feedMeta), rewritten by every commit that numbers or drops changes
//	/w/s/<seq, 16 hex> one change record (encodeChange)
//
// Watchers (Watch) read the changes committed after a sequence number:
// the newest ones from memory (the ring of the last ringEvents changes,
// handed over by the commit goroutine after each commit), older ones from
// the store. Handing a commit's changes over costs the commit goroutine
// one append, whatever the number of watchers: a watcher that does not
// keep up is never waited for; once it falls behind the ring after having
// caught up, its next read fails with ErrWatchTooSlow.

var keyFeed = ds.NewKey("/w/meta")

const changesPrefix = "/w/s"

func changeKey(seq uint64) ds.Key {
	var buf [5 + 16]byte
	return ds.RawKey(string(appendHex16(append(buf[:0], changesPrefix+"/"...), seq)))
}

// Errors of the change feed.
var (
	// ErrHistoryTrimmed: the changes after the asked sequence number are
	// no longer all held (the history was trimmed past it, or the number
	// is not one of this node's). Resynchronise from a snapshot
	// (WatchInitial).
	ErrHistoryTrimmed = errors.New("change history trimmed")
	// ErrWatchTooSlow: the watcher fell behind the changes the node keeps
	// in memory for watchers. Resume from the last sequence number seen.
	ErrWatchTooSlow = errors.New("watcher too slow")
)

// Ring bounds: the changes kept in memory for watchers, by count (no
// more than Config.ChangeHistory) and by the size of their records.
const (
	ringEvents = 4096
	ringBytes  = 16 << 20
)

// ChangeKind says what a change did to an item.
type ChangeKind uint8

// The kinds of change.
const (
	ChangeAdded   ChangeKind = 1 // the item was not present and is now
	ChangeUpdated ChangeKind = 2 // the item was and is present; its metadata or conflicts changed
	ChangeRemoved ChangeKind = 3 // the item was present and is not now
)

// String returns "added", "updated" or "removed".
func (k ChangeKind) String() string {
	switch k {
	case ChangeAdded:
		return "added"
	case ChangeUpdated:
		return "updated"
	case ChangeRemoved:
		return "removed"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Via says how a change reached this node.
type Via uint8

// The ways a change reaches a node.
const (
	ViaLocal Via = 1 // a write of this node (Add, Batch, ...)
	ViaDelta Via = 2 // a remote delta (gossip, anti-entropy, POST /crdt/delta)
	ViaState Via = 3 // a full-state import
	// ViaEquivocation is a proof of equivocation (AddFork) that dropped
	// the entries of the replica it convicts; the change's dot is the
	// first of the replica's dots dropped.
	ViaEquivocation Via = 4
)

// String returns "local", "delta", "state" or "equivocation".
func (v Via) String() string {
	switch v {
	case ViaLocal:
		return "local"
	case ViaDelta:
		return "delta"
	case ViaState:
		return "state"
	case ViaEquivocation:
		return "equivocation"
	}
	return fmt.Sprintf("via(%d)", uint8(v))
}

// ItemEvent is one numbered change of an item. Events are shared between
// watchers: do not modify them.
type ItemEvent struct {
	Seq  uint64
	Key  crdt.Key
	Kind ChangeKind
	Via  Via
	// Dot is the dot of the delta that made the change; zero for a
	// full-state import.
	Dot crdt.Dot

	before, after []byte // item records; nil when the item was / is not present
	size          int    // size of the stored record

	once     sync.Once
	item     Item
	beforeMD map[string]json.RawMessage
	afterMD  map[string]json.RawMessage
	err      error
}

// decode decodes the item records once, for every watcher.
func (e *ItemEvent) decode() {
	e.once.Do(func() {
		if e.before != nil {
			it, err := crdt.DecodeStoredItem(e.before)
			if err != nil {
				e.err = fmt.Errorf("%w: change %d: item before: %v", ErrCorrupt, e.Seq, err)
				return
			}
			e.beforeMD = it.Metadata()
		}
		if e.after != nil {
			it, err := crdt.DecodeStoredItem(e.after)
			if err != nil {
				e.err = fmt.Errorf("%w: change %d: item after: %v", ErrCorrupt, e.Seq, err)
				return
			}
			e.item = view(e.Key, it)
			e.afterMD = e.item.Metadata
		}
	})
}

// Item returns the item after the change; false for a removal.
func (e *ItemEvent) Item() (Item, bool, error) {
	e.decode()
	return e.item, e.after != nil && e.err == nil, e.err
}

// Match reports whether the item matched q before the change and whether
// it matches after it (a nil q matches every present item).
func (e *ItemEvent) Match(q *query.Query) (before, after bool, err error) {
	e.decode()
	if e.err != nil {
		return false, false, e.err
	}
	before = e.before != nil && q.Match(e.Key.ID, e.beforeMD)
	after = e.after != nil && q.Match(e.Key.ID, e.afterMD)
	return before, after, nil
}

// Change record: a version byte, kind, via, then uvarint-length-prefixed
// collection, id, origin replica and before-record, the origin counter as
// a uvarint, and the after-record as the rest.
const changeVersion = 1

func encodeChange(e *ItemEvent) []byte {
	b := make([]byte, 0, 3+4*binary.MaxVarintLen64+len(e.Key.Collection)+len(e.Key.ID)+len(e.Dot.Replica)+len(e.before)+len(e.after))
	b = append(b, changeVersion, byte(e.Kind), byte(e.Via))
	for _, s := range []string{e.Key.Collection, e.Key.ID, string(e.Dot.Replica), string(e.before)} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, e.Dot.Counter)
	return append(b, e.after...)
}

// decodeChange decodes the record of change seq. It checks the framing,
// the key, the origin and that the kind agrees with which item records
// are there; the item records themselves are decoded when first read
// (ItemEvent.Item, Match).
func decodeChange(seq uint64, b []byte) (*ItemEvent, error) {
	bad := func(what string) (*ItemEvent, error) {
		return nil, fmt.Errorf("%w: change record %d: %s", ErrCorrupt, seq, what)
	}
	if len(b) < 3 {
		return bad("too short")
	}
	if b[0] != changeVersion {
		return bad(fmt.Sprintf("version %d", b[0]))
	}
	e := &ItemEvent{Seq: seq, Kind: ChangeKind(b[1]), Via: Via(b[2]), size: len(b)}
	rest := b[3:]
	var parts [4][]byte
	for i := range parts {
		n, k := uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			return bad("truncated")
		}
		parts[i], rest = rest[k:k+int(n)], rest[k+int(n):]
	}
	counter, k := uvarint(rest)
	if k <= 0 {
		return bad("truncated")
	}
	e.Key = crdt.Key{Collection: string(parts[0]), ID: string(parts[1])}
	if err := e.Key.Validate(); err != nil {
		return bad(err.Error())
	}
	e.Dot = crdt.Dot{Replica: crdt.ReplicaID(parts[2]), Counter: counter}
	if e.Via < ViaLocal || e.Via > ViaEquivocation {
		return bad(fmt.Sprintf("via %d", e.Via))
	}
	if (e.Via == ViaState) != (e.Dot == crdt.Dot{}) {
		return bad("origin does not match how the change came")
	}
	if e.Via != ViaState {
		if err := e.Dot.Replica.Validate(); err != nil || counter == 0 {
			return bad("origin dot")
		}
	}
	if len(parts[3]) > 0 {
		e.before = parts[3]
	}
	if len(rest[k:]) > 0 {
		e.after = rest[k:]
	}
	want := map[ChangeKind][2]bool{ChangeAdded: {false, true}, ChangeUpdated: {true, true}, ChangeRemoved: {true, false}}
	has, ok := want[e.Kind]
	if !ok {
		return bad(fmt.Sprintf("kind %d", e.Kind))
	}
	if has != [2]bool{e.before != nil, e.after != nil} {
		return bad("item records do not match the kind")
	}
	return e, nil
}

// uvarint is binary.Uvarint that refuses a number not in its shortest
// form, so that a record has one encoding.
func uvarint(b []byte) (uint64, int) {
	n, k := binary.Uvarint(b)
	if k > 1 && b[k-1] == 0 {
		return 0, -1
	}
	return n, k
}

// feedMeta is the feed's bookkeeping record: the last sequence number
// used, the oldest one still stored (Last+1 when none is), and the
// stored records' size.
type feedMeta struct {
	Last, First uint64
	Bytes       int64
}

func encodeFeed(m feedMeta) []byte {
	b := binary.BigEndian.AppendUint64(nil, m.Last)
	b = binary.BigEndian.AppendUint64(b, m.First)
	return binary.BigEndian.AppendUint64(b, uint64(m.Bytes))
}

func decodeFeed(b []byte) (feedMeta, error) {
	if len(b) != 24 {
		return feedMeta{}, fmt.Errorf("%w: change feed record of %d bytes", ErrCorrupt, len(b))
	}
	m := feedMeta{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:]), int64(binary.BigEndian.Uint64(b[16:]))}
	if m.First == 0 || m.First > m.Last+1 || m.Bytes < 0 {
		return feedMeta{}, fmt.Errorf("%w: change feed record %+v", ErrCorrupt, m)
	}
	return m, nil
}

// readFeed reads the feed's bookkeeping; a store without it (new, or
// written before the feed existed) has numbered nothing yet.
func readFeed(ctx context.Context, store ds.Read) (feedMeta, error) {
	b, err := get(ctx, store, keyFeed)
	if err != nil || b == nil {
		return feedMeta{First: 1}, err
	}
	return decodeFeed(b)
}

// loadFeed reads the feed's bookkeeping at Open, or after a failed commit
// (reload). Caller holds mu, or has the node to itself.
func (n *Node) loadFeed(ctx context.Context) error {
	m, err := readFeed(ctx, n.store)
	if err != nil {
		return err
	}
	n.feed = m
	n.feedSizes = n.feedSizes[:0]
	err = scan(ctx, n.store, changesPrefix, changeKey(m.First).String(), func(_ string, val []byte) (bool, error) {
		n.feedSizes = append(n.feedSizes, int32(len(val)))
		return true, nil
	})
	if err != nil {
		return err
	}
	if n.hub == nil {
		n.hub = &hub{last: m.Last, first: m.First, wake: make(chan struct{})}
	}
	return nil
}

// repairFeed returns the feed's bookkeeping after a Repair, and the
// change records to delete: the damage may have taken items whose
// removal no change records, so the history is dropped (a watcher
// resuming from before the repair gets ErrHistoryTrimmed and starts from
// a snapshot), and numbering goes on after the highest number found, so
// that no number is used twice.
func repairFeed(ctx context.Context, store ds.Datastore) (feedMeta, []ds.Key, error) {
	m, err := readFeed(ctx, store)
	if err != nil && !errors.Is(err, ErrCorrupt) {
		return feedMeta{}, nil, err
	}
	var keys []ds.Key
	err = scan(ctx, store, changesPrefix, "", func(key string, _ []byte) (bool, error) {
		if n, err := strconv.ParseUint(strings.TrimPrefix(key, changesPrefix+"/"), 16, 64); err == nil {
			m.Last = max(m.Last, n)
		}
		keys = append(keys, ds.RawKey(key))
		return true, nil
	})
	return feedMeta{Last: m.Last, First: m.Last + 1}, keys, err
}

// feedGroup is what a group adds to the feed.
type feedGroup struct {
	events []*ItemEvent
	first  uint64 // the oldest stored change once the group is durable
	last   uint64 // the last change numbered once the group is durable
	// gap reports that the group numbered changes it did not record (see
	// skipChange): the history before them is gone.
	gap bool
}

// stageChange numbers the change of item k from cur to post made by the
// delta with dot (zero for a full-state import) and stages its record.
// curRec and rec are cur's and post's item records (nil: encode them). A
// change between two absent states (a removal of something never present
// here) is none. Caller holds mu.
func (n *Node) stageChange(g *group, k crdt.Key, cur, post *crdt.Item, curRec, rec []byte, via Via, dot crdt.Dot) {
	was, is := cur.Visible(), post.Visible()
	e := &ItemEvent{Key: k, Via: via, Dot: dot}
	switch {
	case !was && is:
		e.Kind = ChangeAdded
	case was && is:
		e.Kind = ChangeUpdated
	case was && !is:
		e.Kind = ChangeRemoved
	default:
		return
	}
	var err error
	if was {
		// The item as it was: a watcher's filter is evaluated on both
		// sides, so that an item leaving it is reported as removed.
		if e.before = curRec; curRec == nil {
			e.before, err = crdt.EncodeItem(cur)
		}
	}
	if is {
		var aerr error
		if e.after = rec; rec == nil {
			e.after, aerr = crdt.EncodeItem(post)
		}
		err = errors.Join(err, aerr)
	}
	if err != nil {
		// Both were stored, so both encode; should one not, the change is
		// numbered all the same, as the records it has allow: a bare
		// removal or addition (or nothing, if neither encodes).
		n.log.Error("change feed: item does not encode", "key", k, "err", err)
		switch {
		case e.before != nil && e.after == nil:
			e.Kind = ChangeRemoved
		case e.before == nil && e.after != nil:
			e.Kind = ChangeAdded
		case e.before == nil && e.after == nil:
			return
		}
	}
	n.feed.Last++
	e.Seq = n.feed.Last
	b := encodeChange(e)
	e.size = len(b)
	n.put(g, changeKey(e.Seq), b)
	n.feed.Bytes += int64(len(b))
	n.feedSizes = append(n.feedSizes, int32(len(b)))
	g.feed.events = append(g.feed.events, e)
}

// stageFeed drops the oldest changes while the history is over its
// bounds, and stages the feed's bookkeeping if anything moved. Caller
// holds mu.
func (n *Node) stageFeed(g *group) {
	moved := len(g.feed.events) > 0 || g.feed.gap
	if g.feed.gap {
		// Changes numbered without a record: every record before them
		// goes, and the history starts after them.
		for ; len(n.feedSizes) > 0; n.feed.First++ {
			n.put(g, changeKey(n.feed.First), nil)
			n.feedSizes = n.feedSizes[1:]
		}
		n.feed.First, n.feed.Bytes = n.feed.Last+1, 0
	}
	for n.feed.First <= n.feed.Last &&
		(n.feed.Last-n.feed.First+1 > uint64(n.cfg.ChangeHistory) || n.feed.Bytes > n.cfg.ChangeHistoryBytes) {
		k := changeKey(n.feed.First)
		size := int64(0)
		if len(n.feedSizes) > 0 {
			size, n.feedSizes = int64(n.feedSizes[0]), n.feedSizes[1:]
		}
		n.put(g, k, nil)
		n.feed.Bytes = max(0, n.feed.Bytes-size)
		n.feed.First++
		moved = true
	}
	if moved {
		n.put(g, keyFeed, encodeFeed(n.feed))
	}
	g.feed.first, g.feed.last = n.feed.First, n.feed.Last
}

// skipChange numbers the change of an item from cur to post without
// recording it, as a full-state import does once it has changed more
// items than the history holds: the records would only be written to be
// trimmed. The history before the change is dropped with it, so a
// watcher behind it learns that it must start again from the items
// (ErrHistoryTrimmed), as it would after any trim. Caller holds mu.
func (n *Node) skipChange(g *group, cur, post *crdt.Item) {
	if cur.Visible() || post.Visible() {
		n.feed.Last++
		g.feed.gap = true
	}
}

// hub hands the durable changes to watchers. Its lock is held only to
// append a commit's changes and to copy a watcher's next ones.
type hub struct {
	mu     sync.RWMutex
	ring   []*ItemEvent // the newest durable changes, consecutive
	bytes  int          // their records' size
	last   uint64       // the last durable change
	first  uint64       // the oldest stored change
	wake   chan struct{}
	closed bool
	// gap is the last change a group numbered without recording it (see
	// skipChange): a watcher reading the ring that is not past it was cut
	// off by a trim, not by its own pace.
	gap uint64
}

// publish hands over the changes of a durable group. Called by the
// commit goroutine, with mu held.
func (n *Node) publishChanges(fg feedGroup) {
	h := n.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	h.first = fg.first
	if fg.gap {
		// The changes before fg.last are gone: the ring, which must
		// hold consecutive ones, starts again after them.
		clear(h.ring)
		h.ring, h.bytes, h.last, h.gap = h.ring[:0], 0, fg.last, fg.last
		n.wakeWatchers()
		return
	}
	if len(fg.events) == 0 {
		return
	}
	for _, e := range fg.events {
		h.ring = append(h.ring, e)
		h.bytes += e.size
	}
	h.last = fg.events[len(fg.events)-1].Seq
	limit := min(ringEvents, n.cfg.ChangeHistory)
	drop := 0
	for len(h.ring)-drop > limit || (h.bytes > ringBytes && len(h.ring)-drop > 1) {
		h.bytes -= h.ring[drop].size
		h.ring[drop] = nil
		drop++
	}
	h.ring = h.ring[drop:]
	n.wakeWatchers()
}

// wakeWatchers wakes every watcher waiting for a change. Caller holds
// the hub's lock.
func (n *Node) wakeWatchers() {
	h := n.hub
	if h.closed {
		// Close ran while this group was being written: its wake is
		// closed already, and watchers get ErrClosed.
		return
	}
	close(h.wake)
	h.wake = make(chan struct{})
}

// closeHub ends every watcher's wait with ErrClosed.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		close(h.wake)
	}
}

// ChangeBounds returns the oldest change still held in the history and
// the last durable one; first is last+1 when the history is empty.
func (n *Node) ChangeBounds() (first, last uint64) {
	n.hub.mu.RLock()
	defer n.hub.mu.RUnlock()
	return n.hub.first, n.hub.last
}

// Watcher reads the node's changes in sequence order. It holds no
// resource of the node but its position: it need not be closed. It is not
// safe for concurrent use.
type Watcher struct {
	n    *Node
	next uint64 // the next change to read
	live bool   // it has read from the ring: falling behind it is being too slow
}

// Watch returns a watcher of the changes after since. It fails with
// ErrHistoryTrimmed if some of them are no longer held, or if since is
// not a sequence number of this node (greater than its last).
func (n *Node) Watch(since uint64) (*Watcher, error) {
	first, last := n.ChangeBounds() // durable: a staged number may yet be handed out again
	switch {
	case since > last:
		return nil, fmt.Errorf("%w: change %d is ahead of this node's last change %d: sequence numbers are per node", ErrHistoryTrimmed, since, last)
	case since+1 < first:
		return nil, fmt.Errorf("%w: changes after %d are no longer held (oldest: %d)", ErrHistoryTrimmed, since, first)
	}
	return &Watcher{n: n, next: since + 1}, nil
}

// Position returns the sequence number of the last change read (or the
// one the watcher started after).
func (w *Watcher) Position() uint64 { return w.next - 1 }

// closed is a closed channel, for Ready.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Ready returns a channel that is closed once Next has something to
// return without waiting: a change after the watcher's position, or an
// error (the node closed). It lets one goroutine wait for changes, a
// timer and other events in one select.
func (w *Watcher) Ready() <-chan struct{} {
	h := w.n.hub
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.closed || w.next <= h.last {
		return closed
	}
	return h.wake
}

// Next returns the next changes, at most limit of them, waiting until
// there is one or ctx is done. It fails with ErrHistoryTrimmed if the
// history was trimmed past the watcher, ErrWatchTooSlow if it fell out of
// the ring after having caught up, ErrClosed once the node closes.
func (w *Watcher) Next(ctx context.Context, limit int) ([]*ItemEvent, error) {
	h := w.n.hub
	limit = max(limit, 1)
	for {
		h.mu.RLock()
		if h.closed {
			h.mu.RUnlock()
			return nil, ErrClosed
		}
		if w.next > h.last {
			wake := h.wake
			h.mu.RUnlock()
			select {
			case <-wake:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if len(h.ring) > 0 && w.next >= h.ring[0].Seq {
			i := int(w.next - h.ring[0].Seq)
			out := append([]*ItemEvent(nil), h.ring[i:min(len(h.ring), i+limit)]...)
			h.mu.RUnlock()
			w.next += uint64(len(out))
			w.live = true
			return out, nil
		}
		first, last, gap := h.first, h.last, h.gap
		h.mu.RUnlock()
		switch {
		case w.next < first && (!w.live || w.next <= gap):
			return nil, fmt.Errorf("%w: changes after %d are no longer held (oldest: %d)", ErrHistoryTrimmed, w.next-1, first)
		case w.live:
			return nil, fmt.Errorf("%w: more than %d changes behind", ErrWatchTooSlow, min(ringEvents, w.n.cfg.ChangeHistory))
		}
		out, err := w.n.readChanges(ctx, w.next, min(last, w.next+uint64(limit)-1))
		if err != nil {
			return nil, err
		}
		w.next += uint64(len(out))
		return out, nil
	}
}

// readChanges reads the stored changes from .. to, which are durable.
// A change already trimmed fails with ErrHistoryTrimmed.
func (n *Node) readChanges(ctx context.Context, from, to uint64) ([]*ItemEvent, error) {
	var out []*ItemEvent
	want := from
	err := scan(ctx, n.store, changesPrefix, changeKey(from).String(), func(key string, val []byte) (bool, error) {
		if key != changeKey(want).String() {
			return false, nil
		}
		e, err := decodeChange(want, bytes.Clone(val))
		if err != nil {
			return false, err
		}
		out = append(out, e)
		want++
		return want <= to, nil
	})
	if err != nil {
		return nil, fmt.Errorf("read changes: %w", err)
	}
	if len(out) == 0 {
		first, _ := n.ChangeBounds()
		return nil, fmt.Errorf("%w: changes after %d are no longer held (oldest: %d)", ErrHistoryTrimmed, from-1, first)
	}
	return out, nil
}

// WatchInitial calls fn with every present item of collection that
// matches q (nil: all), in id order, as of one consistent snapshot of the
// store, and returns a watcher of the changes after that snapshot: no
// change is missed or seen twice between the two. It needs a LevelDB
// store (OpenLevelDB), whose snapshots it reads.
func (n *Node) WatchInitial(ctx context.Context, collection string, q *query.Query, fn func(Item) error) (*Watcher, error) {
	if err := n.checkKey(crdt.Key{Collection: collection, ID: "x"}); err != nil {
		return nil, err
	}
	l, ok := n.store.(*leveldb.Datastore)
	if !ok {
		return nil, errors.New("watch: an initial snapshot needs a LevelDB store")
	}
	snap, err := l.DB.GetSnapshot()
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	defer snap.Release()
	var m feedMeta
	switch b, err := snap.Get([]byte(keyFeed.String()), nil); {
	case errors.Is(err, gleveldb.ErrNotFound):
		m = feedMeta{First: 1}
	case err != nil:
		return nil, fmt.Errorf("watch: %w", err)
	default:
		if m, err = decodeFeed(b); err != nil {
			return nil, err
		}
	}
	w := &Watcher{n: n, next: m.Last + 1}
	it := snap.NewIterator(util.BytesPrefix([]byte(collectionPrefix(collection)+"/")), nil)
	defer it.Release()
	var rd crdt.MetadataReader
	for it.Next() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		k, ok := parseItemKey(string(it.Key()))
		if !ok {
			return nil, fmt.Errorf("%w: item key %q", ErrCorrupt, it.Key())
		}
		md, visible, err := rd.Read(it.Value())
		if err != nil {
			return nil, fmt.Errorf("%w: item %s: %v", ErrCorrupt, k, err)
		}
		if !visible || !q.Match(k.ID, md) {
			continue
		}
		item, err := crdt.DecodeStoredItem(it.Value())
		if err != nil {
			return nil, fmt.Errorf("%w: item %s: %v", ErrCorrupt, k, err)
		}
		if err := fn(view(k, item)); err != nil {
			return nil, err
		}
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	return w, nil
}

// viaOf says how a joined delta came: a local write or a remote delta.
func viaOf(local bool) Via {
	if local {
		return ViaLocal
	}
	return ViaDelta
}
