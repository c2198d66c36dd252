package testnet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// NAT topology, every address inside namespaces the harness creates:
//
//	public segment 10.253.0.0/24 (bridge ctn<K>pub, no address in the root namespace)
//	  B  10.253.0.10     C  10.253.0.11
//	  NAT1 wan 10.253.0.101 ── lan 192.168.1.1 ── home1 bridge ── P1 192.168.1.2
//	  NAT2 wan 10.253.0.102 ── lan 192.168.2.1 ── home2 bridge ── P2 192.168.2.2
//
// Every namespace also has eth0 on the cluster's management bridge
// (newNetns: 10.252.K.0/24), where the harness reaches the HTTP APIs; no
// libp2p address is on it, and no namespace routes anything else there.
// The NAT routers masquerade what leaves their wan interface, with
// nftables rules written over netlink (github.com/google/nftables): no
// iptables or nft binary is needed, only a kernel with nf_tables.

// NAT kinds.
const (
	// NATPreserving keeps a mapping's source port where it can (plain
	// masquerade), as most home routers do: hole punching works.
	NATPreserving = "port-preserving"
	// NATRandomising picks a random source port for every mapping
	// (masquerade random-fully), a "symmetric" NAT: hole punching fails.
	NATRandomising = "port-randomising"
)

// The NAT topology's namespaces, by index on the management network.
const (
	NATNodeB = iota
	NATNodeC
	NATRouter1
	NATRouter2
	NATNodeP1
	NATNodeP2
	natNodes
)

// natLink is one data interface: namespace index, interface name, the
// bridge it joins and its address.
type natLink struct {
	node   int
	ifname string
	bridge string // "pub", "h1" or "h2"
	cidr   string
}

// natBridges are the data bridges, named ctn<K><name>; netnsNet.close
// deletes them with the cluster's other links, so the reaper removes them
// too.
var natBridges = []string{"pub", "h1", "h2"}

var natLinks = []natLink{
	{NATNodeB, "pub0", "pub", "10.253.0.10/24"},
	{NATNodeC, "pub0", "pub", "10.253.0.11/24"},
	{NATRouter1, "wan", "pub", "10.253.0.101/24"},
	{NATRouter1, "lan", "h1", "192.168.1.1/24"},
	{NATRouter2, "wan", "pub", "10.253.0.102/24"},
	{NATRouter2, "lan", "h2", "192.168.2.1/24"},
	{NATNodeP1, "home", "h1", "192.168.1.2/24"},
	{NATNodeP2, "home", "h2", "192.168.2.2/24"},
}

// NATDataIP is the libp2p address of each node of the topology.
var NATDataIP = map[int]string{
	NATNodeB: "10.253.0.10", NATNodeC: "10.253.0.11",
	NATNodeP1: "192.168.1.2", NATNodeP2: "192.168.2.2",
}

// NATNet is the NAT topology's network: namespaces, bridges, routes and
// the routers' masquerade rules. Its methods are not safe for concurrent
// use.
type NATNet struct {
	mgmt  *netnsNet
	holes map[int][]string // router index: blackholed destinations
}

// NewNATNet builds the topology with the given NAT kinds for the two
// homes. It fails (callers skip) where namespaces cannot be made. Close
// removes everything.
func NewNATNet(nat1, nat2 string) (*NATNet, error) {
	mgmt, err := newNetns()
	if err != nil {
		return nil, err
	}
	n := &NATNet{mgmt: mgmt, holes: map[int][]string{}}
	if err := n.build(nat1, nat2); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *NATNet) bridge(name string) string {
	return fmt.Sprintf("%s%d%s", netnsPrefix, n.mgmt.k, name)
}

// NS returns node i's namespace.
func (n *NATNet) NS(i int) string { return n.mgmt.ns(i) }

// MgmtIP returns node i's address on the management network.
func (n *NATNet) MgmtIP(i int) string { return n.mgmt.ip(i) }

