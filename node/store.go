package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/fxamacker/cbor/v2"
	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	leveldb "github.com/ipfs/go-ds-leveldb"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// Key layout. Every segment that holds a name is prefixed with a letter so
// that names such as "." or ".." survive go-datastore's path cleaning, and
// so that a collection scan and a log range are prefix scans:
//
//	/m/meta                      meta record (replica, counters, log bounds)
//	/c/s/r<replica>              the seen causal context's entry of a replica
//	/c/a/r<replica>              the applied causal context's entry of a replica
//	/m/seen, /m/applied          the two causal contexts whole: the layout
//	                             before per-replica entries, migrated at Open
//	/m/fork                      proof that another process uses this replica (see ErrForked)
//	/i/c<collection>/k<id>       item record
//	/x/c<collection>/f<field>/<value><id>  index entry (see index.go)
//	/m/index/c<collection>/f<field>        marker of a built index
//	/l/s/<seq, 16 hex digits>    delta log, by local arrival sequence
//	/l/d/r<replica>/<counter, 16 hex digits>  log index: dot -> seq
//	/h/r<replica>                chain head of a keyed replica (see head)
//	/e/r<replica>                proof that the replica equivocated (see equivocation.go)
var (
	keyMeta = ds.NewKey("/m/meta")
	keyFork = ds.NewKey("/m/fork")
	// The whole contexts, as releases before per-replica entries kept
	// them; see migrateContexts.
	keyLegacySeen    = ds.NewKey("/m/seen")
	keyLegacyApplied = ds.NewKey("/m/applied")
)

// The causal contexts are kept one record per replica (crdt's
// Context.AppendEntry form), so that a commit rewrites only the entries of
// the replicas it changed: its cost does not grow with the number of
// replicas ever seen.
const (
	contextsPrefix = "/c"
	seenPrefix     = contextsPrefix + "/s"
	appliedPrefix  = contextsPrefix + "/a"
)

func entryKey(prefix string, r crdt.ReplicaID) string { return prefix + "/r" + string(r) }

// stageEntries adds to writes the entries of c's replicas that changed
// since the last call (a nil value deletes an entry c no longer holds),
// and returns those replicas.
func stageEntries(writes map[string][]byte, prefix string, c *crdt.Context) []crdt.ReplicaID {
	rs := c.TakeTouched()
	for _, r := range rs {
		writes[entryKey(prefix, r)] = c.AppendEntry(nil, r)
	}
	return rs
}

