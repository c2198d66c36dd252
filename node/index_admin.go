package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node/query"
	ds "github.com/ipfs/go-datastore"
)

// Indexes added and dropped at runtime (AddIndex, DropIndex).
//
// An index added at runtime is declared by the record
// /m/idef/c<collection>/f<field>, and its marker (see index.go) says how
// far its build got: complete, building up to an id, or being dropped.
// From the moment it is added, every write stages its entries as for any
// index (stageIndexes), while a builder goroutine reads the collection's
// items in id order, a chunk at a time, and stages the entries of the
// ones no write has touched since the index was added, with the marker
// holding the last id of the chunk, in a group commit like any write's.
// Writers record the ids after the builder's position that they touch
// (index.touched): the builder skips those, as their writer staged their
// entries, from their newest state, after what the builder read. Entries
// are a function of the item's state, so the builder and a writer that
// both stage one stage the same key. A store failure that drops staged
// writes (fail) rewinds every build to its last durable position and
// forgets what writers touched, as their writes were dropped too.
//
// A kill during a build leaves the marker at the last durable chunk, and
// every entry the store holds consistent with its item (each was
// committed with the item's state or with the builder's chunk): the next
// Open resumes the build from there, in the background. The planner
// reads an index only once its final chunk, with the complete marker, is
// durable (index.ready).
//
// DropIndex takes the index out of the set the planner and writers read
// and, in the same group commit, after anything staged for the index
// before, deletes its definition and marks its marker dropping. Once that
// is durable, a background task deletes the entries indexChunk at a time,
// then the marker. A drop cut short is finished by the next Open, in the
// background too.

const (
	defsPrefix = "/m/idef"
	// MaxIndexesPerCollection bounds the indexes of one collection
	// (Config.Indexes and AddIndex together): each costs every write of
	// the collection a key or two more.
	MaxIndexesPerCollection = 16
)

// buildChunk is how many items the builder reads per group commit (a
// variable for tests).
var buildChunk = 1000

// buildHook, if set (by tests only), is called before each chunk of a
// build, with the context Close cancels.
var buildHook func(ctx context.Context)

// Index states, as IndexStatus.State shows them.
const (
	IndexBuilding = "building"
	IndexReady    = "ready"
	IndexFailed   = "failed"
	IndexDropping = "dropping"
)

var (
	// ErrIndexBusy: the index is being dropped (or, after a restart, its
	// old entries cleared before it builds again); retry once that ends.
	ErrIndexBusy = errors.New("index busy")
	// ErrIndexDeclared: the index is declared by Config.Indexes (the
	// -index flag) and cannot be dropped at runtime; remove it from the
	// configuration and restart.
	ErrIndexDeclared = errors.New("index declared by the configuration")
	// ErrIndexLimit: the collection already has MaxIndexesPerCollection
	// indexes.
	ErrIndexLimit = errors.New("too many indexes")
)

// IndexStatus describes one index (Node.Indexes).
type IndexStatus struct {
	Collection string `json:"collection"`
	Field      string `json:"field"`
	// State is building, ready, failed (the build stopped on an error; it
	// resumes at the next Open or AddIndex) or dropping.
	State string `json:"state"`
	// Config and API report where it is declared: Config.Indexes (the
	// -index flag), AddIndex (persisted in the store), or both.
	Config bool `json:"config"`
	API    bool `json:"api"`
	// Indexed counts the present items the build has read; Total is the
	// collection's present items. Both are Total once the index is ready.
	Indexed int64  `json:"indexed"`
	Total   int64  `json:"total"`
	Error   string `json:"error,omitempty"`
}

// index is one secondary index the node knows.
type index struct {
	coll, field string
	flag        bool        // declared by Config.Indexes
	ready       atomic.Bool // complete and durable: the planner may read it
	dropped     atomic.Bool // out of the set: the planner must not read it

	// Guarded by mu.
	api     bool   // declared by AddIndex
	state   string // one of the Index* states
	live    bool   // in indexes.live: writes maintain it
	err     string
	pos     string              // the build staged every item up to this id
	durable string              // ... and made them durable up to this one
	touched map[string]struct{} // ids after pos that writes staged since the build began; nil when complete
	done    int64               // present items the build staged
	doneDur int64               // ... made durable
	rewinds int                 // times rewindBuilds rewound the build
	// dropGroup is the group that makes a drop durable, and prevState
	// and prevReady what the index was before it: a failed commit of
	// that group puts the index back.
	dropGroup *group
	prevState string
	prevReady bool
}

