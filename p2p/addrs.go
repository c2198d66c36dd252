package p2p

import (
	"fmt"
	"net"
	"slices"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// addrPolicy decides which of the host's addresses are advertised to other
// peers: in identify, in the signed peer record and so in DHT records. It
// is the libp2p AddrsFactory; a pure function of its input, tested
// without a host.
type addrPolicy struct {
	announce, appendAddrs []ma.Multiaddr
	noAnnounce            []*net.IPNet
	wan                   bool // advertise public addresses only
}

// addrPolicy parses the announce settings of c.
func (c *Config) addrPolicy() (*addrPolicy, error) {
	p := &addrPolicy{wan: c.Profile == ProfileWAN}
	parse := func(what string, ss []string) ([]ma.Multiaddr, error) {
		var out []ma.Multiaddr
		for _, s := range ss {
			a, err := ma.NewMultiaddr(s)
			if err != nil {
				return nil, fmt.Errorf("p2p config: %s %q: %w", what, s, err)
			}
			out = append(out, a)
		}
		return out, nil
	}
	var err error
	if p.announce, err = parse("Announce", c.Announce); err != nil {
		return nil, err
	}
	if p.appendAddrs, err = parse("AnnounceAppend", c.AnnounceAppend); err != nil {
		return nil, err
	}
	for _, s := range c.NoAnnounce {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("p2p config: NoAnnounce %q: want a CIDR prefix such as 10.0.0.0/8: %w", s, err)
		}
		p.noAnnounce = append(p.noAnnounce, n)
	}
	return p, nil
}

// isCircuit reports whether a is a relay (/p2p-circuit) address.
func isCircuit(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

// ipOf returns a's leading IP address, or nil if it starts with none (a
// DNS name, say).
func ipOf(a ma.Multiaddr) net.IP {
	if len(a) == 0 {
		return nil
	}
	switch a[0].Protocol().Code {
	case ma.P_IP4, ma.P_IP6:
		return net.IP(a[0].RawValue())
	}
	return nil
}

// filter returns the addresses to advertise, from the host's own (listen
// addresses, observed public addresses, relay addresses). It never returns
// its input slice.
//
//   - Announce, if set, replaces the direct addresses; relay addresses stay.
//   - AnnounceAppend is added.
//   - Loopback addresses are dropped unless nothing but loopback is left:
//     a peer that listens on loopback only can be reached from this
//     machine only, and advertising it there is right.
//   - With the WAN profile, addresses outside the public ranges are
//     dropped, unless announced explicitly: relay addresses through a relay
//     at a private address are dropped too (nobody across the internet can
//     use them).
//   - NoAnnounce prefixes are dropped, announced addresses included.
func (p *addrPolicy) filter(addrs []ma.Multiaddr) []ma.Multiaddr {
	explicit := append(slices.Clone(p.announce), p.appendAddrs...)
	var out []ma.Multiaddr
	if len(p.announce) > 0 {
		for _, a := range addrs {
			if isCircuit(a) {
				out = append(out, a)
			}
		}
	} else {
		out = slices.Clone(addrs)
	}
	onlyLoopback := !slices.ContainsFunc(append(slices.Clone(out), explicit...), func(a ma.Multiaddr) bool {
		return !manet.IsIPLoopback(a)
	})
	if !onlyLoopback {
		out = slices.DeleteFunc(out, func(a ma.Multiaddr) bool {
			return manet.IsIPLoopback(a) || (p.wan && ipOf(a) != nil && !manet.IsPublicAddr(a))
		})
	}
	out = append(out, explicit...)
	if len(p.noAnnounce) > 0 {
		out = slices.DeleteFunc(out, func(a ma.Multiaddr) bool {
			ip := ipOf(a)
			return ip != nil && slices.ContainsFunc(p.noAnnounce, func(n *net.IPNet) bool { return n.Contains(ip) })
		})
	}
	return out
}

// dhtFilter is the DHT's address filter with the WAN profile: addresses
// other peers hand out (in provider records and closer-peer answers) that
// are private or loopback are dropped before they are stored or dialled,
// so a peer never spends a dial timeout on one.
func dhtFilter(addrs []ma.Multiaddr) []ma.Multiaddr {
	return slices.DeleteFunc(slices.Clone(addrs), func(a ma.Multiaddr) bool {
		return ipOf(a) != nil && !manet.IsPublicAddr(a)
	})
}