// readContext reads the context whose entries are under prefix. The
// context it returns tracks its changes (crdt.Context.Track).
func readContext(ctx context.Context, store ds.Datastore, prefix string) (*crdt.Context, error) {
	c := crdt.NewContext()
	err := scan(ctx, store, prefix, "", func(key string, val []byte) (bool, error) {
		r, ok := strings.CutPrefix(key, prefix+"/r")
		if !ok {
			return false, fmt.Errorf("%w: context entry key %q", ErrCorrupt, key)
		}
		if err := c.SetEntry(crdt.ReplicaID(r), val); err != nil {
			return false, fmt.Errorf("%w: %s: %v", ErrCorrupt, key, err)
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	c.Track()
	return c, nil
}

// contextKeys returns the keys of every context record in store: the
// per-replica entries and the legacy whole contexts.
func contextKeys(ctx context.Context, store ds.Datastore) ([]ds.Key, error) {
	var keys []ds.Key
	err := scan(ctx, store, contextsPrefix, "", func(key string, _ []byte) (bool, error) {
		keys = append(keys, ds.RawKey(key))
		return true, nil
	})
	for _, k := range []ds.Key{keyLegacySeen, keyLegacyApplied} {
		if err == nil {
			var ok bool
			if ok, err = store.Has(ctx, k); ok {
				keys = append(keys, k)
			}
		}
	}
	return keys, err
}

// putContexts adds to batch what replaces every context record in store
// (old, from contextKeys) with the entries of seen and applied.
func putContexts(ctx context.Context, batch ds.Batch, old []ds.Key, seen, applied *crdt.Context) error {
	for _, k := range old {
		if err := batch.Delete(ctx, k); err != nil {
			return err
		}
	}
	for _, c := range []struct {
		prefix string
		ctx    *crdt.Context
	}{{seenPrefix, seen}, {appliedPrefix, applied}} {
		for _, r := range c.ctx.Replicas() {
			if err := batch.Put(ctx, ds.RawKey(entryKey(c.prefix, r)), c.ctx.AppendEntry(nil, r)); err != nil {
				return err
			}
		}
	}
	return nil
}

// migrateContexts moves a store written before per-replica entries to
// them: the two whole contexts become one entry per replica, in one
// atomic batch that also deletes them, so that a crash leaves either
// layout, never a mix. A store already migrated costs two lookups.
func migrateContexts(ctx context.Context, store ds.Batching) (migrated int, err error) {
	legacy := [2]*crdt.Context{}
	for i, key := range []ds.Key{keyLegacySeen, keyLegacyApplied} {
		b, err := get(ctx, store, key)
		if err != nil {
			return 0, err
		}
		if b == nil {
			continue
		}
		if legacy[i], err = crdt.DecodeContext(b); err != nil {
			return 0, fmt.Errorf("%w: %s: %v", ErrCorrupt, key, err)
		}
	}
	switch {
	case legacy[0] == nil && legacy[1] == nil:
		return 0, nil
	case legacy[0] == nil || legacy[1] == nil:
		return 0, fmt.Errorf("%w: only one of %s and %s", ErrCorrupt, keyLegacySeen, keyLegacyApplied)
	}
	old, err := contextKeys(ctx, store)
	if err != nil {
		return 0, err
	}
	batch, err := store.Batch(ctx)
	if err != nil {
		return 0, err
	}
	if err := putContexts(ctx, batch, old, legacy[0], legacy[1]); err != nil {
		return 0, err
	}
	if err := batch.Commit(ctx); err != nil {
		return 0, err
	}
	return max(legacy[0].NumReplicas(), legacy[1].NumReplicas()), nil
}

const itemsPrefix = "/i"

func collectionPrefix(coll string) string { return itemsPrefix + "/c" + coll }

func itemKey(k crdt.Key) ds.Key { return ds.RawKey(collectionPrefix(k.Collection) + "/k" + k.ID) }

// parseItemKey is the inverse of itemKey.
func parseItemKey(s string) (crdt.Key, bool) {
	rest, ok := strings.CutPrefix(s, itemsPrefix+"/c")
	if !ok {
		return crdt.Key{}, false
	}
	coll, id, ok := strings.Cut(rest, "/k")
	return crdt.Key{Collection: coll, ID: id}, ok && coll != "" && id != ""
}

func logSeqKey(seq uint64) ds.Key {
	var buf [5 + 16]byte
	return ds.RawKey(string(appendHex16(append(buf[:0], "/l/s/"...), seq)))
}

func logDotKey(d crdt.Dot) ds.Key {
	buf := make([]byte, 0, 6+len(d.Replica)+16)
	buf = append(append(append(buf, "/l/d/r"...), d.Replica...), '/')
	return ds.RawKey(string(appendHex16(buf, d.Counter)))
}

// appendHex16 appends n as 16 lower-case hex digits, as %016x does.
func appendHex16(b []byte, n uint64) []byte {
	const digits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, digits[n>>uint(shift)&0xf])
	}
	return b
}

// meta is the node's small bookkeeping record, rewritten with every commit.
type meta struct {
	_       struct{} `cbor:",toarray"`
	Version uint
	Replica string
	Counter uint64           // last dot counter this replica used
	HLC     uint64           // greatest timestamp issued or observed
	Seq     uint64           // last delta-log sequence number used
	First   uint64           // oldest sequence number still in the log (Seq+1 if empty)
	Cleared uint64           // the GetDeltas consumer's cursor
	Bytes   int64            // encoded size of the log
	Visible map[string]int64 // present items per collection
}

func encodeMeta(m *meta) []byte {
	b, err := cbor.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("encode meta: %v", err)) // a fixed struct of plain fields always encodes
	}
	return b
}

func decodeMeta(b []byte) (*meta, error) {
	var m meta
	if err := cbor.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: meta record: %v", ErrCorrupt, err)
	}
	if m.Version != crdt.FormatVersion {
		return nil, fmt.Errorf("%w: meta record version %d", crdt.ErrVersion, m.Version)
	}
	if err := crdt.ReplicaID(m.Replica).Validate(); err != nil {
		return nil, fmt.Errorf("%w: meta record: %v", ErrCorrupt, err)
	}
	if m.Visible == nil {
		m.Visible = map[string]int64{}
	}
	return &m, nil
}

const headsPrefix = "/h"

func headKey(r crdt.ReplicaID) ds.Key { return ds.RawKey(headsPrefix + "/r" + string(r)) }

// head is where this node stands in a keyed replica's hash chain: the
// chain hash after the replica's last applied delta, and the replica's
// signature of it when this node has one (the origin signs only some
// heads, see crdt.Proof).
type head struct {
	Counter uint64
	Hash    crdt.Hash
	Sig     []byte
}