func (ix *index) name() string { return indexName(ix.coll, ix.field) }

// indexName is the key of an index in indexes.all.
func indexName(coll, field string) string { return coll + "\x00" + field }

// indexes is the node's index bookkeeping.
type indexes struct {
	// live holds the indexes writes maintain, by collection; replaced as a
	// whole under mu, read without it by the planner.
	live atomic.Pointer[map[string][]*index]
	all  map[string]*index // every index known, dropping ones too, by name; guarded by mu
	// admin serializes AddIndex and DropIndex.
	admin  sync.Mutex
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	tasks  []func(context.Context) // queued by Open, started by startIndexes
}

// liveIndexes returns the indexes of coll that writes maintain.
func (n *Node) liveIndexes(coll string) []*index {
	if m := n.ix.live.Load(); m != nil {
		return (*m)[coll]
	}
	return nil
}

// publishLive rebuilds indexes.live from indexes.all. Caller holds mu.
func (n *Node) publishLive() {
	m := map[string][]*index{}
	for _, name := range sortedKeys(n.ix.all) {
		if ix := n.ix.all[name]; ix.live {
			m[ix.coll] = append(m[ix.coll], ix)
		}
	}
	n.ix.live.Store(&m)
}

func defKey(coll, field string) ds.Key { return ds.RawKey(defsPrefix + "/c" + coll + "/f" + field) }

// Marker values: complete is {indexVersion}; a build in progress
// {indexVersion, 'b'}, the present items it read (8 bytes, big-endian)
// and the last id it made durable; a drop {indexVersion, 'd'}. Anything else is an index of another encoding,
// whose entries are cleared.
const (
	markBuilding = 'b'
	markDropping = 'd'
)

func buildingMarker(done int64, pos string) []byte {
	b := binary.BigEndian.AppendUint64([]byte{indexVersion, markBuilding}, uint64(done))
	return append(b, pos...)
}

// markerState decodes a marker: complete, or building from pos with done
// items read; neither means its entries must be cleared first.
func markerState(b []byte) (complete, building bool, done int64, pos string) {
	switch {
	case len(b) == 1 && b[0] == indexVersion:
		return true, false, 0, ""
	case len(b) >= 10 && b[0] == indexVersion && b[1] == markBuilding:
		done, pos = int64(binary.BigEndian.Uint64(b[2:10])), string(b[10:])
		return false, done >= 0 && (pos == "" || crdt.ValidateID(pos) == nil), done, pos
	}
	return false, false, 0, ""
}

