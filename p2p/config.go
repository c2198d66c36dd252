package p2p

import (
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Config configures a Peer. Start from DefaultConfig.
type Config struct {
	// KeyFile holds the peer's Ed25519 identity; created (mode 0600) if
	// missing. Required.
	KeyFile string
	// Listen are the multiaddrs to listen on. Each must be free: an address
	// another process holds fails New (libp2p's TCP transport would
	// otherwise share the port silently through SO_REUSEPORT). Default: TCP
	// and QUIC on port DefaultPort of every interface.
	Listen []string
	// Bootstrap are /p2p/<id> multiaddrs dialled at start and redialled
	// with backoff while disconnected; they also seed the DHT.
	Bootstrap []string
	// MDNS turns on multicast DNS discovery on the local network. Off by
	// default: it multicasts on every interface.
	MDNS bool
	// DHT turns on the Kademlia DHT (server mode) and the rendezvous.
	DHT bool
	// NAT turns on UPnP/NAT-PMP port mapping; it talks to the gateway.
	NAT bool

	// Profile says what kind of network the catalog spans, and sets the
	// defaults below accordingly (memberlist's LAN and WAN configs are the
	// model): ProfileLAN (the default) advertises private addresses and
	// runs the DHT as a server; ProfileWAN advertises only public
	// addresses (and relay addresses) and lets the DHT follow
	// reachability. Loopback addresses are advertised in neither, unless
	// the peer listens on nothing else.
	Profile string
	// Announce, if set, replaces the direct addresses this peer advertises
	// to others (identify, DHT records); relay addresses are kept. For a
	// public node behind a port forward or with an address it cannot see
	// on its interfaces. Default none: the listen addresses and observed
	// public addresses, filtered by Profile.
	Announce []string
	// AnnounceAppend are advertised in addition to the others.
	AnnounceAppend []string
	// NoAnnounce are CIDR prefixes (e.g. 10.0.0.0/8) whose addresses are
	// never advertised, announced ones included.
	NoAnnounce []string
	// DHTMode is "auto" (client while AutoNAT finds the peer private or
	// unknown, server once public), "client" or "server". Default: server
	// with ProfileLAN (nothing on a LAN is ever public, and an all-client
	// DHT has empty routing tables), auto with ProfileWAN (a peer behind a
	// NAT must not be handed out as a DHT server nobody can reach).
	DHTMode string
	// Reachability overrides AutoNAT: "auto" (default), "public" or
	// "private". Public makes a node with a known public address start its
	// relay service and DHT server at once instead of after AutoNAT's
	// probes; private makes a peer known to be behind a NAT take relay
	// reservations at once.
	Reachability string
	// RelayService serves circuit relay v2 (with RelayResources' limits)
	// while this peer is publicly reachable; it does nothing while AutoNAT
	// finds the peer private or unknown. Default true: the public
	// bootstrap node is then a relay without more configuration, which is
	// what peers behind NATs need, and the limits keep its cost small.
	RelayService bool
	// RelayClient keeps relay reservations while this peer is not publicly
	// reachable (AutoRelay), on its bootstrap peers and on connected peers
	// that offer the relay hop protocol, and advertises /p2p-circuit
	// addresses through them; DCUtR then upgrades relayed connections to
	// direct ones where the NATs allow. Default true.
	RelayClient bool
	// HostOptions are extra libp2p options appended to the peer's own,
	// for tests (a simulated network) and tools. Default none.
	HostOptions []libp2p.Option
	// Network names the catalog: the gossip topic, the sync protocol and the
	// DHT rendezvous derive from it, so several catalogs can share peers
	// without mixing. 1–64 bytes of [a-z0-9._-]. Default "default".
	Network string
	// SwarmKey, if set, is a libp2p pre-shared key (the contents of a
	// /key/swarm/psk/1.0.0/ file): only peers with the same key connect.
	// Private networks run over TCP only.
	SwarmKey []byte
	// Writers, if not empty, are the only peers whose deltas this peer
	// accepts from the network: gossip messages authored by others are
	// rejected, and only writers are pulled from. This peer always counts
	// as a writer. Peer.SetWriters replaces the list while running.
	// Default empty: every peer that can connect (with SwarmKey, every
	// peer holding it) may write. A list must name the same writers on
	// every peer, or a writer that accepted a non-writer's deltas passes
	// them on by anti-entropy.
	Writers []peer.ID

	// AntiEntropyInterval is how often the peer pulls from one random
	// connected peer. Lower repairs missed gossip sooner at the cost of a
	// context exchange per round. Default 5s.
	AntiEntropyInterval time.Duration
	// HeartbeatInterval is GossipSub's heartbeat: the mesh forms and
	// repairs at this pace. Default 200ms.
	HeartbeatInterval time.Duration
	// MeshDegree is the number of peers each peer grafts into its GossipSub
	// mesh (GossipSub's D; see gossipParams for the bounds). A receiver
	// forwards every message to its mesh, so each extra mesh peer costs
	// about one more copy of every message; what the mesh misses, IHAVE
	// gossip and anti-entropy repair. 2 to 64; default 2.
	MeshDegree int
	// MaxMessageBytes bounds one gossip message. Default 4 MiB.
	MaxMessageBytes int
	// SyncTimeout bounds the delta phase of one anti-entropy exchange:
	// from opening the stream to its done frame, or to the frame that
	// announces a full state. A full-state transfer that keeps making
	// progress is not cut by it; FullStateTimeout bounds that. Default 2m.
	SyncTimeout time.Duration
	// FullStateTimeout bounds a full-state transfer, from the frame that
	// announces it to its last byte, on both sides. A puller whose
	// transfer runs past it treats the sender as a bad peer. It must let
	// MaxStateBytes (the node's) cross the slowest link worth serving: the
	// default 30m fits the node's default 1 GiB at 600 KB/s. Lower bounds
	// how long a peer trickling a state can hold a pull slot. Default 30m.
	FullStateTimeout time.Duration
	// SyncIdleTimeout drops a sync stream on which no byte arrives (or on
	// which the other side takes no byte of an answer) for this long, in
	// either phase; when pulling or reading a request, the peer is then
	// treated as a bad peer. Lower drops stalling peers sooner; too low
	// drops honest peers on a congested link or a busy disk. Default 10s.
	SyncIdleTimeout time.Duration
	// HolePunchRetry is the wait before a failed hole punch (DCUtR tries
	// once per relayed connection) is tried again, by closing the relayed
	// connection so that a new one is made; it doubles with each failure
	// in a row, up to 5 retries. Negative: no retries. Default 30s.
	HolePunchRetry time.Duration
	// MaxPulls bounds the pulls running at once, each from a different
	// peer (one pull per peer at a time). Higher keeps stalling peers from
	// delaying others; each concurrent pull may bring the same missed
	// deltas again, and may spool a full state to the data directory.
	// Default 4.
	MaxPulls int
	// MaxSyncStreamsPerPeer bounds the sync streams one peer may have this
	// peer answer at once; MaxSyncStreams bounds them for all peers. A
	// stream over either is reset at once. Each answered stream may hold
	// one frame of up to 64 MiB (a request's causal context) in memory
	// while it is received. Defaults 2 and 64.
	MaxSyncStreamsPerPeer, MaxSyncStreams int
	// BadPeerBackoff is how long this peer stops pulling from a bad peer:
	// one that sent garbage, stalled a sync stream, or sent a full state
	// over the node's MaxStateBytes or past FullStateTimeout. It doubles
	// with each offence up to MaxBadPeerBackoff, and starts again from
	// BadPeerBackoff once a peer has behaved for MaxBadPeerBackoff.
	// Defaults 1m and 30m.
	BadPeerBackoff, MaxBadPeerBackoff time.Duration
	// FullStateRetry is how long this peer waits before it pulls again
	// from a peer whose full state it failed to import for a reason that
	// is not an offence (the stream was cut short, the state is of a newer
	// format, this node's store failed): the peer would most likely answer
	// with the same full state at once. It doubles with each failure in a
	// row up to MaxFullStateRetry, and starts again from FullStateRetry
	// after a pull from the peer succeeds. Defaults 10s and 10m.
	FullStateRetry, MaxFullStateRetry time.Duration
	// ConnLow and ConnHigh are the connection manager's water marks.
	// Defaults 64 and 192.
	ConnLow, ConnHigh int

	// Logger receives events. Default slog.Default().
	Logger *slog.Logger

	// gapCheckDelay is how long after a gossiped delta showed a gap the
	// peer pulls if the gap is still there; 0 means two heartbeats and
	// 50 ms. Tests lengthen it to see what gossip alone delivers.
	gapCheckDelay time.Duration
	// stallPing bounds the ping that tells a stalling peer from a dead
	// link; 0 means 3 s. Tests on a loaded machine lengthen it, so that a
	// slow answer is not taken for a partition.
	stallPing time.Duration
	// fullGap spaces the full states a peer gets for asking (see
	// equivocation.go); tests shorten it.
	fullGap time.Duration
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Listen:                DefaultListen(),
		DHT:                   true,
		Profile:               ProfileLAN,
		Reachability:          "auto",
		RelayService:          true,
		RelayClient:           true,
		Network:               "default",
		AntiEntropyInterval:   5 * time.Second,
		HeartbeatInterval:     200 * time.Millisecond,
		MeshDegree:            2,
		MaxMessageBytes:       4 << 20,
		SyncTimeout:           2 * time.Minute,
		FullStateTimeout:      30 * time.Minute,
		SyncIdleTimeout:       10 * time.Second,
		HolePunchRetry:        30 * time.Second,
		MaxPulls:              4,
		MaxSyncStreamsPerPeer: 2,
		MaxSyncStreams:        64,
		BadPeerBackoff:        time.Minute,
		MaxBadPeerBackoff:     30 * time.Minute,
		FullStateRetry:        10 * time.Second,
		MaxFullStateRetry:     10 * time.Minute,
		ConnLow:               64,
		ConnHigh:              192,
		Logger:                slog.Default(),
	}
}

