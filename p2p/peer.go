package p2p

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
)

// Catalog is what the peer needs from the node; *node.Node satisfies it.
type Catalog interface {
	Subscribe(buffer int) *node.Subscription
	ApplySealed(ctx context.Context, deltas []*crdt.Sealed) (node.ApplyResult, error)
	Gap(dot crdt.Dot) bool
	Contexts() (seen, applied *crdt.Context)
	// ReplicaLimit bounds the replicas a peer's context may name
	// (node.Config.MaxReplicas): one naming more is refused unread.
	ReplicaLimit() int
	DeltasFor(ctx context.Context, have *crdt.Context, fn func(d *crdt.Delta, enc []byte) error) (int, error)
	AppliedDigest(buckets bool) (crdt.Hash, []uint64)
	AppliedEntries(b int) map[crdt.ReplicaID][]byte
	PeerApplied(buckets []int, entries map[crdt.ReplicaID][]byte) (*crdt.Context, error)
	DeltasSince(ctx context.Context, cursor uint64, limit int, localOnly bool) (node.Pending, error)
	ExportState(ctx context.Context, w io.Writer) error
	ImportState(ctx context.Context, r io.Reader) (node.ImportResult, error)
	Wants() <-chan struct{}

	// Comparing histories: see node/equivocation.go.
	HeadSums() []byte
	HeadsFor(theirs []byte, start int) ([]byte, error)
	Contradictions(ctx context.Context, heads []byte) ([]node.ChainRange, error)
	Chain(ctx context.Context, rg node.ChainRange) ([]byte, error)
	CheckChain(ctx context.Context, enc []byte) (bool, error)
	AddFork(ctx context.Context, enc []byte) (bool, error)
	Forks(known map[crdt.ReplicaID]uint64) [][]byte
	Equivocators() []node.Equivocator
	BanStamp() uint64
}

var _ Catalog = (*node.Node)(nil)

// Peer replicates one node over libp2p. Its goroutines run until Close.
type Peer struct {
	cfg   Config
	log   *slog.Logger
	cat   Catalog
	h     host.Host
	bw    *metrics.BandwidthCounter
	ps    *pubsub.PubSub
	topic *pubsub.Topic
	sub   *pubsub.Subscription
	dht   *dht.IpfsDHT // nil unless Config.DHT
	proto protocol.ID
	// proto2 is the digest exchange (sync/2), which Pull prefers; proto
	// (sync/1) stays for older releases, and marks a catalog peer.
	proto2 protocol.ID
	// boot are the bootstrap peers, parsed from Config.Bootstrap, one entry
	// per peer. Set before the host exists, read-only after.
	boot []peer.AddrInfo
	// hostReady is set once h is; goroutines the host starts itself (its
	// AutoRelay peer source) read h only after loading it.
	hostReady atomic.Bool
	punches   punchTracer
	nat       natState

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closers []io.Closer // discovery services, closed in reverse order

	mu       sync.Mutex                // guards closed and the maps below
	closed   bool                      // Close has begun: start no goroutine
	gapWait  map[peer.ID]bool          // a gap check for this peer is pending
	inflight map[peer.ID]bool          // a pull from this peer is running
	again    map[peer.ID]bool          // pull once more when it ends
	known    map[peer.ID]*crdt.Context // each peer's applied context, as last exchanged
	backoffs map[peer.ID]*backoff      // bad peers: no scheduled pull until their backoff ends
	retries  map[peer.ID]*backoff      // peers whose full state failed: no scheduled pull until the wait ends (see stateFailed)
	syncIn   map[peer.ID]int           // inbound sync streams being answered, per peer
	// syncInTotal is the sum of syncIn.
	syncInTotal int
	// mdnsPeers are the peers found by mDNS that a goroutine keeps connected.
	mdnsPeers map[peer.ID]bool
	// redialing are the lost catalog peers a goroutine is redialling.
	redialing map[peer.ID]bool

	// pullSem lets Config.MaxPulls scheduled pulls run at once, each from
	// another peer, so that a peer that stalls delays no pull but its own.
	// The bound is small: a node that comes back after missing K
	// operations connects to every peer at once, and each concurrent pull
	// may send it the same K deltas.
	pullSem chan struct{}

	stats  counters
	rounds roundSizes
	hist   histories
	tracer gossipTracer
	// versionWarned is set once a message in a newer format was logged.
	versionWarned atomic.Bool
	// writers is the writers list (nil: every peer may write); replaced
	// whole by SetWriters, read without locks.
	writers      atomic.Pointer[writerSet]
	notWriterLog notWriterLog
}

// counters are the peer's running totals; see Stats.
type counters struct {
	published, publishedDeltas, received, rejected atomic.Uint64
	ignored                                        atomic.Uint64
	rounds, syncFailures, syncRejected             atomic.Uint64
	syncDeltasSent, syncDeltasReceived             atomic.Uint64
	syncBytesSent, syncBytesReceived               atomic.Uint64
	fullSent, fullReceived, gaps                   atomic.Uint64
	syncRefused, syncStalled, badPeers             atomic.Uint64
	notWriter, pullsSkipped                        atomic.Uint64
}