// openIndexes loads the indexes: those of Config.Indexes the store has
// not built it builds now, before any write; those declared by AddIndex
// it puts back in the set writes maintain (complete, or building from
// where their build stopped), and queues their builds and the drops of
// entries of indexes no longer declared for startIndexes. It runs in Open
// before any write.
func (n *Node) openIndexes(ctx context.Context) error {
	n.ix.all = map[string]*index{}
	n.ix.ctx, n.ix.cancel = context.WithCancel(context.Background())
	for coll, fields := range n.cfg.Indexes {
		for _, f := range fields {
			n.ix.all[indexName(coll, f)] = &index{coll: coll, field: f, flag: true}
		}
	}
	err := scan(ctx, n.store, defsPrefix, "", func(key string, _ []byte) (bool, error) {
		coll, field, ok := parseNamed(key, defsPrefix)
		if !ok {
			return false, fmt.Errorf("%w: index definition %q", ErrCorrupt, key)
		}
		ix := n.ix.all[indexName(coll, field)]
		if ix == nil {
			ix = &index{coll: coll, field: field}
			n.ix.all[ix.name()] = ix
		}
		ix.api = true
		return true, nil
	})
	markers := map[string][]byte{}
	if err == nil {
		err = scan(ctx, n.store, markersPrefix, "", func(key string, val []byte) (bool, error) {
			coll, field, ok := parseNamed(key, markersPrefix)
			if !ok {
				return false, fmt.Errorf("%w: index marker %q", ErrCorrupt, key)
			}
			markers[indexName(coll, field)] = bytes.Clone(val) // the iterator reuses val's buffer
			return true, nil
		})
	}
	if err != nil {
		return fmt.Errorf("indexes: %w", err)
	}
	for _, name := range sortedKeys(markers) {
		if n.ix.all[name] == nil {
			coll, field, _ := strings.Cut(name, "\x00")
			ix := &index{coll: coll, field: field, state: IndexDropping}
			n.ix.all[name] = ix
			n.ix.tasks = append(n.ix.tasks, func(ctx context.Context) { n.runDrop(ctx, ix) })
		}
	}
	for _, name := range sortedKeys(n.ix.all) {
		ix := n.ix.all[name]
		if ix.state == IndexDropping {
			continue
		}
		complete, building, done, pos := markerState(markers[name])
		switch {
		case complete:
			ix.state, ix.live = IndexReady, true
			ix.ready.Store(true)
		case ix.flag:
			if err := n.buildIndex(ctx, ix.coll, ix.field); err != nil {
				return err
			}
			ix.state, ix.live = IndexReady, true
			ix.ready.Store(true)
		case building:
			ix.state, ix.live = IndexBuilding, true
			ix.pos, ix.durable, ix.done, ix.doneDur = pos, pos, done, done
			ix.touched = map[string]struct{}{}
			n.ix.tasks = append(n.ix.tasks, func(ctx context.Context) { n.runBuild(ctx, ix) })
		default:
			// No marker (Repair dropped it), or one of a cut drop or of
			// another encoding: entries that do not match the items may
			// be left. Clear them before the index is maintained again.
			ix.state = IndexBuilding
			n.ix.tasks = append(n.ix.tasks, func(ctx context.Context) {
				if err := n.clearIndex(ctx, ix.coll, ix.field); err != nil {
					n.buildFailed(ix, err)
					return
				}
				if err := n.activate(ctx, ix); err != nil {
					n.buildFailed(ix, err)
					return
				}
				n.runBuild(ctx, ix)
			})
		}
	}
	n.publishLive()
	return nil
}

// startIndexes starts the builds and drops openIndexes queued. Open calls
// it once the node takes writes.
func (n *Node) startIndexes() {
	for _, t := range n.ix.tasks {
		n.goIndex(t)
	}
	n.ix.tasks = nil
}

// goIndex runs an index task in the background until it ends or Close
// stops it.
func (n *Node) goIndex(t func(context.Context)) {
	// Added under mu, before Close marks the node closed and waits.
	n.mu.Lock()
	closed := n.closed
	if !closed {
		n.ix.wg.Add(1)
	}
	n.mu.Unlock()
	if closed {
		return
	}
	go func() {
		defer n.ix.wg.Done()
		t(n.ix.ctx)
	}()
}

// stopIndexes stops the background index tasks and waits for them. Close
// calls it once writes have stopped, before it closes the store.
func (n *Node) stopIndexes() {
	if n.ix.cancel != nil {
		n.ix.cancel()
	}
	n.ix.wg.Wait()
}

// rewindBuilds runs when a commit of the groups failed fails, which drops
// every staged write (see fail): it takes every build back to its last
// durable chunk, forgetting the ids writes touched, and puts back an
// index whose drop was in those groups, as the store still holds it,
// with entries that match the items (every write staged since the drop
// fails too). Its builder, which waits for the drop to be durable, goes
// on. Caller holds mu.
func (n *Node) rewindBuilds(failed ...*group) {
	restored := false
	for _, ix := range n.ix.all {
		if ix.state == IndexDropping && ix.dropGroup != nil && slices.Contains(failed, ix.dropGroup) {
			ix.live, ix.api, ix.state, ix.dropGroup = true, true, ix.prevState, nil
			ix.dropped.Store(false)
			ix.ready.Store(ix.prevReady)
			if !ix.prevReady {
				ix.touched = map[string]struct{}{}
			}
			restored = true
		}
		if ix.touched != nil {
			ix.pos, ix.done = ix.durable, ix.doneDur
			ix.touched = map[string]struct{}{}
			ix.rewinds++
		}
	}
	if restored {
		n.publishLive()
	}
}