// encodeHead encodes h as its counter (8 bytes, big-endian) and its hash
// and signature in crdt's proof form.
func encodeHead(h head) []byte {
	return crdt.AppendProof(binary.BigEndian.AppendUint64(nil, h.Counter), crdt.Proof{Prev: h.Hash, Sig: h.Sig})
}

func decodeHead(b []byte) (head, error) {
	if len(b) < 8 {
		return head{}, fmt.Errorf("%w: chain head of %d bytes", ErrCorrupt, len(b))
	}
	p, err := crdt.DecodeProof(b[8:])
	if err != nil || p.Prev.IsZero() {
		return head{}, fmt.Errorf("%w: chain head: %v", ErrCorrupt, err)
	}
	return head{Counter: binary.BigEndian.Uint64(b), Hash: p.Prev, Sig: p.Sig}, nil
}

// readHeads reads every chain head in store.
func readHeads(ctx context.Context, store ds.Datastore) (map[crdt.ReplicaID]head, error) {
	heads := map[crdt.ReplicaID]head{}
	err := scan(ctx, store, headsPrefix, "", func(key string, val []byte) (bool, error) {
		r := crdt.ReplicaID(strings.TrimPrefix(key, headsPrefix+"/r"))
		if err := r.Validate(); err != nil {
			return false, fmt.Errorf("%w: chain head key %q", ErrCorrupt, key)
		}
		h, err := decodeHead(val)
		if err != nil {
			return false, fmt.Errorf("replica %s: %w", r, err)
		}
		heads[r] = h
		return true, nil
	})
	return heads, err
}

func encodeSeq(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func decodeSeq(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: log index entry of %d bytes", ErrCorrupt, len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// OpenLevelDB opens (creating if needed) the LevelDB store in dir. With
// sync, every commit is fsynced before it is acknowledged; without it a
// machine crash (not a process crash) may lose recent writes. LevelDB locks
// the directory: a second process on the same directory fails here.
//
// It refuses a damaged store with an error wrapping ErrStoreDamaged that
// names the damaged file, instead of dropping what it cannot read as
// LevelDB does by default (see leveldb.go): a journal or manifest that
// fails its checksums, or a table block that does (every table is read
// once). The journal's last record cut short by a crash is not damage and
// is dropped: it was never acknowledged. RepairLevelDB and Repair are the
// way out of a damaged store.
//
// Two options depart from LevelDB's defaults (docs/BENCHMARKS.md has the
// figures): a 16 MiB write buffer (4 MiB by default), so that fewer, larger
// level-0 tables are flushed and compacted; and a Bloom filter of 10 bits
// per key, so that looking up an item that is not stored — every add of a
// new item — skips the tables instead of reading a block of each. Neither
// changes the files' format: a store written without them opens with them
// and the other way round.
func OpenLevelDB(dir string, sync bool) (*leveldb.Datastore, error) {
	if err := checkLevelDB(dir, sync); err != nil {
		return nil, err
	}
	store, err := leveldb.NewDatastore(dir, (*leveldb.Options)(levelDBOptions(sync, strictOpen)))
	if err != nil {
		return nil, damaged(dir, err)
	}
	return store, nil
}

// levelDBWriteBuffer is the memtable size OpenLevelDB asks for.
const levelDBWriteBuffer = 16 << 20

// scan calls fn for every record under prefix whose key is at least from
// (all records if from is empty), in key order, until fn returns false or
// an error. On a LevelDB store it seeks straight to from; on other stores
// it skips the records before it.
func scan(ctx context.Context, store ds.Datastore, prefix, from string, fn func(key string, val []byte) (bool, error)) error {
	if l, ok := store.(*leveldb.Datastore); ok {
		rng := util.BytesPrefix([]byte(prefix + "/"))
		if from > string(rng.Start) {
			rng.Start = []byte(from)
		}
		it := l.DB.NewIterator(rng, nil)
		defer it.Release()
		for it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			more, err := fn(string(it.Key()), it.Value())
			if err != nil || !more {
				return err
			}
		}
		return it.Error()
	}
	res, err := store.Query(ctx, dsq.Query{Prefix: prefix, Orders: []dsq.Order{dsq.OrderByKey{}}})
	if err != nil {
		return err
	}
	defer res.Close()
	for {
		r, ok := res.NextSync()
		if !ok {
			break
		}
		if r.Error != nil {
			return r.Error
		}
		if r.Key < from {
			continue
		}
		more, err := fn(r.Key, r.Value)
		if err != nil || !more {
			return err
		}
	}
	return ctx.Err()
}

// get reads one record; a missing record is (nil, nil).
func get(ctx context.Context, store ds.Read, k ds.Key) ([]byte, error) {
	b, err := store.Get(ctx, k)
	if errors.Is(err, ds.ErrNotFound) {
		return nil, nil
	}
	return b, err
}
