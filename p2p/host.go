package p2p

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	"github.com/libp2p/go-libp2p/p2p/host/observedaddrs"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// LoadIdentity reads the Ed25519 identity in path, creating it (mode 0600,
// written to a temporary file and renamed) if the file does not exist.
func LoadIdentity(path string) (crypto.PrivKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := crypto.UnmarshalPrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("identity %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("identity: %w", err)
	}
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	b, err = crypto.MarshalPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".identity-*")
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("identity: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("identity: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("identity: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return k, nil
}

// NodeKey returns the Ed25519 identity in path (see LoadIdentity) as the
// key node.Config.Key takes, so that the node's replica is owned by this
// peer's ID.
func NodeKey(path string) (ed25519.PrivateKey, error) {
	k, err := LoadIdentity(path)
	if err != nil {
		return nil, err
	}
	if k.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("identity %s: a %v key; replicas are keyed by Ed25519 keys only", path, k.Type())
	}
	raw, err := k.Raw()
	if err != nil || len(raw) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("identity %s: not an Ed25519 private key (%d bytes, %v)", path, len(raw), err)
	}
	return ed25519.PrivateKey(raw), nil
}

// DecodeSwarmKey parses a libp2p pre-shared key file.
func DecodeSwarmKey(b []byte) (pnet.PSK, error) {
	psk, err := pnet.DecodeV1PSK(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("swarm key: %w", err)
	}
	return psk, nil
}

// relayResources are the circuit relay v2 limits of the relay service,
// chosen for a catalog: few peers, small messages.
//
// Circuits have no per-circuit data or duration limit (relay v2's default
// is 128 KiB and 2 minutes). A circuit with a limit is a "limited"
// connection, on which GossipSub opens no stream at all, and a peer
// behind a port-randomising NAT, which no hole punch can reach, would then
// get deltas only by anti-entropy, seconds late, and a full state would be
// cut every 128 KiB. The cost is bounded by counts instead: at most 64
// reservations (64 peers behind NATs per relay; kubo's default is 128), 8
// per IP address (peers sharing one home NAT), 8 circuits per peer (a
// peer's relayed catalog peers; the default is 16), and a 2 KiB buffer per
// circuit direction (deltas are a few hundred bytes): at most 64 × 8 × 2 ×
// 2 KiB = 2 MiB of buffers. Relayed connections are closed as soon as a
// direct one to the same peer exists, so a relay carries traffic only
// between peers no hole punch can join.
func relayResources() relayv2.Resources {
	return relayv2.Resources{
		Limit:                 nil,
		ReservationTTL:        time.Hour,
		MaxReservations:       64,
		MaxCircuits:           8,
		BufferSize:            2048,
		MaxReservationsPerIP:  8,
		MaxReservationsPerASN: 32,
	}
}

// observedAddrThreshold is how many distinct peers must report the same
// observed address before the host adopts it as its own (go-libp2p's
// default is 4). A catalog often has one or two public nodes; two agreeing
// observers are enough, and a port-randomising NAT still never gets an
// address adopted (each observer sees another port).
const observedAddrThreshold = 2

func init() { observedaddrs.ActivationThresh = observedAddrThreshold }