// parseNamed parses prefix/c<collection>/f<field>.
func parseNamed(s, prefix string) (coll, field string, ok bool) {
	rest, ok := strings.CutPrefix(s, prefix+"/c")
	if !ok {
		return "", "", false
	}
	coll, field, ok = strings.Cut(rest, "/f")
	return coll, field, ok && crdt.ValidateCollection(coll) == nil && validIndexField(field) == nil
}

// validIndexField checks that f is a field an index may be on: one a
// query can name, other than id.
func validIndexField(f string) error {
	if err := query.ValidateField(f); err != nil {
		return err
	}
	if err := crdt.ValidateFieldName(f); err != nil {
		return err
	}
	if f == "id" {
		return errors.New(`"id" is not a metadata field (ids are ordered without an index)`)
	}
	return nil
}

// Indexes returns the status of every index, sorted by collection and
// field.
func (n *Node) Indexes() []IndexStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]IndexStatus, 0, len(n.ix.all))
	for _, name := range sortedKeys(n.ix.all) {
		out = append(out, n.indexStatus(n.ix.all[name]))
	}
	return out
}

// indexStatus describes ix. Caller holds mu.
func (n *Node) indexStatus(ix *index) IndexStatus {
	s := IndexStatus{Collection: ix.coll, Field: ix.field, State: ix.state, Config: ix.flag, API: ix.api,
		Indexed: ix.done, Total: n.meta.Visible[ix.coll], Error: ix.err}
	if ix.state == IndexReady {
		s.Indexed = s.Total
	}
	return s
}

// AddIndex adds an index on field of collection and builds it in the
// background, while writes continue; the planner uses it once it is
// complete (IndexStatus.State ready). The index is declared in the store,
// so it is kept across restarts, and a build cut short resumes at the next
// Open. Adding an index that exists changes nothing (a failed build is
// started again) and reports created false. It fails with
// ErrUnknownCollection, crdt.ErrInvalid (a field an index cannot be on),
// ErrIndexLimit, or ErrIndexBusy while the index's entries are still
// being dropped.
func (n *Node) AddIndex(ctx context.Context, collection, field string) (st IndexStatus, created bool, err error) {
	if err := n.checkKey(crdt.Key{Collection: collection, ID: "x"}); err != nil {
		return IndexStatus{}, false, err
	}
	if err := validIndexField(field); err != nil {
		return IndexStatus{}, false, fmt.Errorf("%w: index field %q: %v", crdt.ErrInvalid, field, err)
	}
	n.ix.admin.Lock()
	defer n.ix.admin.Unlock()
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return IndexStatus{}, false, ErrClosed
	}
	ix := n.ix.all[indexName(collection, field)]
	if ix != nil {
		if ix.state == IndexDropping || !ix.live && ix.state != IndexFailed {
			n.mu.Unlock()
			return IndexStatus{}, false, fmt.Errorf("%w: the index on %s.%s is being dropped or cleared; try again once it is gone", ErrIndexBusy, collection, field)
		}
		restart, live := ix.state == IndexFailed, ix.live
		if restart {
			ix.state, ix.err = IndexBuilding, ""
		}
		st := n.indexStatus(ix)
		n.mu.Unlock()
		if restart {
			n.goIndex(func(ctx context.Context) {
				if !live {
					if err := n.activate(ctx, ix); err != nil {
						n.buildFailed(ix, err)
						return
					}
				}
				n.runBuild(ctx, ix)
			})
		}
		return st, false, nil
	}
	count := 0
	for _, o := range n.ix.all {
		if o.coll == collection && o.state != IndexDropping {
			count++
		}
	}
	n.mu.Unlock()
	if count >= MaxIndexesPerCollection {
		return IndexStatus{}, false, fmt.Errorf("%w: %s has %d indexes, the most a collection may have", ErrIndexLimit, collection, count)
	}
	ix = &index{coll: collection, field: field, api: true, state: IndexBuilding}
	if err := n.activate(ctx, ix); err != nil {
		return IndexStatus{}, false, fmt.Errorf("add index %s: %w", ix.name(), err)
	}
	n.mu.Lock()
	st = n.indexStatus(ix)
	n.mu.Unlock()
	n.log.Info("index added; building", "collection", collection, "field", field)
	n.goIndex(func(ctx context.Context) { n.runBuild(ctx, ix) })
	return st, true, nil
}

