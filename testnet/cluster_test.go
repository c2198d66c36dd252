package testnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCluster_RestartKeepsAddresses stops and restarts every peer, peer 0
// included, with SIGTERM and SIGKILL: each comes back on the same HTTP
// address and multiaddr with the same replica, and the cluster converges.
func TestCluster_RestartKeepsAddresses(t *testing.T) {
	skipShort(t)
	seed := seedFor(t)
	c := Start(t, Options{Binary: Build(t), N: 3, Seed: seed})
	ctx := ctxFor(t, 60*time.Second)
	before := c.Peers()
	for i := range 3 {
		if r := c.Client(i).Add(ctx, testColl, fmt.Sprintf("r%d", i), nil); r.Outcome != OK {
			t.Fatalf("add: %+v", r)
		}
	}
	if err := c.Stop(0); err != nil {
		t.Fatal(err)
	}
	if err := c.Kill(2); err != nil {
		t.Fatal(err)
	}
	if r := c.Client(0).Add(ctx, testColl, "to-stopped", nil); r.Outcome != Failed || !r.Down() {
		t.Errorf("a write to a stopped peer: %+v, want a failure without an answer", r)
	}
	for _, i := range []int{0, 2} {
		if err := c.Restart(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range c.Peers() {
		if p.HTTP != before[i].HTTP || p.Addr != before[i].Addr || p.Replica != before[i].Replica {
			t.Errorf("peer %d after restart: %s %s %s, want %s %s %s", i, p.HTTP, p.Addr, p.Replica, before[i].HTTP, before[i].Addr, before[i].Replica)
		}
	}
	if err := c.AwaitConnected(ctx, 2); err != nil {
		t.Error(err)
	}
	checkAll(t, c, converge(t, c, 60*time.Second), nil)
}

// TestCluster_PartitionNeedsNetns pins that loopback mode refuses
// partitions instead of pretending.
func TestCluster_PartitionNeedsNetns(t *testing.T) {
	skipShort(t)
	c := Start(t, Options{Binary: Build(t), N: 1, Seed: seedFor(t)})
	if err := c.Partition([]int{0}); !errors.Is(err, ErrNoPartition) {
		t.Errorf("Partition in loopback mode: %v, want ErrNoPartition", err)
	}
	if err := c.Heal(); !errors.Is(err, ErrNoPartition) {
		t.Errorf("Heal in loopback mode: %v, want ErrNoPartition", err)
	}
}

// leftovers lists the namespaces and links of cluster number k.
func leftovers(t *testing.T, k int) []string {
	t.Helper()
	var out []string
	ns, _ := ipOutput("netns", "list")
	links, _ := ipOutput("-o", "link", "show")
	for _, l := range append(strings.Split(ns, "\n"), strings.Split(links, "\n")...) {
		for _, name := range strings.Fields(strings.ReplaceAll(l, ":", " ")) {
			name = strings.SplitN(name, "@", 2)[0]
			if strings.HasPrefix(name, fmt.Sprintf("%s%d-", netnsPrefix, k)) || strings.HasPrefix(name, fmt.Sprintf("%s%dv", netnsPrefix, k)) || name == fmt.Sprintf("%sbr%d", netnsPrefix, k) {
				out = append(out, name)
			}
		}
	}
	return out
}

// leftBehind returns the names that the closed cluster K of process owner
// left behind (see leftovers). Other harnesses on this machine (other
// test runs) may take K as soon as its bridge is gone; then the names are
// theirs and nothing is left of owner's cluster: it returns nil. It looks
// again for up to 2 s, since a harness creates its bridge a moment before
// it writes the bridge's owner file.
func leftBehind(t *testing.T, k, owner int) []string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		got := leftovers(t, k)
		if len(got) == 0 || takenByAnother(k, owner) {
			return nil
		}
		if time.Now().After(deadline) {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// takenByAnother reports whether cluster K's bridge belongs to a live
// process other than owner, by its owner file.
func takenByAnother(k, owner int) bool {
	b, err := os.ReadFile(ownerFile(fmt.Sprintf("%sbr%d", netnsPrefix, k)))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return false
	}
	pid, err := strconv.Atoi(f[0])
	return err == nil && pid != owner && ProcStart(pid) == f[1]
}

// TestCluster_NetnsCleanup checks that Close removes every namespace,
// veth pair and the bridge, partition routes included.
func TestCluster_NetnsCleanup(t *testing.T) {
	skipShort(t)
	if err := NetnsAvailable(); err != nil {
		t.Skipf("skipped: netns mode unavailable here: %v", err)
	}
	c, err := Launch(context.Background(), Options{Binary: Build(t), N: 2, Netns: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	k := c.netns.k
	if got := leftovers(t, k); len(got) < 5 {
		t.Errorf("while up: %v, want 2 namespaces, 2 veths and a bridge", got)
	}
	if err := c.Partition([]int{0}, []int{1}); err != nil {
		t.Error(err)
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}
	if got := leftBehind(t, k, os.Getpid()); len(got) > 0 {
		t.Errorf("after Close: %v left", got)
	}
	if _, err := os.Stat(ownerFile(fmt.Sprintf("%sbr%d", netnsPrefix, k))); !os.IsNotExist(err) && !takenByAnother(k, os.Getpid()) {
		t.Errorf("owner file left: %v", err)
	}
}

// TestCluster_InterruptCleansUp runs a cluster in a child process (this
// test binary), interrupts it with SIGINT, and checks that the peers are
// gone and, in netns mode, the namespaces too.
func TestCluster_InterruptCleansUp(t *testing.T) {
	if os.Getenv("TESTNET_HELPER") != "interrupt" {
		skipShort(t)
	}
	if os.Getenv("TESTNET_HELPER") == "interrupt" {
		helperCluster()
		return
	}
	bin := Build(t)
	netns := NetnsAvailable() == nil
	cmd := exec.Command(os.Args[0], "-test.run=^TestCluster_InterruptCleansUp$")
	cmd.Env = append(os.Environ(), "TESTNET_HELPER=interrupt", "TESTNET_BIN="+bin, "TESTNET_HELPER_NETNS="+strconv.FormatBool(netns))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) > 0 && f[0] == "READY" {
				ready <- f[1:]
			}
		}
		close(ready)
	}()
	var f []string
	select {
	case f = <-ready:
	case <-time.After(90 * time.Second):
		t.Fatal("the child did not start its cluster within 90s")
	}
	if len(f) < 2 {
		t.Fatalf("child: %v", f)
	}
	k, _ := strconv.Atoi(f[0])
	dir := f[1]
	pids := f[2:]
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the child did not exit within 30s of SIGINT")
	}
	for _, p := range pids {
		pid, _ := strconv.Atoi(p)
		if ProcStart(pid) != "" {
			t.Errorf("peer pid %d still runs", pid)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("cluster directory %s left: %v", dir, err)
	}
	if netns {
		if got := leftBehind(t, k, cmd.Process.Pid); len(got) > 0 {
			t.Errorf("namespaces and links left: %v", got)
		}
	} else {
		t.Log("netns unavailable: checked the peers and the directory only")
	}
}

// helperCluster is the child of TestCluster_InterruptCleansUp: it starts a
// cluster, prints "READY k dir pids...", and waits (at most a minute) for
// the signal that CloseOnSignal handles.
func helperCluster() {
	netns := os.Getenv("TESTNET_HELPER_NETNS") == "true"
	c, err := Launch(context.Background(), Options{Binary: os.Getenv("TESTNET_BIN"), N: 2, Netns: netns})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	k := -1
	if c.netns != nil {
		k = c.netns.k
		if err := c.Partition([]int{0}, []int{1}); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
		}
	}
	line := fmt.Sprintf("READY %d %s", k, c.Dir())
	for _, p := range c.Peers() {
		line += fmt.Sprintf(" %d", p.PID)
	}
	fmt.Println(line)
	time.Sleep(time.Minute)
	c.Close()
	os.Exit(3)
}