// minMessageBytes is the smallest MaxMessageBytes that fits any batch the
// publisher builds: up to maxBatchBytes, plus one delta of the largest
// size, plus framing.
const minMessageBytes = maxBatchBytes + crdt.MaxDeltaBytes + 64<<10

// DefaultPort is the default libp2p port, TCP and UDP (QUIC). IPFS (kubo)
// listens on 4001 by default, and a catalog peer often runs beside an IPFS
// node, so the catalog uses 4101 instead.
const DefaultPort = 4101

// DefaultListen returns the default listen addresses: TCP and QUIC on
// DefaultPort of every IPv4 interface.
func DefaultListen() []string {
	return []string{
		fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", DefaultPort),
		fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", DefaultPort),
	}
}

// The network profiles; see Config.Profile.
const (
	ProfileLAN = "lan"
	ProfileWAN = "wan"
)

var networkRE = regexp.MustCompile(`^[a-z0-9._-]{1,64}$`)

// validate fills zero values with defaults and rejects bad ones.
func (c *Config) validate() error {
	d := DefaultConfig()
	if c.KeyFile == "" {
		return fmt.Errorf("p2p config: KeyFile is required")
	}
	if c.Listen == nil {
		c.Listen = d.Listen
	}
	if c.Network == "" {
		c.Network = d.Network
	}
	if !networkRE.MatchString(c.Network) {
		return fmt.Errorf("p2p config: Network %q must be 1-64 bytes of [a-z0-9._-]", c.Network)
	}
	if c.AntiEntropyInterval == 0 {
		c.AntiEntropyInterval = d.AntiEntropyInterval
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = d.HeartbeatInterval
	}
	if c.gapCheckDelay == 0 {
		c.gapCheckDelay = 2*c.HeartbeatInterval + 50*time.Millisecond
	}
	if c.fullGap == 0 {
		c.fullGap = time.Minute
	}
	if c.stallPing == 0 {
		c.stallPing = 3 * time.Second
	}
	if c.MeshDegree == 0 {
		c.MeshDegree = d.MeshDegree
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = d.MaxMessageBytes
	}
	if c.SyncTimeout == 0 {
		c.SyncTimeout = d.SyncTimeout
	}
	if c.FullStateTimeout == 0 {
		c.FullStateTimeout = d.FullStateTimeout
	}
	if c.SyncIdleTimeout == 0 {
		c.SyncIdleTimeout = d.SyncIdleTimeout
	}
	if c.MaxPulls == 0 {
		c.MaxPulls = d.MaxPulls
	}
	if c.HolePunchRetry == 0 {
		c.HolePunchRetry = d.HolePunchRetry
	}
	if c.MaxSyncStreamsPerPeer == 0 {
		c.MaxSyncStreamsPerPeer = d.MaxSyncStreamsPerPeer
	}
	if c.MaxSyncStreams == 0 {
		c.MaxSyncStreams = d.MaxSyncStreams
	}
	if c.BadPeerBackoff == 0 {
		c.BadPeerBackoff = d.BadPeerBackoff
	}
	if c.MaxBadPeerBackoff == 0 {
		c.MaxBadPeerBackoff = max(d.MaxBadPeerBackoff, c.BadPeerBackoff)
	}
	if c.FullStateRetry == 0 {
		c.FullStateRetry = d.FullStateRetry
	}
	if c.MaxFullStateRetry == 0 {
		c.MaxFullStateRetry = max(d.MaxFullStateRetry, c.FullStateRetry)
	}
	if c.ConnLow == 0 {
		c.ConnLow = d.ConnLow
	}
	if c.ConnHigh == 0 {
		c.ConnHigh = d.ConnHigh
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.Profile == "" {
		c.Profile = d.Profile
	}
	if c.Profile != ProfileLAN && c.Profile != ProfileWAN {
		return fmt.Errorf("p2p config: Profile must be %q or %q, got %q", ProfileLAN, ProfileWAN, c.Profile)
	}
	if c.DHTMode == "" {
		c.DHTMode = "server"
		if c.Profile == ProfileWAN {
			c.DHTMode = "auto"
		}
	}
	if c.DHTMode != "auto" && c.DHTMode != "client" && c.DHTMode != "server" {
		return fmt.Errorf("p2p config: DHTMode must be auto, client or server, got %q", c.DHTMode)
	}
	if c.Reachability == "" {
		c.Reachability = d.Reachability
	}
	if c.Reachability != "auto" && c.Reachability != "public" && c.Reachability != "private" {
		return fmt.Errorf("p2p config: Reachability must be auto, public or private, got %q", c.Reachability)
	}
	if _, err := c.addrPolicy(); err != nil {
		return err
	}
	for i, id := range c.Writers {
		if err := id.Validate(); err != nil {
			return fmt.Errorf("p2p config: Writers[%d]: %w", i, err)
		}
	}
	switch {
	case c.AntiEntropyInterval < 0, c.HeartbeatInterval < 0, c.SyncTimeout < 0,
		c.FullStateTimeout < 0, c.SyncIdleTimeout < 0, c.BadPeerBackoff < 0:
		return fmt.Errorf("p2p config: intervals and timeouts must be positive")
	case c.FullStateRetry < 0 || c.MaxFullStateRetry < c.FullStateRetry:
		return fmt.Errorf("p2p config: need 0 <= FullStateRetry <= MaxFullStateRetry, got %v and %v", c.FullStateRetry, c.MaxFullStateRetry)
	case c.MaxBadPeerBackoff < c.BadPeerBackoff:
		return fmt.Errorf("p2p config: MaxBadPeerBackoff (%v) must be at least BadPeerBackoff (%v)", c.MaxBadPeerBackoff, c.BadPeerBackoff)
	case c.MaxPulls < 1, c.MaxSyncStreamsPerPeer < 1, c.MaxSyncStreams < c.MaxSyncStreamsPerPeer:
		return fmt.Errorf("p2p config: need MaxPulls >= 1 and 1 <= MaxSyncStreamsPerPeer <= MaxSyncStreams, got %d, %d and %d",
			c.MaxPulls, c.MaxSyncStreamsPerPeer, c.MaxSyncStreams)
	case c.MeshDegree < 2 || c.MeshDegree > 64:
		return fmt.Errorf("p2p config: MeshDegree must be between 2 and 64, got %d", c.MeshDegree)
	case c.MaxMessageBytes < minMessageBytes:
		return fmt.Errorf("p2p config: MaxMessageBytes must be at least %d (a full batch plus the largest delta), got %d", minMessageBytes, c.MaxMessageBytes)
	case c.ConnLow < 1 || c.ConnHigh < c.ConnLow:
		return fmt.Errorf("p2p config: need 1 <= ConnLow <= ConnHigh, got %d and %d", c.ConnLow, c.ConnHigh)
	}
	return nil
}

// topic, protocol and rendezvous names derived from the network.
func (c *Config) topic() string      { return "/crdt-catalog/" + c.Network + "/deltas/1" }
func (c *Config) syncProto() string  { return "/crdt-catalog/" + c.Network + "/sync/1.0.0" }
func (c *Config) syncProto2() string { return "/crdt-catalog/" + c.Network + "/sync/2.0.0" }
func (c *Config) rendezvous() string { return "crdt-catalog/" + c.Network }