// activate declares ix in the store (its definition and a marker of a
// build from the start), then puts it in the set writes maintain and
// stages the entries of the items of its collection staged but not yet
// durable, which the builder cannot read from the store; writes will
// stage the entries of every item they change from now on.
func (n *Node) activate(ctx context.Context, ix *index) error {
	b, err := n.store.Batch(ctx)
	if err == nil {
		err = b.Put(ctx, defKey(ix.coll, ix.field), []byte{1})
	}
	if err == nil {
		err = b.Put(ctx, indexMarker(ix.coll, ix.field), buildingMarker(0, ""))
	}
	if err == nil {
		err = b.Commit(ctx)
	}
	if err != nil {
		return err
	}
	g, err := n.begin()
	if err != nil {
		return err
	}
	n.ix.all[ix.name()] = ix
	ix.api, ix.live, ix.state = true, true, IndexBuilding
	ix.pos, ix.durable, ix.done, ix.doneDur = "", "", 0, 0
	ix.touched = map[string]struct{}{}
	n.publishLive()
	prefix := collectionPrefix(ix.coll) + "/k"
	type pending struct{ id, entry string }
	var stage []pending
	for k, s := range n.overlay {
		id, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		ix.touched[id] = struct{}{}
		if s.val == nil {
			continue
		}
		it, err := crdt.DecodeStoredItem(s.val)
		if err != nil {
			// No builder will start: say so, rather than leave the index
			// building for ever (AddIndex would take it as under way).
			err = fmt.Errorf("%w: item %s/%s: %v", ErrCorrupt, ix.coll, id, err)
			ix.state, ix.err = IndexFailed, err.Error()
			n.publishLive()
			return n.endWith(ctx, g, false, err)
		}
		if e := indexEntry(ix.coll, ix.field, id, it); e != "" {
			stage = append(stage, pending{id, e})
		}
	}
	for _, p := range stage {
		n.put(g, ds.RawKey(p.entry), []byte(p.id))
	}
	return n.end(ctx, g, len(stage) > 0)
}

// runBuild builds ix from its position, a chunk per group commit, until
// it is complete, fails, or the node closes. While the store refuses
// writes it waits for it to take them again.
func (n *Node) runBuild(ctx context.Context, ix *index) {
	start := time.Now()
	for {
		done, err := n.buildStep(ctx, ix)
		switch {
		case err == nil && done && ix.dropped.Load():
			return
		case err == nil && done:
			n.log.Info("built index", "collection", ix.coll, "field", ix.field, "took", time.Since(start).Round(time.Millisecond))
			return
		case err == nil:
			continue
		case ctx.Err() != nil, errors.Is(err, ErrClosed):
			return
		case errors.Is(err, ErrFailed):
			// Rewound by fail; resume once the store takes writes.
			select {
			case <-ctx.Done():
			case <-time.After(n.cfg.RetryInterval):
			}
			continue
		}
		n.buildFailed(ix, err)
		return
	}
}

// buildFailed records that ix's build stopped on err; nothing if it
// stopped because the node is closing.
func (n *Node) buildFailed(ix *index, err error) {
	if errors.Is(err, ErrClosed) || errors.Is(err, context.Canceled) {
		return
	}
	n.log.Error("index build failed; it resumes at the next start or AddIndex", "collection", ix.coll, "field", ix.field, "err", err)
	n.mu.Lock()
	ix.state, ix.err = IndexFailed, err.Error()
	n.mu.Unlock()
}

