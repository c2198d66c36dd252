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
// Discovery: static bootstrap multiaddrs (redialled with backoff), mDNS on
// the local network, and the Kademlia DHT in server mode with a rendezvous
// derived from the network name. A libp2p private network (pre-shared swarm
// key) keeps foreign peers out; it works over TCP only.
package p2p
