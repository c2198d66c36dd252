package testnet

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Names and addresses of the namespace network. Every name the harness
// creates starts with "ctn" (crdt testnet), and every address lies in
// 10.252.0.0/16: cluster K gets the bridge ctnbrK with 10.252.K.1/24 in the
// root namespace, and peer i the namespace ctnK-i whose eth0 (the far end of
// the veth pair ctnKvi) holds 10.252.K.(i+2).
const (
	netnsPrefix  = "ctn"
	netnsSubnet  = "10.252"
	netnsMaxPeer = 250
	ownerDir     = "/run/crdt-testnet" // one file per bridge: owner pid and start time
	nsHTTPPort   = 8080
	nsP2PPort    = 4101
)

// ErrNoPartition is returned by Partition and Heal in loopback mode: cutting
// traffic between processes that share the loopback interface would need
// firewall rules on the machine's own loopback, which the harness does not
// touch. Use Options.Netns.
var ErrNoPartition = errors.New("testnet: partitions need netns mode (Options.Netns)")

var (
	netnsOnce sync.Once
	netnsErr  error
)

// NetnsAvailable reports whether netns mode can run here: it needs root
// and iproute2's ip, and it probes once per process by creating (and
// removing) a namespace with a veth pair. The error says what is missing.
func NetnsAvailable() error {
	netnsOnce.Do(func() { netnsErr = probeNetns() })
	return netnsErr
}

func probeNetns() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("netns mode needs root (running as uid %d)", os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("netns mode needs iproute2's ip: %v (apt-get install iproute2)", err)
	}
	ns := fmt.Sprintf("%sprobe%d", netnsPrefix, os.Getpid())
	veth := fmt.Sprintf("%sp%d", netnsPrefix, os.Getpid()%100000)
	if err := ipCmd("netns", "add", ns); err != nil {
		return fmt.Errorf("netns mode: %w", err)
	}
	defer func() { _ = ipCmd("netns", "del", ns) }()
	if err := ipCmd("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns); err != nil {
		return fmt.Errorf("netns mode: %w", err)
	}
	return ipCmd("link", "del", veth)
}

// ipCmd runs ip with args and returns its output in the error.
func ipCmd(args ...string) error {
	return ipStdin(nil, args...)
}