// New starts a peer for cat: the host, GossipSub, the sync protocol and the
// configured discovery. ctx bounds only the start-up.
func New(ctx context.Context, cat Catalog, cfg Config) (*Peer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := &Peer{
		cfg:       cfg,
		log:       cfg.Logger,
		cat:       cat,
		bw:        metrics.NewBandwidthCounter(),
		proto:     protocol.ID(cfg.syncProto()),
		proto2:    protocol.ID(cfg.syncProto2()),
		inflight:  map[peer.ID]bool{},
		gapWait:   map[peer.ID]bool{},
		pullSem:   make(chan struct{}, cfg.MaxPulls),
		again:     map[peer.ID]bool{},
		known:     map[peer.ID]*crdt.Context{},
		backoffs:  map[peer.ID]*backoff{},
		retries:   map[peer.ID]*backoff{},
		syncIn:    map[peer.ID]int{},
		mdnsPeers: map[peer.ID]bool{},
		redialing: map[peer.ID]bool{},
		rounds:    newRoundSizes(),
	}
	p.writers.Store(newWriterSet(cfg.Writers))
	p.punches.log = p.log
	boot, err := parseBootstrap(cfg.Bootstrap)
	if err != nil {
		return nil, err
	}
	p.boot = boot
	h, err := p.newHost()
	if err != nil {
		return nil, err
	}
	p.h = h
	p.hostReady.Store(true)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.punches.mu.Lock()
	p.punches.failed = p.retryPunch
	p.punches.mu.Unlock()
	if err := p.start(ctx); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func (p *Peer) start(ctx context.Context) error {
	p.h.SetStreamHandler(p.proto, p.handleSync)
	p.servePacked()
	p.h.SetStreamHandler(p.proto2, p.handleSync2)
	p.h.Network().Notify(&network.NotifyBundle{
		ConnectedF: func(n network.Network, c network.Conn) {
			p.logConn("peer connected", n, c)
			p.preferDirect(c)
			p.requestPull(c.RemotePeer())
		},
		DisconnectedF: func(n network.Network, c network.Conn) {
			p.logConn("peer disconnected", n, c)
			if isCircuit(c.RemoteMultiaddr()) {
				p.redialLost(c.RemotePeer())
			}
		},
	})
	if err := p.watchNAT(); err != nil {
		return err
	}
	if err := p.startGossip(); err != nil {
		return err
	}
	if err := p.startDiscovery(ctx); err != nil {
		return err
	}
	p.goRun(p.antiEntropyLoop)
	return nil
}

// logConn logs a connection opened or closed: at info when it is the
// peer's first connection or its last, at debug otherwise (a second
// transport, a relayed connection upgraded to a direct one).
func (p *Peer) logConn(msg string, n network.Network, c network.Conn) {
	others := len(n.ConnsToPeer(c.RemotePeer())) // includes c once opened, not once closed
	if msg == "peer connected" {
		others--
	}
	level := slog.LevelInfo
	if others > 0 {
		level = slog.LevelDebug
	}
	p.log.Log(p.ctx, level, msg, "peer", c.RemotePeer(), "addr", c.RemoteMultiaddr().String(), "connection", p.connKind(c))
}

// goRun runs f on a goroutine that Close waits for; after Close it does
// nothing.
func (p *Peer) goRun(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
}

// ID returns the peer's libp2p ID.
func (p *Peer) ID() peer.ID { return p.h.ID() }

// Host returns the libp2p host, for tests and tools.
func (p *Peer) Host() host.Host { return p.h }

// Addrs returns the peer's listen multiaddrs, each ending in /p2p/<id>, as
// other peers pass them to Bootstrap.
func (p *Peer) Addrs() []string {
	self, err := ma.NewMultiaddr("/p2p/" + p.h.ID().String())
	if err != nil {
		return nil
	}
	var out []string
	for _, a := range p.h.Addrs() {
		out = append(out, a.Encapsulate(self).String())
	}
	return out
}

// Connect dials a /p2p/ multiaddr.
func (p *Peer) Connect(ctx context.Context, addr string) error {
	ai, err := peer.AddrInfoFromString(addr)
	if err != nil {
		return fmt.Errorf("connect %s: %w", addr, err)
	}
	return p.h.Connect(ctx, *ai)
}

// PeerStatus describes one connected peer, as GET /status shows it.
type PeerStatus struct {
	ID string `json:"id"`
	// Addrs are the remote addresses of every connection to the peer;
	// never nil.
	Addrs []string `json:"addrs"`
	// Connection is the kind of the best connection to the peer:
	// ConnHolePunched or ConnDirect if there is a direct one, else
	// ConnRelayed.
	Connection string `json:"connection"`
	// Addr is the remote address of that connection.
	Addr string `json:"addr"`
	// RTTMillis is the latest round-trip time measured to the peer (by
	// identify's and ping's exchanges), in milliseconds; 0 if none yet.
	RTTMillis float64 `json:"rtt_ms"`
	// Known reports whether the two have exchanged causal contexts; Ahead
	// and Behind are meaningful only then. Ahead counts the deltas this
	// node holds that the peer lacked at the last exchange, Behind the
	// reverse.
	Known  bool   `json:"known"`
	Ahead  uint64 `json:"ahead"`
	Behind uint64 `json:"behind"`
}

// Peers lists the connected peers that speak this catalog's sync protocol
// (and, before identification completes, every connected peer). It never
// returns nil; the caller owns the slice. Safe for concurrent use.
func (p *Peer) Peers() []PeerStatus {
	_, mine := p.cat.Contexts()
	out := []PeerStatus{}
	for _, id := range p.catalogPeers() {
		st := PeerStatus{ID: id.String(), Addrs: []string{}}
		rank := -1 // relayed 0, direct 1
		for _, c := range p.h.Network().ConnsToPeer(id) {
			st.Addrs = append(st.Addrs, c.RemoteMultiaddr().String())
			r := 1
			if isCircuit(c.RemoteMultiaddr()) {
				r = 0
			}
			if r > rank {
				rank, st.Connection, st.Addr = r, p.connKind(c), c.RemoteMultiaddr().String()
			}
		}
		if rtt := p.h.Peerstore().LatencyEWMA(id); rtt > 0 {
			st.RTTMillis = float64(rtt.Microseconds()) / 1000
		}
		p.mu.Lock()
		theirs := p.known[id]
		p.mu.Unlock()
		if theirs != nil {
			st.Known = true
			st.Ahead, st.Behind = mine.Compare(theirs)
		}
		out = append(out, st)
	}
	return out
}

// NATStatus is this peer's view of its own reachability, as GET /status
// shows it.
type NATStatus struct {
	// Reachability is "public", "private" or "unknown", as AutoNAT (or
	// Config.Reachability) last said.
	Reachability string `json:"reachability"`
	// Announced are the addresses advertised to other peers (identify,
	// DHT records), relay addresses included.
	Announced []string `json:"announced_addrs"`
	// Observed are the addresses other peers reported seeing this peer
	// at, and the host adopted (see observedAddrThreshold).
	Observed []string `json:"observed_addrs"`
	// Relays are the peer IDs of the relays this peer holds a reservation
	// on, through which it can be reached.
	Relays []string `json:"relay_reservations"`
	// HolePunches counts direct connections made by DCUtR.
	HolePunches uint64 `json:"hole_punches"`
}

// NAT returns the peer's reachability, addresses and relay reservations.
// No list is nil. Safe for concurrent use.
func (p *Peer) NAT() NATStatus {
	p.nat.mu.Lock()
	st := NATStatus{Reachability: reachabilityName(p.nat.reachability), Relays: relayPeers(p.nat.relayAddrs)}
	p.nat.mu.Unlock()
	if r, ok := p.h.(interface{ Reachability() network.Reachability }); ok && st.Reachability == "unknown" {
		st.Reachability = reachabilityName(r.Reachability())
	}
	st.Announced = []string{}
	for _, a := range p.h.Addrs() {
		st.Announced = append(st.Announced, a.String())
	}
	st.Observed = []string{}
	if all, ok := p.h.(interface{ AllAddrs() []ma.Multiaddr }); ok {
		ifaces, _ := p.h.Network().InterfaceListenAddresses()
		for _, a := range all.AllAddrs() {
			if !slices.ContainsFunc(ifaces, a.Equal) {
				st.Observed = append(st.Observed, a.String())
			}
		}
	}
	st.HolePunches = p.punches.count()
	return st
}

// catalogPeers returns the connected peers that may be peers of this
// catalog: other libp2p nodes (DHT peers of other networks, say) excluded.
func (p *Peer) catalogPeers() []peer.ID {
	var out []peer.ID
	for _, id := range p.h.Network().Peers() {
		if p.mayBeCatalogPeer(id) {
			out = append(out, id)
		}
	}
	return out
}

// mayBeCatalogPeer reports whether id speaks this catalog's sync protocol
// or has not been identified yet (its protocols are still unknown).
func (p *Peer) mayBeCatalogPeer(id peer.ID) bool {
	protos, err := p.h.Peerstore().GetProtocols(id)
	if err != nil || len(protos) == 0 {
		return true
	}
	return slices.Contains(protos, p.proto)
}

// Close stops discovery, gossip and anti-entropy, waits for the goroutines
// and closes the host.
func (p *Peer) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	for i := len(p.closers) - 1; i >= 0; i-- {
		if err := p.closers[i].Close(); err != nil {
			p.log.Debug("closing discovery", "err", err)
		}
	}
	if p.sub != nil {
		p.sub.Cancel()
	}
	err := p.h.Close()
	p.wg.Wait()
	if p.topic != nil {
		_ = p.topic.Close()
	}
	return err
}
