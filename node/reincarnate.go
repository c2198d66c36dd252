package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	ds "github.com/ipfs/go-datastore"
)

// newReplicaID returns a fresh random replica ID.
func newReplicaID() (crdt.ReplicaID, error) {
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("new replica id: %w", err)
	}
	return crdt.ReplicaID(hex.EncodeToString(raw[:])), nil
}

// replicaFor returns a new replica ID: keyed by key, or, without one, a
// random one that names no key.
func replicaFor(key ed25519.PrivateKey) (crdt.ReplicaID, error) {
	if key != nil {
		return crdt.NewKeyedReplicaID(key.Public().(ed25519.PublicKey), rand.Reader)
	}
	return newReplicaID()
}

// Reincarnate gives the catalog held in store a new replica ID, for a
// store that another process also uses or used (a copied data directory,
// a restored backup): after it, this store's writes take dots of the new
// replica, which no other process can have used. Everything the store
// holds stays, the old replica's operations included; to every node,
// this one's included, the old replica is now just another replica, so
// deltas that the other process writes under it are joined like any
// peer's. Operations that both processes wrote under one dot before the
// fork stay as each node first received them.
//
// The new replica is keyed by key, the Config.Key the node will run with
// (nil for an unsigned node). The store must not be open in a Node. It
// returns the old and new IDs.
func Reincarnate(ctx context.Context, store ds.Datastore, key ed25519.PrivateKey) (old, replica crdt.ReplicaID, err error) {
	b, err := get(ctx, store, keyMeta)
	if err != nil {
		return "", "", fmt.Errorf("reincarnate: %w", err)
	}
	if b == nil {
		return "", "", fmt.Errorf("reincarnate: the store holds no catalog")
	}
	m, err := decodeMeta(b)
	if err != nil {
		return "", "", fmt.Errorf("reincarnate: %w", err)
	}
	if replica, err = replicaFor(key); err != nil {
		return "", "", fmt.Errorf("reincarnate: %w", err)
	}
	old = crdt.ReplicaID(m.Replica)
	m.Replica, m.Counter = string(replica), 0
	if err := store.Put(ctx, keyMeta, encodeMeta(m)); err != nil {
		return "", "", fmt.Errorf("reincarnate: %w", err)
	}
	if err := store.Delete(ctx, keyFork); err != nil {
		return "", "", fmt.Errorf("reincarnate: %w", err)
	}
	return old, replica, nil
}
