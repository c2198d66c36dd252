// Package crdt is the catalog's replicated data type, pure: no I/O, no
// clocks of its own, no goroutines. It is a δ-CRDT (Almeida, Shoker &
// Baquero, "Delta State Replicated Data Types", 2018): a dot store of
// items plus causal contexts, and deltas that are small states.
//
// What it promises, whatever the order, repetition or loss of deltas
// (checked by the property tests in properties_test.go):
//
//   - Join is commutative, associative and idempotent, so replicas that
//     have joined the same deltas hold the same state.
//   - An item's presence is an add-wins observed-remove set: a remove
//     deletes exactly the adds it observed, so an add concurrent with it
//     survives.
//   - Each metadata field is a register of dotted entries. A write
//     supersedes the entries it observed; of concurrent entries the one
//     with the greatest (Timestamp, ReplicaID) wins: the later hybrid
//     logical clock, ties broken by replica ID in byte order. The losers
//     stay visible as conflicts until a later write observes them.
//   - A remove leaves no per-item tombstone: the removed dots live on only
//     in the causal context, a version vector plus the dots not yet
//     contiguous, which folds back into the vector as gaps fill. State can
//     be dropped exactly when a dot is covered: an item whose entries are
//     all covered by a joined context is empty and is not stored.
//   - Timestamps (Clock) follow causality: a write that observed another
//     carries a larger timestamp, whatever the wall clocks say, and a
//     remote timestamp moves the local clock at most MaxOffset ahead of
//     the wall clock.
//   - A keyed replica's deltas form a hash chain signed by its key
//     (proof.go): CheckProofs tells a delta its origin wrote from one it
//     did not, and two signed histories of one replica apart.
//
// Every decoder checks its input against the limits in limits.go before
// it allocates for it, and returns an error wrapping ErrInvalid or
// ErrTooLarge; none panics on input.
package crdt
