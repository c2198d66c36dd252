package p2p

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
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

// newHost builds the libp2p host: the identity, the listeners, the
// connection manager, hole punching and the relay client, port mapping if
// asked, and a private network if a swarm key is set (TCP only: QUIC cannot
// carry a pre-shared key, so QUIC listen addresses are dropped).
func newHost(cfg *Config, bw metrics.Reporter) (host.Host, error) {
	key, err := LoadIdentity(cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	cm, err := connmgr.NewConnManager(cfg.ConnLow, cfg.ConnHigh)
	if err != nil {
		return nil, err
	}
	listen := cfg.Listen
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ConnectionManager(cm),
		libp2p.EnableHolePunching(),
		libp2p.EnableRelay(),
		libp2p.UserAgent("crdt-catalog"),
		libp2p.BandwidthReporter(bw),
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
	opts = append(opts, libp2p.ListenAddrStrings(listen...))
	if len(listen) == 0 {
		opts = append(opts, libp2p.NoListenAddrs)
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("libp2p host: %w", err)
	}
	return h, nil
}
