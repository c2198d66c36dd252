package node

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	ds "github.com/ipfs/go-datastore"
)

// keyRepair marks a Repair in progress: written first, deleted by the
// batch that writes the rebuilt bookkeeping, so that Open refuses a store
// whose repair was cut short.
var keyRepair = ds.NewKey("/m/repair")

// repairChunk is how many deletions Repair commits per batch.
const repairChunk = 10_000

// RepairReport says what Repair did.
type RepairReport struct {
	// OldReplica is the replica ID the store had ("" if its meta record
	// was lost); Replica is the new one it has now.
	OldReplica, Replica crdt.ReplicaID
	// Items are the item records kept; ItemsDropped those that no longer
	// decoded and were deleted.
	Items, ItemsDropped int
	// LogDropped is the number of delta-log records deleted.
	LogDropped int
	// SeenDots is the number of dots the rebuilt seen context holds: the
	// dots of the entries kept.
	SeenDots uint64
}

// Repair makes a catalog store whose records may have been lost or rolled
// back (RepairLevelDB salvaged what it could of a damaged LevelDB store)
// consistent again, so that the node claims nothing it does not hold and
// gets back from its peers everything it may have lost. The store must
// not be open in a Node. It:
//
//   - keeps every item record that decodes (they hold writes that were
//     really made) and deletes the others;
//   - rebuilds the seen context from the dots of the entries kept, and
//     empties the applied context: the node no longer claims any delta
//     as applied, so anti-entropy sends it every delta its peers hold, or
//     a full state, and a delta whose item was lost is joined again
//     instead of being skipped as a duplicate;
//   - deletes the delta log, which may name deltas whose effects were
//     lost (their origins still hold them); the GetDeltas cursor then
//     reports ErrCursorExpired, and its consumer takes a full state;
//   - marks every secondary index unbuilt (Config.Indexes), as the damage
//     may have taken entries of items it kept, so that the next Open
//     rebuilds them from the items;
//   - gives the store a new replica ID, as Reincarnate does: the last
//     counter the old replica used may be lost with its records, and a
//     counter that went back would hand out a dot already used (a fork).
//     The old replica becomes an ordinary foreign one, so its writes
//     that this store lost come back from peers like anyone's; a node
//     refuses deltas of its own replica that it cannot show it wrote.
//
// The new replica is keyed by key, the Config.Key the node will run with
// (nil for an unsigned node). A marker written first and deleted with the
// rebuilt records makes Open
// refuse the store (ErrRepairUnfinished) if Repair is cut short; running
// it again finishes it.
func Repair(ctx context.Context, store ds.Batching, key ed25519.PrivateKey, log *slog.Logger) (RepairReport, error) {
	var rep RepairReport
	if log == nil {
		log = slog.Default()
	}
	if err := store.Put(ctx, keyRepair, []byte{1}); err != nil {
		return rep, fmt.Errorf("repair: %w", err)
	}
	old := &meta{Version: crdt.FormatVersion, Visible: map[string]int64{}}
	if b, err := get(ctx, store, keyMeta); err != nil {
		return rep, fmt.Errorf("repair: %w", err)
	} else if b == nil {
		log.Warn("repair: the meta record is lost; log cursors restart from the highest one found")
	} else if m, err := decodeMeta(b); err != nil {
		log.Warn("repair: the meta record does not decode; log cursors restart from the highest one found", "err", err)
	} else {
		old = m
		rep.OldReplica = crdt.ReplicaID(m.Replica)
	}

	seen := crdt.NewContext()
	visible := map[string]int64{}
	hlc := old.HLC
	var drop []ds.Key
	err := scan(ctx, store, itemsPrefix, "", func(key string, val []byte) (bool, error) {
		k, ok := parseItemKey(key)
		it, err := crdt.DecodeItem(val)
		if !ok || k.Validate() != nil || err != nil {
			drop = append(drop, ds.RawKey(key))
			return true, nil
		}
		for _, d := range it.Presence {
			seen.Add(d)
		}
		for _, es := range it.Fields {
			for _, e := range es {
				seen.Add(e.Dot)
				hlc = max(hlc, uint64(e.TS))
			}
		}
		if it.Visible() {
			visible[k.Collection]++
		}
		rep.Items++
		return true, nil
	})
	if err != nil {
		return rep, fmt.Errorf("repair: read items: %w", err)
	}
	rep.ItemsDropped = len(drop)

	seq := old.Seq
	err = scan(ctx, store, "/l", "", func(key string, _ []byte) (bool, error) {
		if s, ok := strings.CutPrefix(key, "/l/s/"); ok {
			if n, err := strconv.ParseUint(s, 16, 64); err == nil {
				seq = max(seq, n)
			}
		}
		drop = append(drop, ds.RawKey(key))
		rep.LogDropped++
		return true, nil
	})
	if err != nil {
		return rep, fmt.Errorf("repair: read delta log: %w", err)
	}
	// The damage may have taken index entries of items it left: the next
	// Open rebuilds every index.
	markers, err := indexMarkerKeys(ctx, store)
	if err != nil {
		return rep, fmt.Errorf("repair: read index markers: %w", err)
	}
	drop = append(drop, markers...)
	feed, changes, err := repairFeed(ctx, store)
	if err != nil {
		return rep, fmt.Errorf("repair: read change history: %w", err)
	}
	drop = append(drop, changes...)
	for len(drop) > 0 {
		chunk := drop[:min(len(drop), repairChunk)]
		drop = drop[len(chunk):]
		b, err := store.Batch(ctx)
		if err != nil {
			return rep, fmt.Errorf("repair: %w", err)
		}
		for _, k := range chunk {
			if err := b.Delete(ctx, k); err != nil {
				return rep, fmt.Errorf("repair: %w", err)
			}
		}
		if err := b.Commit(ctx); err != nil {
			return rep, fmt.Errorf("repair: %w", err)
		}
	}

	if rep.Replica, err = replicaFor(key); err != nil {
		return rep, fmt.Errorf("repair: %w", err)
	}
	m := &meta{
		Version: crdt.FormatVersion,
		Replica: string(rep.Replica),
		HLC:     hlc,
		Seq:     seq,
		First:   seq + 1,
		Cleared: min(old.Cleared, seq),
		Visible: visible,
	}
	oldContexts, err := contextKeys(ctx, store)
	if err != nil {
		return rep, fmt.Errorf("repair: read the causal contexts: %w", err)
	}
	b, err := store.Batch(ctx)
	if err != nil {
		return rep, fmt.Errorf("repair: %w", err)
	}
	for _, kv := range []struct {
		k ds.Key
		v []byte
	}{{keyMeta, encodeMeta(m)}, {keyFeed, encodeFeed(feed)}} {
		if err := b.Put(ctx, kv.k, kv.v); err != nil {
			return rep, fmt.Errorf("repair: %w", err)
		}
	}
	if err := putContexts(ctx, b, oldContexts, seen, crdt.NewContext()); err != nil {
		return rep, fmt.Errorf("repair: %w", err)
	}
	if err := b.Delete(ctx, keyRepair); err != nil {
		return rep, fmt.Errorf("repair: %w", err)
	}
	if err := b.Commit(ctx); err != nil {
		return rep, fmt.Errorf("repair: %w", err)
	}
	rep.SeenDots = seen.Len()
	log.Warn("store repaired: new replica; the applied context is empty, so peers send back everything this node may have lost",
		"old_replica", rep.OldReplica, "replica", rep.Replica, "items", rep.Items, "items_dropped", rep.ItemsDropped, "log_dropped", rep.LogDropped)
	return rep, nil
}