func ipStdin(stdin []byte, args ...string) error {
	cmd := exec.Command("ip", args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func ipOutput(args ...string) (string, error) {
	out, err := exec.Command("ip", args...).Output()
	if err != nil {
		return "", fmt.Errorf("ip %s: %v", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// netnsNet is one cluster's namespace network. Its methods are called with
// the cluster's control lock held.
type netnsNet struct {
	k      int
	bridge string
	peers  map[int]bool     // peers whose namespace exists
	holes  map[int][]string // per peer: addresses blackholed in its namespace
}

func (n *netnsNet) ns(i int) string   { return fmt.Sprintf("%s%d-%d", netnsPrefix, n.k, i) }
func (n *netnsNet) veth(i int) string { return fmt.Sprintf("%s%dv%d", netnsPrefix, n.k, i) }
func (n *netnsNet) ip(i int) string   { return fmt.Sprintf("%s.%d.%d", netnsSubnet, n.k, i+2) }
func (n *netnsNet) hostIP() string    { return fmt.Sprintf("%s.%d.1", netnsSubnet, n.k) }
func ownerFile(bridge string) string  { return filepath.Join(ownerDir, bridge) }

// newNetns allocates a free cluster number K by creating its bridge (the
// creation is atomic, so concurrent harnesses never share one), after
// removing what dead harnesses left behind.
func newNetns() (*netnsNet, error) {
	if err := NetnsAvailable(); err != nil {
		return nil, err
	}
	reapStale()
	used := usedSubnets()
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		return nil, err
	}
	for k := range 255 {
		if used[k] {
			continue
		}
		n := &netnsNet{k: k, bridge: fmt.Sprintf("%sbr%d", netnsPrefix, k), peers: map[int]bool{}, holes: map[int][]string{}}
		if err := ipCmd("link", "add", n.bridge, "type", "bridge"); err != nil {
			if strings.Contains(err.Error(), "File exists") {
				continue
			}
			return nil, err
		}
		owner := fmt.Sprintf("%d %s\n", os.Getpid(), ProcStart(os.Getpid()))
		if err := os.WriteFile(ownerFile(n.bridge), []byte(owner), 0o644); err != nil {
			_ = ipCmd("link", "del", n.bridge)
			return nil, err
		}
		for _, args := range [][]string{
			{"addr", "add", n.hostIP() + "/24", "dev", n.bridge},
			{"link", "set", n.bridge, "up"},
		} {
			if err := ipCmd(args...); err != nil {
				n.close()
				return nil, err
			}
		}
		return n, nil
	}
	return nil, fmt.Errorf("testnet: no free subnet in %s.0.0/16", netnsSubnet)
}

// usedSubnets returns the K of every 10.252.K.0/24 that an interface other
// than the harness's own bridges already uses.
func usedSubnets() map[int]bool {
	used := map[int]bool{}
	ifs, err := net.Interfaces()
	if err != nil {
		return used
	}
	for _, ifc := range ifs {
		if strings.HasPrefix(ifc.Name, netnsPrefix) {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.To4() == nil {
				continue
			}
			ip := ipn.IP.To4()
			ones, _ := ipn.Mask.Size()
			switch {
			case ip[0] == 10 && ip[1] == 252 && ones >= 16:
				used[int(ip[2])] = true
			case ones < 16 && ipn.Contains(net.IPv4(10, 252, 0, 0)):
				for k := range 256 {
					used[k] = true
				}
			}
		}
	}
	return used
}

// addPeer creates peer i's namespace, joined to the bridge by a veth pair.
func (n *netnsNet) addPeer(i int) error {
	if i > netnsMaxPeer {
		return fmt.Errorf("testnet: netns mode supports at most %d peers", netnsMaxPeer+1)
	}
	ns, veth := n.ns(i), n.veth(i)
	if err := ipCmd("netns", "add", ns); err != nil {
		return err
	}
	n.peers[i] = true
	for _, args := range [][]string{
		{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"link", "set", veth, "master", n.bridge, "up"},
		{"-n", ns, "addr", "add", n.ip(i) + "/24", "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	} {
		if err := ipCmd(args...); err != nil {
			return err
		}
	}
	return nil
}

// partition blackholes, in each peer's namespace, the addresses of every
// peer in another group: packets between groups are dropped at the sender,
// in both directions, while the harness (on the bridge's address) still
// reaches every peer. groupOf maps every peer to its group.
func (n *netnsNet) partition(groupOf map[int]int) error {
	if err := n.heal(); err != nil {
		return err
	}
	for a := range n.peers {
		var lines []string
		for b := range n.peers {
			if a != b && groupOf[a] != groupOf[b] {
				lines = append(lines, "route add blackhole "+n.ip(b)+"/32")
				n.holes[a] = append(n.holes[a], n.ip(b))
			}
		}
		if len(lines) == 0 {
			continue
		}
		if err := ipStdin([]byte(strings.Join(lines, "\n")+"\n"), "-n", n.ns(a), "-batch", "-"); err != nil {
			return err
		}
	}
	return nil
}

// heal removes every blackhole route partition added.
func (n *netnsNet) heal() error {
	var errs []error
	for a, ips := range n.holes {
		var lines []string
		for _, ip := range ips {
			lines = append(lines, "route del blackhole "+ip+"/32")
		}
		if err := ipStdin([]byte(strings.Join(lines, "\n")+"\n"), "-n", n.ns(a), "-batch", "-"); err != nil {
			errs = append(errs, err)
		}
		delete(n.holes, a)
	}
	return errors.Join(errs...)
}

// close removes every namespace, veth pair and the bridge; deleting a
// namespace also drops the routes inside it. Call it after the peers'
// processes have exited.
func (n *netnsNet) close() error {
	var errs []error
	for i := range n.peers {
		_ = ipCmd("link", "del", n.veth(i)) // gone already if the namespace went first
		if err := ipCmd("netns", "del", n.ns(i)); err != nil {
			errs = append(errs, err)
		}
		delete(n.peers, i)
	}
	if err := ipCmd("link", "del", n.bridge); err != nil {
		errs = append(errs, err)
	}
	for _, b := range natBridges { // the NAT topology's, if any
		_ = ipCmd("link", "del", fmt.Sprintf("%s%d%s", netnsPrefix, n.k, b))
	}
	_ = os.Remove(ownerFile(n.bridge))
	return errors.Join(errs...)
}

var bridgeRE = regexp.MustCompile(`^` + netnsPrefix + `br(\d+)$`)

// reapStale removes the namespaces, veth pairs and bridges of harnesses
// that died without cleaning up (a test binary killed by its timeout, say):
// those whose owner file names a process that no longer runs. Processes
// still inside such a namespace are the dead harness's peers; they are
// killed by pid first. Best effort: failures are ignored.
func reapStale() {
	out, err := ipOutput("-o", "link", "show", "type", "bridge")
	if err != nil {
		return
	}
	nsList, _ := ipOutput("netns", "list")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":")
		m := bridgeRE.FindStringSubmatch(name)
		if m == nil || ownerAlive(name) {
			continue
		}
		k, _ := strconv.Atoi(m[1])
		n := &netnsNet{k: k, bridge: name, peers: map[int]bool{}, holes: map[int][]string{}}
		for _, nl := range strings.Split(nsList, "\n") {
			nf := strings.Fields(nl)
			if len(nf) == 0 || !strings.HasPrefix(nf[0], fmt.Sprintf("%s%d-", netnsPrefix, k)) {
				continue
			}
			i, err := strconv.Atoi(strings.TrimPrefix(nf[0], fmt.Sprintf("%s%d-", netnsPrefix, k)))
			if err != nil {
				continue
			}
			if pids, err := ipOutput("netns", "pids", nf[0]); err == nil {
				for _, p := range strings.Fields(pids) {
					if pid, err := strconv.Atoi(p); err == nil {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			}
			n.peers[i] = true
		}
		_ = n.close()
	}
}

// ownerAlive reports whether the harness that created bridge still runs.
// A bridge without an owner file is being set up by a live harness (the
// file is written right after the bridge is created) and counts as alive.
func ownerAlive(bridge string) bool {
	b, err := os.ReadFile(ownerFile(bridge))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return false
	}
	return ProcStart(pid) == f[1]
}

// ProcStart returns the start time of process pid (field 22 of
// /proc/pid/stat), or "" if it does not exist or is a zombie (a dead
// harness whose parent has not reaped it yet). With the pid it names one
// process even after the pid is reused.
func ProcStart(pid int) string {
	if pid <= 0 {
		return ""
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || f[0] == "Z" {
		return ""
	}
	return f[19] // fields after the command start at field 3
}

// RemoveStale removes the namespaces, veth pairs and bridges left behind
// by harness processes that died without cleaning up (see netns mode in
// the package comment). Those of live harnesses are left alone. Best
// effort; it does nothing without root or iproute2.
func RemoveStale() {
	if NetnsAvailable() == nil {
		reapStale()
	}
}