// buildStep reads the next chunk of items after ix's position and stages
// the entries of those no write touched, with the marker; done reports
// that it staged the complete marker, durably.
func (n *Node) buildStep(ctx context.Context, ix *index) (done bool, err error) {
	if buildHook != nil {
		buildHook(ctx)
	}
	n.mu.Lock()
	from, rewinds := ix.pos, ix.rewinds
	n.mu.Unlock()
	type read struct {
		id, entry string
		visible   bool
	}
	chunk := make([]read, 0, buildChunk)
	start := ""
	if from != "" {
		start = itemKey(crdt.Key{Collection: ix.coll, ID: from}).String() + "\x00"
	}
	err = scan(ctx, n.store, collectionPrefix(ix.coll), start, func(key string, val []byte) (bool, error) {
		k, ok := parseItemKey(key)
		if !ok {
			return false, fmt.Errorf("%w: item key %q", ErrCorrupt, key)
		}
		it, err := crdt.DecodeStoredItem(val)
		if err != nil {
			return false, fmt.Errorf("%w: item %s: %v", ErrCorrupt, k, err)
		}
		chunk = append(chunk, read{k.ID, indexEntry(ix.coll, ix.field, k.ID, it), it.Visible()})
		return len(chunk) < buildChunk, nil
	})
	if err != nil {
		return false, err
	}
	g, err := n.begin()
	if err != nil {
		return false, err
	}
	if dg := ix.dropGroup; ix.dropped.Load() {
		// Dropped: end once the drop is durable; if its commit fails,
		// the index is back (rewindBuilds) and the build goes on.
		if err := n.end(ctx, g, false); err != nil {
			return false, err
		}
		select {
		case <-dg.done:
		case <-ctx.Done():
			return false, ctx.Err()
		}
		return dg.err == nil, nil
	}
	if ix.rewinds != rewinds {
		// A failed commit rewound the build meanwhile, and forgot the
		// ids writes touched since the chunk was read: read again from
		// where it now stands.
		return false, n.end(ctx, g, false)
	}
	for _, r := range chunk {
		if _, ok := ix.touched[r.id]; ok || r.entry == "" {
			continue
		}
		n.put(g, ds.RawKey(r.entry), []byte(r.id))
	}
	for _, r := range chunk {
		if r.visible {
			ix.done++
		}
	}
	last := len(chunk) < buildChunk
	if len(chunk) > 0 {
		ix.pos = chunk[len(chunk)-1].id
		for id := range ix.touched {
			if id <= ix.pos {
				delete(ix.touched, id)
			}
		}
	}
	pos, doneN := ix.pos, ix.done
	if last {
		n.put(g, indexMarker(ix.coll, ix.field), []byte{indexVersion})
	} else {
		n.put(g, indexMarker(ix.coll, ix.field), buildingMarker(doneN, pos))
	}
	if err := n.end(ctx, g, true); err != nil {
		return false, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if ix.rewinds != rewinds && !last {
		return false, nil // rewound after this chunk was durable: redo from there
	}
	ix.durable, ix.doneDur = pos, doneN
	if last {
		ix.state, ix.touched = IndexReady, nil
		ix.ready.Store(true)
	}
	return last, nil
}

// DropIndex drops the index on field of collection: at once the planner
// stops reading it and writes stop maintaining it; its entries are then
// deleted in the background, in batches of indexChunk, and the index
// shows as dropping in Indexes until they are gone. A drop is durable
// when DropIndex returns: a restart finishes deleting the entries. It
// fails with ErrNotFound if there is no such index, ErrIndexDeclared if
// Config.Indexes declares it, and ErrIndexBusy while it is already being
// dropped or cleared.
func (n *Node) DropIndex(ctx context.Context, collection, field string) error {
	n.ix.admin.Lock()
	defer n.ix.admin.Unlock()
	g, err := n.begin()
	if err != nil {
		return err
	}
	ix := n.ix.all[indexName(collection, field)]
	switch {
	case ix == nil:
		err = fmt.Errorf("%w: no index on %s.%s", ErrNotFound, collection, field)
	case ix.flag:
		err = fmt.Errorf("%w: %s.%s is declared by the -index flag (Config.Indexes): remove it there and restart", ErrIndexDeclared, collection, field)
	case !ix.live && ix.state != IndexFailed:
		err = fmt.Errorf("%w: the index on %s.%s is being dropped or cleared", ErrIndexBusy, collection, field)
	}
	if err != nil {
		return n.endWith(ctx, g, false, err)
	}
	ix.prevState, ix.prevReady, ix.dropGroup = ix.state, ix.ready.Load(), g
	ix.dropped.Store(true)
	ix.ready.Store(false)
	ix.live, ix.api, ix.state, ix.touched, ix.err = false, false, IndexDropping, nil, ""
	n.publishLive()
	// Staged after every entry and build marker of the index staged so
	// far: once this group is durable, the store's marker says dropping
	// and every entry the deletion must find is there.
	n.put(g, defKey(collection, field), nil)
	n.put(g, indexMarker(collection, field), []byte{indexVersion, markDropping})
	err = n.end(ctx, g, true)
	n.goIndex(func(ctx context.Context) {
		select {
		case <-g.done:
		case <-ctx.Done():
			return
		}
		if g.err != nil {
			return // not durable: rewindBuilds put the index back
		}
		n.log.Info("index dropped; deleting its entries", "collection", collection, "field", field)
		n.runDrop(ctx, ix)
	})
	if err != nil {
		return fmt.Errorf("drop index %s.%s: %w", collection, field, err)
	}
	return nil
}

// runDrop deletes the entries of a dropped index, then its marker, and
// forgets it.
func (n *Node) runDrop(ctx context.Context, ix *index) {
	err := n.clearIndex(ctx, ix.coll, ix.field)
	if err == nil {
		err = n.store.Delete(ctx, indexMarker(ix.coll, ix.field))
	}
	if err != nil {
		if ctx.Err() == nil {
			n.log.Error("deleting a dropped index's entries failed; the next start resumes it", "collection", ix.coll, "field", ix.field, "err", err)
			n.mu.Lock()
			ix.err = err.Error()
			n.mu.Unlock()
		}
		return
	}
	n.mu.Lock()
	if n.ix.all[ix.name()] == ix {
		delete(n.ix.all, ix.name())
	}
	n.mu.Unlock()
	n.log.Info("dropped index entries deleted", "collection", ix.coll, "field", ix.field)
}

// countIndexed counts the items that match q from the entries of its one
// term, when the index answers the whole query exactly (see
// query.Query.CountTerm): ok false otherwise, with nothing read.
func (n *Node) countIndexed(ctx context.Context, collection string, q *query.Query) (count int, ok bool, err error) {
	t, exact := q.CountTerm()
	if !exact {
		return 0, false, nil
	}
	ix := n.readyIndex(collection, t.Field)
	if ix == nil {
		return 0, false, nil
	}
	snap, release, ok, err := n.snapshot()
	if !ok || err != nil {
		return 0, false, err
	}
	defer release()
	if ix.dropped.Load() {
		return 0, false, nil // dropped before the snapshot: its entries may be going
	}
	for _, r := range indexRanges(collection, t) {
		it := snap.NewIterator(&r, nil)
		for it.Next() {
			if count%4096 == 0 {
				if err := ctx.Err(); err != nil {
					it.Release()
					return 0, true, err
				}
			}
			count++
		}
		it.Release()
		if err := it.Error(); err != nil {
			return 0, true, fmt.Errorf("count %s: %w", collection, err)
		}
	}
	return count, true, nil
}

// readyIndex returns the complete index on field of coll, nil if none.
func (n *Node) readyIndex(coll, field string) *index {
	for _, ix := range n.liveIndexes(coll) {
		if ix.field == field && ix.ready.Load() {
			return ix
		}
	}
	return nil
}

// validateIndexes checks Config.Indexes against the collections.
func (c *Config) validateIndexes(collections map[string]bool) error {
	for coll, fields := range c.Indexes {
		if !collections[coll] {
			return fmt.Errorf("config: Indexes: collection %q is not one of Collections", coll)
		}
		if len(fields) > MaxIndexesPerCollection {
			return fmt.Errorf("config: Indexes: %s: %d fields, at most %d", coll, len(fields), MaxIndexesPerCollection)
		}
		for i, f := range fields {
			if validIndexField(f) != nil {
				return fmt.Errorf("config: Indexes: %s: field %q: not a field name queries can name", coll, f)
			}
			if slices.Contains(fields[:i], f) {
				return fmt.Errorf("config: Indexes: %s: field %q listed twice", coll, f)
			}
		}
	}
	return nil
}
