// Package node is one replica of the catalog: the crdt state in a
// go-datastore store (LevelDB in production), the delta log, the causal
// buffer and the signing of this replica's deltas. It knows nothing of
// HTTP or libp2p: p2p and httpapi move its deltas and full states.
//
// What a Node promises its callers:
//
//   - Durable before visible. A write (Add, Batch, ApplyDeltas, an
//     import) returns only once its atomic store batch (items, the
//     context entries of the replicas it changed, log entries, counter,
//     chain heads) is durable, and only then is it
//     handed to subscribers, so no peer ever sees a write its origin could
//     lose. With a store that syncs (OpenLevelDB with sync), a kill -9 at
//     any instant loses nothing acknowledged and never reuses a dot.
//   - Atomic. A Batch applies all its operations or none; a rejected
//     delta, state or request leaves the node as it was.
//   - Causal. A remote delta joins only after everything it depends on
//     (the previous dot of its replica, the dots of its context); until
//     then it waits in a bounded buffer, and anti-entropy brings back what
//     the buffer dropped. The applied context never claims a dot whose
//     effects the node does not hold.
//   - Checked origin. With Config.Key, this replica's deltas are signed,
//     and a delta of a keyed replica joins only under its origin's
//     signature; a second history of this node's own replica stops local
//     writes (ErrForked) until Reincarnate.
//   - Bounded. Contexts, waiting deltas, replicas and imported states
//     are held to the limits of Config; input beyond them is refused with
//     an error, never a panic.
//   - Numbered changes. Every change of an item (local, remote delta,
//     full-state import) gets the next change sequence number in the same
//     atomic batch; Watch and WatchInitial read them in order, each once,
//     without ever making a writer wait (changes.go).
//   - Cost of a write independent of history. A commit writes the
//     context entries of the replicas it changed, never whole contexts,
//     and peers compare contexts by digest (AppliedDigest), so neither
//     grows with the number of replicas ever seen.
//
// Reads (Get, Query, Watch) see durable writes only. All methods are safe for
// concurrent use.
package node
