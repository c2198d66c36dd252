// Package p2p replicates a catalog node over libp2p.
//
// Push: every local delta is published at once on a GossipSub topic named
// after the network; under load several deltas share one message, each with
// its own dot. Messages are signed by their origin (strict signing) and a
// topic validator rejects anything that does not decode, is too large or
// belongs to another network, before the node sees it.
//
// Pull: GossipSub is best effort (a message published before the mesh forms
// goes nowhere), so anti-entropy makes the catalog correct. On every new
// connection, periodically with a random peer, and at once when a received
// delta shows a gap in some replica's counters, a peer sends its applied
// causal context over the sync stream protocol; the other answers with the
// logged deltas it lacks, in bounded chunks, or, when its log no longer
// reaches back that far, a streamed full state. The cost of catching up is
// proportional to what was missed.
//
// Limits: a peer that holds the swarm key may still be hostile. Sync
// streams answered at once are bounded per peer and in all (others are
// reset at once), a sync frame is buffered as its bytes arrive, every sync
// read and write has an idle timeout, pulls from different peers run in
// parallel, and a peer that sends garbage, stalls a stream or sends a full
// state over the node's limits is disconnected and not pulled from for a
// backoff period that doubles with each offence. See Config.
//
// Writers: by default every peer that can connect (with a swarm key,
// every peer holding it) may write, and its deltas are accepted like this
// peer's own. Config.Writers, replaceable with Peer.SetWriters, narrows
// that: a gossip message whose origin (authenticated by GossipSub's strict
// signing, not the peer that forwarded it) is not a writer is rejected,
// and only writers are pulled from, since a pull answer is content the
// answering peer vouches for. Every peer may still pull. A writer can
// still forge deltas of other replicas: the list says whose word is taken,
// not who wrote each delta.
//
// Discovery: static bootstrap multiaddrs (redialled with backoff), mDNS on
// the local network, and the Kademlia DHT (server mode with the LAN
// profile, following reachability with the WAN one) with a rendezvous
// derived from the network name. A libp2p private network (pre-shared swarm
// key) keeps foreign peers out; it works over TCP only.
//
// Across NATs (nat.go, addrs.go): go-libp2p's own stack, configured, not
// rewritten. AutoNAT v1 and v2 find whether this peer is reachable; a
// public peer serves circuit relay v2 (relayResources states the limits);
// a peer that is not keeps reservations on its bootstrap peers and on peers
// offering the hop protocol (AutoRelay) and advertises the relay
// addresses; DCUtR upgrades relayed connections to direct ones, and a
// relayed connection is closed once a direct one exists. What is
// advertised is decided by addrPolicy: -announce, -no-announce, and the
// profile (never loopback; with WAN, never a private address).
package p2p
