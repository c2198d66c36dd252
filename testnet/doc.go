// Package testnet runs clusters of the real crdt-catalog binary as separate
// processes and subjects them to faults, so that what users run is what
// the fault tests exercise.
//
// Build compiles the binary once per process. Launch (or Start, in a test)
// runs N peers, each with its own data directory, HTTP port, libp2p port
// and log file, joined by a bootstrap list. The Cluster then drives faults:
// Stop (SIGTERM), Kill (SIGKILL), Restart (same data directory, same
// ports), Pause and Resume (SIGSTOP, SIGCONT), Wipe (a new replica on the
// next start), AddPeer (a late joiner), and Partition and Heal.
//
// Two network modes:
//
//   - loopback (the default): every peer listens on 127.0.0.1 with ports
//     the harness picked; no partitions.
//   - netns (Options.Netns; root and iproute2 needed, see NetnsAvailable):
//     every peer runs in a network namespace of its own, joined by veth
//     pairs to a bridge with addresses in 10.252.K.0/24. Partition adds
//     blackhole routes inside the namespaces between groups; Heal removes
//     them. The harness reaches the APIs from the bridge's address, with a
//     bearer token, since they are not on loopback. Close removes every
//     namespace, veth pair and bridge; CloseOnSignal does so on SIGINT and
//     SIGTERM too, and a later launch removes what a killed harness left.
//
// NewNATNet builds a third topology, in namespaces too: a public segment
// with nodes B and C, and two homes, each behind a router that masquerades
// (port-preserving or port-randomising) with nftables rules written over
// netlink; the management network of netns mode carries only the HTTP
// APIs. TestNAT_HomesBehindNATs runs the real binary on it.
//
// Peers never use mDNS or NAT port mapping; the DHT is off unless
// Options.DHT.
//
// Each Cluster keeps a History of its Clients' writes (invocation,
// completion, outcome), of the convergence barriers AwaitConverged
// observed, of partitions and of process exits. Check classifies every
// item against the converged state like a Jepsen set checker adapted to
// the add-wins set: lost, resurrected, phantom, or with stale metadata.
//
// All randomness of the tests and of the benchmark comes from one seed
// (ResolveSeed: a flag, else TESTNET_SEED, else the clock), printed at the
// start and in every failure report. RunBench is the cluster benchmark
// behind "go run ./testnet/cmd/testnet bench".
package testnet