func (n *NATNet) build(nat1, nat2 string) error {
	for _, b := range natBridges {
		name := n.bridge(b)
		if err := ipCmd("link", "add", name, "type", "bridge"); err != nil {
			return err
		}
		if err := ipCmd("link", "set", name, "up"); err != nil {
			return err
		}
	}
	for i := range natNodes {
		if err := n.mgmt.addPeer(i); err != nil {
			return err
		}
	}
	for j, l := range natLinks {
		host := fmt.Sprintf("%s%dd%d", netnsPrefix, n.mgmt.k, j)
		ns := n.NS(l.node)
		for _, args := range [][]string{
			{"link", "add", host, "type", "veth", "peer", "name", l.ifname, "netns", ns},
			{"link", "set", host, "master", n.bridge(l.bridge), "up"},
			{"-n", ns, "addr", "add", l.cidr, "dev", l.ifname},
			{"-n", ns, "link", "set", l.ifname, "up"},
		} {
			if err := ipCmd(args...); err != nil {
				return err
			}
		}
	}
	for _, r := range []struct {
		node, router int
		gw           string
		kind         string
	}{{NATNodeP1, NATRouter1, "192.168.1.1", nat1}, {NATNodeP2, NATRouter2, "192.168.2.1", nat2}} {
		if err := ipCmd("-n", n.NS(r.node), "route", "add", "default", "via", r.gw, "dev", "home"); err != nil {
			return err
		}
		if err := nsSysctl(n.NS(r.router), "net/ipv4/ip_forward", "1"); err != nil {
			return err
		}
		if err := masquerade(n.NS(r.router), "wan", r.kind == NATRandomising); err != nil {
			return fmt.Errorf("masquerade in %s: %w", n.NS(r.router), err)
		}
	}
	return nil
}

// nsSysctl sets a sysctl inside a namespace (through ip netns exec, which
// mounts the namespace's /proc/sys).
func nsSysctl(ns, key, val string) error {
	return ipCmd("netns", "exec", ns, "sh", "-c", fmt.Sprintf("echo %s > /proc/sys/%s", val, key))
}

// masquerade makes ns masquerade what leaves ifname: port-preserving, or
// with fully random source ports.
func masquerade(ns, ifname string, random bool) error {
	f, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		return err
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		return err
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "nat"})
	ch := c.AddChain(&nftables.Chain{
		Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	})
	name := make([]byte, 16)
	copy(name, ifname)
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
		&expr.Masq{FullyRandom: random},
	}})
	return c.Flush()
}

// Partition cuts home h (1 or 2) off the public segment: its router drops
// (silently, as a dead link does) everything to and from the public
// nodes and the other router.
func (n *NATNet) Partition(h int) error {
	router := NATRouter1
	if h == 2 {
		router = NATRouter2
	}
	var lines []string
	for _, ip := range []string{"10.253.0.10", "10.253.0.11", "10.253.0.101", "10.253.0.102"} {
		lines = append(lines, "route add blackhole "+ip+"/32")
		n.holes[router] = append(n.holes[router], ip)
	}
	return ipStdin([]byte(joinLines(lines)), "-n", n.NS(router), "-batch", "-")
}

// Heal removes every partition.
func (n *NATNet) Heal() error {
	var errs []error
	for r, ips := range n.holes {
		var lines []string
		for _, ip := range ips {
			lines = append(lines, "route del blackhole "+ip+"/32")
		}
		if err := ipStdin([]byte(joinLines(lines)), "-n", n.NS(r), "-batch", "-"); err != nil {
			errs = append(errs, err)
		}
		delete(n.holes, r)
	}
	return errors.Join(errs...)
}

func joinLines(lines []string) string {
	s := ""
	for _, l := range lines {
		s += l + "\n"
	}
	return s
}

// Close removes the namespaces (and with them the veths, routes and
// rules), the data bridges and the management bridge. Call it after the
// processes inside have exited.
func (n *NATNet) Close() error {
	return n.mgmt.close() // deletes the data bridges too (natBridges)
}