// newHost builds the libp2p host: the identity, the connection manager,
// NAT traversal (AutoNAT v1 and v2 client and service, identify's observed
// addresses, the relay v2 service and AutoRelay client as configured, and
// DCUtR hole punching), the address policy, port mapping if asked, and a
// private network if a swarm key is set (TCP only: QUIC cannot carry a
// pre-shared key, so QUIC listen addresses are dropped). It then listens
// on every listen address, and fails if any one of them cannot be had.
func (p *Peer) newHost() (host.Host, error) {
	cfg := &p.cfg
	key, err := LoadIdentity(cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	cm, err := connmgr.NewConnManager(cfg.ConnLow, cfg.ConnHigh)
	if err != nil {
		return nil, err
	}
	policy, err := cfg.addrPolicy()
	if err != nil {
		return nil, err
	}
	listen := cfg.Listen
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ConnectionManager(cm),
		libp2p.EnableHolePunching(holepunch.WithTracer(&p.punches)),
		libp2p.EnableRelay(),
		libp2p.EnableAutoNATv2(),
		libp2p.AddrsFactory(policy.filter),
		libp2p.UserAgent("crdt-catalog"),
		libp2p.BandwidthReporter(p.bw),
	}
	if cfg.RelayService {
		opts = append(opts, libp2p.EnableRelayService(relayv2.WithResources(relayResources())))
	}
	if cfg.RelayClient {
		opts = append(opts, libp2p.EnableAutoRelayWithPeerSource(p.relayCandidates,
			autorelay.WithMinCandidates(1),
			autorelay.WithNumRelays(2),
			autorelay.WithBootDelay(0),
			autorelay.WithBackoff(time.Minute),
			autorelay.WithMinInterval(10*time.Second),
		))
	}
	if cfg.Reachability != "private" {
		// The AutoNAT v1 service: it answers other peers' probes only
		// while this peer is not forced private, and with a forced
		// private reachability libp2p would still start (and never
		// close) the dialer it probes with.
		opts = append(opts, libp2p.EnableNATService())
	}
	switch cfg.Reachability {
	case "public":
		opts = append(opts, libp2p.ForceReachabilityPublic())
	case "private":
		opts = append(opts, libp2p.ForceReachabilityPrivate())
	}
	if cfg.NAT {
		opts = append(opts, libp2p.NATPortMap())
	}
	if len(cfg.SwarmKey) > 0 {
		psk, err := DecodeSwarmKey(cfg.SwarmKey)
		if err != nil {
			return nil, err
		}
		var tcpOnly []string
		for _, a := range listen {
			if strings.Contains(a, "/udp/") {
				cfg.Logger.Warn("private network: dropping a non-TCP listen address (QUIC cannot carry a pre-shared key)", "addr", a)
				continue
			}
			tcpOnly = append(tcpOnly, a)
		}
		listen = tcpOnly
		opts = append(opts, libp2p.PrivateNetwork(psk), libp2p.NoTransports, libp2p.Transport(tcp.NewTCPTransport))
	}
	addrs := make([]ma.Multiaddr, 0, len(listen))
	for _, a := range listen {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return nil, fmt.Errorf("listen address %q: %w", a, err)
		}
		if err := checkPortFree(m); err != nil {
			return nil, err
		}
		addrs = append(addrs, m)
	}
	// Listen during construction, so that nothing (AutoRelay, say) dials
	// before the listeners exist: a QUIC dial then leaves from the listen
	// port, which hole punching and port-preserving NATs need. libp2p.New
	// fails only when every listen address fails, so check each after.
	opts = append(opts, libp2p.ListenAddrs(addrs...))
	if len(addrs) == 0 {
		opts = append(opts, libp2p.NoListenAddrs)
	}
	opts = append(opts, cfg.HostOptions...)
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("libp2p host: %w", err)
	}
	got := h.Network().ListenAddresses()
	for _, a := range addrs {
		if !slices.ContainsFunc(got, func(l ma.Multiaddr) bool { return sameListen(a, l) }) {
			h.Close()
			return nil, fmt.Errorf("libp2p listen %s failed (address in use?); listening on %v", a, got)
		}
	}
	return h, nil
}

// sameListen reports whether listener l serves the listen address a: the
// same protocols and values, except a port 0 in a, which l has chosen.
func sameListen(a, l ma.Multiaddr) bool {
	if len(a) != len(l) {
		return false
	}
	for i := range a {
		if a[i].Protocol().Code != l[i].Protocol().Code {
			return false
		}
		code := a[i].Protocol().Code
		if (code == ma.P_TCP || code == ma.P_UDP) && a[i].Value() == "0" {
			continue
		}
		if a[i].Value() != l[i].Value() {
			return false
		}
	}
	return true
}

// checkPortFree fails if a TCP listen address with a fixed port is in use
// by another socket. libp2p's TCP transport listens with SO_REUSEPORT, so
// that its dials leave from the listen port (which TCP hole punching and
// port-preserving NATs need), and so would share a port another process
// holds, each getting part of the incoming connections. A plain bind,
// without SO_REUSEPORT, fails on a port held by anyone. (go-libp2p's
// tcp.DisableReuseport, or LIBP2P_TCP_REUSEPORT=false, would catch the
// clash too, at the cost of TCP hole punching.) QUIC binds its UDP port
// without SO_REUSEPORT and fails by itself; the probe only makes the
// error say why.
func checkPortFree(a ma.Multiaddr) error {
	network, addr, err := manet.DialArgs(a)
	if err != nil || strings.HasSuffix(addr, ":0") {
		return nil // not a plain TCP or UDP address, or any port will do
	}
	var c io.Closer
	switch network {
	case "tcp", "tcp4", "tcp6":
		c, err = net.Listen(network, addr)
	case "udp", "udp4", "udp6":
		c, err = net.ListenPacket(network, addr)
	default:
		return nil
	}
	if err == nil {
		return c.Close()
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("libp2p listen %s: %w", a, err)
	}
	return nil // another failure: libp2p's own listen reports it
}
