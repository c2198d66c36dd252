package testnet

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// BootstrapMode says whom a peer dials at its first start.
type BootstrapMode int

const (
	// BootstrapPrevious: peer i dials every peer j < i (a full mesh of
	// bootstrap links, each dialled from one side only).
	BootstrapPrevious BootstrapMode = iota
	// BootstrapFirst: every peer but the first dials peer 0 only; the
	// others are found through the DHT (if on) or the gossip mesh.
	BootstrapFirst
)

// Options configure Launch. Zero values take the defaults documented on
// each field.
type Options struct {
	// Binary is the crdt-catalog executable, from Build. Required.
	Binary string
	// N is the number of peers to start. At least 1.
	N int
	// Dir holds each peer's data directory and log file. Default: a new
	// temporary directory, removed by Close unless Keep.
	Dir string
	// Keep leaves Dir in place after Close (for reading logs).
	Keep bool
	// Netns runs every peer in a network namespace of its own on a bridge
	// (needs root and iproute2; see NetnsAvailable), which makes Partition
	// possible. Default: all peers on 127.0.0.1.
	Netns bool
	// Bootstrap chooses whom each peer dials at its first start. Default
	// BootstrapPrevious.
	Bootstrap BootstrapMode
	// Network is the catalog network name (-network). Default "testnet".
	Network string
	// DHT turns on the peers' Kademlia discovery (-dht). Default off.
	DHT bool
	// Args are extra flags for every peer, after the harness's own.
	Args []string
	// StartTimeout bounds a peer's start until it logs its addresses.
	// Default 30s.
	StartTimeout time.Duration
	// StopTimeout bounds the exit after SIGTERM. Default 10s (the binary
	// promises to exit within it).
	StopTimeout time.Duration
	// RequestTimeout bounds one HTTP request of the Client when the
	// caller's context has no earlier deadline. Default 5s.
	RequestTimeout time.Duration
	// PollInterval is AwaitConverged's pace. Default 25ms.
	PollInterval time.Duration
	// Seed is recorded in the history so that failure reports say how to
	// replay; the cluster itself draws nothing from it.
	Seed int64
	// Logf receives one line per harness event (start, stop, partition).
	// Default: discard.
	Logf func(format string, args ...any)
}

func (o *Options) fill() error {
	if o.Binary == "" {
		return errors.New("testnet: Options.Binary is required (see Build)")
	}
	if o.N < 1 {
		return fmt.Errorf("testnet: Options.N must be at least 1, got %d", o.N)
	}
	if o.Network == "" {
		o.Network = "testnet"
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 30 * time.Second
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 10 * time.Second
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = 5 * time.Second
	}
	if o.PollInterval == 0 {
		o.PollInterval = 25 * time.Millisecond
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return nil
}

// PeerState is a peer process's state as the harness drove it.
type PeerState int

// The peer states.
const (
	Stopped PeerState = iota // not running (never started, stopped, killed or crashed)
	Running
	Paused // SIGSTOP
)

// String returns "stopped", "running" or "paused".
func (s PeerState) String() string {
	return [...]string{"stopped", "running", "paused"}[s]
}

// PeerInfo describes one peer at the moment it was asked for.
type PeerInfo struct {
	Index       int
	State       PeerState
	HTTP        string // base URL, e.g. http://127.0.0.1:41234
	Addr        string // libp2p multiaddr ending in /p2p/<peer id>
	PeerID      string
	Replica     string // replica ID the process logged at its last start
	PID         int    // 0 unless running or paused
	Incarnation int    // times the store was wiped
	DataDir     string
	Log         string // log file (every start appends to it)
	Namespace   string // netns mode only
}

// peer is the harness's record of one peer. Fields are guarded by
// Cluster.mu; cmd and done change only under Cluster.ctl as well.
type peer struct {
	index              int
	dataDir, logPath   string
	host               string // IP the peer binds to
	httpPort, p2pPort  int
	base, addr, peerID string
	replica            string
	inc                int
	state              PeerState
	cmd                *exec.Cmd
	done               chan struct{} // closed when cmd has exited
	exitErr            error
	expectExit         bool // Stop or Kill sent the signal
	crashed            []string
	starts             int
	ns                 string
}

// Cluster is a set of crdt-catalog processes run by the harness. Its
// methods are safe for concurrent use; the fault controls (Stop, Kill,
// Restart, Pause, Resume, Wipe, Partition, Heal, AddPeer) are serialized.
type Cluster struct {
	opts    Options
	dir     string
	tmpDir  bool
	token   string // bearer token (netns mode: the API is not on loopback)
	hist    *History
	httpc   *http.Client
	netns   *netnsNet
	ctl     sync.Mutex // serializes fault controls and Close
	mu      sync.Mutex // guards peers' fields and closed
	peers   []*peer
	closed  bool
	removed bool
}

// Launch starts opts.N peers one after another, each once the previous
// one has logged its addresses, and returns when all are up. On error
// everything started is stopped and removed again. The caller must Close
// the cluster.
func Launch(ctx context.Context, opts Options) (*Cluster, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, dir: opts.Dir, hist: NewHistory(opts.Seed)}
	if c.dir == "" {
		d, err := os.MkdirTemp("", "testnet-")
		if err != nil {
			return nil, err
		}
		c.dir, c.tmpDir = d, true
	} else if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return nil, err
	}
	c.httpc = &http.Client{Transport: &http.Transport{
		Proxy:               nil, // never a proxy: the peers are local
		DialContext:         (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}}
	register(c)
	if opts.Netns {
		n, err := newNetns()
		if err != nil {
			c.Close()
			return nil, err
		}
		c.netns = n
		tok := make([]byte, 16)
		if _, err := rand.Read(tok); err != nil {
			c.Close()
			return nil, err
		}
		c.token = fmt.Sprintf("%x", tok)
		if err := os.WriteFile(c.tokenFile(), []byte(c.token+"\n"), 0o600); err != nil {
			c.Close()
			return nil, err
		}
	}
	for range opts.N {
		if _, err := c.AddPeer(ctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) tokenFile() string { return filepath.Join(c.dir, "api-token") }

// History returns the cluster's history: every operation of its Clients,
// every convergence barrier, partition and process exit.
func (c *Cluster) History() *History { return c.hist }

// Dir returns the directory holding the peers' data and logs.
func (c *Cluster) Dir() string { return c.dir }

// Netns reports whether the cluster runs in network namespaces.
func (c *Cluster) Netns() bool { return c.netns != nil }

// N returns the number of peers, stopped ones included.
func (c *Cluster) N() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.peers)
}

// Peer returns a description of peer i.
func (c *Cluster) Peer(i int) PeerInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.infoLocked(c.peers[i])
}

// Peers describes every peer, by index.
func (c *Cluster) Peers() []PeerInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]PeerInfo, len(c.peers))
	for i, p := range c.peers {
		out[i] = c.infoLocked(p)
	}
	return out
}

func (c *Cluster) infoLocked(p *peer) PeerInfo {
	info := PeerInfo{Index: p.index, State: p.state, HTTP: p.base, Addr: p.addr, PeerID: p.peerID,
		Replica: p.replica, Incarnation: p.inc, DataDir: p.dataDir, Log: p.logPath, Namespace: p.ns}
	if p.state != Stopped && p.cmd != nil {
		info.PID = p.cmd.Process.Pid
	}
	return info
}

// replicaOf returns peer i's current replica name for the history.
func (c *Cluster) replicaOf(i int) Replica {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Replica{Peer: i, Incarnation: c.peers[i].inc}
}

// AddPeer starts one more peer with an empty store (a late joiner) and
// returns its index. It bootstraps as Options.Bootstrap says, from the
// current addresses of the existing peers.
func (c *Cluster) AddPeer(ctx context.Context) (int, error) {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, errors.New("testnet: cluster closed")
	}
	i := len(c.peers)
	var boot []string
	for j, q := range c.peers {
		if c.opts.Bootstrap == BootstrapPrevious || j == 0 {
			boot = append(boot, q.addr)
		}
	}
	c.mu.Unlock()

	// Set the peer up completely before others can see it.
	p := &peer{index: i, dataDir: filepath.Join(c.dir, fmt.Sprintf("peer%d", i)),
		logPath: filepath.Join(c.dir, fmt.Sprintf("peer%d.log", i))}
	if c.netns != nil {
		if err := c.netns.addPeer(i); err != nil {
			return i, err
		}
		p.ns, p.host, p.httpPort, p.p2pPort = c.netns.ns(i), c.netns.ip(i), nsHTTPPort, nsP2PPort
	} else {
		p.host = "127.0.0.1"
		if err := pickPorts(p); err != nil {
			return i, err
		}
	}
	if err := os.MkdirAll(p.dataDir, 0o700); err != nil {
		return i, err
	}
	c.mu.Lock()
	c.peers = append(c.peers, p)
	c.mu.Unlock()
	return i, c.start(ctx, p, boot)
}

// pickPorts chooses free loopback ports for p's HTTP API and libp2p by
// listening on port 0 and closing again, so that a restart can reuse them
// and the others' bootstrap addresses stay valid.
func pickPorts(p *peer) error {
	var ports [2]int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for k := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		lns = append(lns, l)
		ports[k] = l.Addr().(*net.TCPAddr).Port
	}
	p.httpPort, p.p2pPort = ports[0], ports[1]
	return nil
}

// logLine is what the harness reads from a peer's JSON log.
type logLine struct {
	Msg     string `json:"msg"`
	HTTP    string `json:"http"`
	Addr    string `json:"addr"`
	PeerID  string `json:"peer_id"`
	Replica string `json:"replica"`
	Err     string `json:"err"`
}

// start runs p's process and waits until it has logged its HTTP and libp2p
// addresses. In loopback mode a port taken meanwhile by another process
// makes it pick new ports and try again (twice at most). Called with
// c.ctl held.
func (c *Cluster) start(ctx context.Context, p *peer, boot []string) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		err = c.startOnce(ctx, p, boot)
		if err == nil || c.netns != nil || !strings.Contains(err.Error(), "address already in use") {
			return err
		}
		c.opts.Logf("peer %d: port taken (%v); picking new ports", p.index, err)
		c.mu.Lock()
		perr := pickPorts(p)
		c.mu.Unlock()
		if perr != nil {
			return perr
		}
	}
	return err
}

func (c *Cluster) startOnce(ctx context.Context, p *peer, boot []string) error {
	args := []string{
		"-data", p.dataDir,
		"-http", net.JoinHostPort(p.host, strconv.Itoa(p.httpPort)),
		"-listen", fmt.Sprintf("/ip4/%s/tcp/%d", p.host, p.p2pPort),
		"-network", c.opts.Network,
		"-dht=" + strconv.FormatBool(c.opts.DHT),
		"-mdns=false", "-nat=false",
		"-log-format", "json",
	}
	if c.token != "" {
		args = append(args, "-api-token-file", c.tokenFile())
	}
	for _, b := range boot {
		if b != "" {
			args = append(args, "-bootstrap", b)
		}
	}
	args = append(args, c.opts.Args...)
	var cmd *exec.Cmd
	if p.ns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", p.ns, c.opts.Binary}, args...)...)
	} else {
		cmd = exec.Command(c.opts.Binary, args...)
	}
	cmd.Env = peerEnv()
	// Own process group: a Ctrl-C on the terminal reaches the harness,
	// which stops the peers itself. Pdeathsig: peers die with the harness.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	offset, _ := logf.Seek(0, io.SeekEnd)
	fmt.Fprintf(logf, "=== testnet: start %d of peer %d at %s: %s\n", p.starts+1, p.index, time.Now().Format(time.RFC3339Nano), strings.Join(cmd.Args, " "))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	logf.Close() // the child holds its own descriptor
	done := make(chan struct{})
	c.mu.Lock()
	p.cmd, p.done, p.exitErr, p.expectExit, p.state = cmd, done, nil, false, Running
	p.starts++
	c.mu.Unlock()
	go c.wait(p, cmd, done)

	deadline := time.NewTimer(c.opts.StartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var httpURL, addr, peerID, replica string
	for {
		lines, _ := readLogFrom(p.logPath, offset)
		for _, l := range lines {
			switch l.Msg {
			case "http api listening":
				httpURL = l.HTTP
			case "libp2p listening":
				if strings.Contains(l.Addr, "/ip4/"+p.host+"/") {
					addr = l.Addr
				}
			case "peer":
				peerID = l.PeerID
			case "replica":
				replica = l.Replica
			}
		}
		if httpURL != "" && addr != "" {
			break
		}
		select {
		case <-done:
			return fmt.Errorf("testnet: peer %d exited during start-up: %v\n%s", p.index, p.exitErr, tailFrom(p.logPath, offset, 20))
		case <-ctx.Done():
			c.killWait(p)
			return fmt.Errorf("testnet: starting peer %d: %w", p.index, ctx.Err())
		case <-deadline.C:
			c.killWait(p)
			return fmt.Errorf("testnet: peer %d did not log its addresses within %v\n%s", p.index, c.opts.StartTimeout, tailFrom(p.logPath, offset, 20))
		case <-tick.C:
		}
	}
	c.mu.Lock()
	p.base, p.addr, p.peerID, p.replica = httpURL, addr, peerID, replica
	c.mu.Unlock()
	c.opts.Logf("%s peer %d up: pid %d, %s, %s, replica %s", time.Now().Format("15:04:05.000"), p.index, cmd.Process.Pid, httpURL, addr, replica)
	return nil
}

// peerEnv is the harness's environment without CRDT_CATALOG_* variables,
// which would otherwise set the peers' flags.
func peerEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CRDT_CATALOG_") {
			env = append(env, kv)
		}
	}
	return env
}

// wait reaps p's process and records an exit that no Stop or Kill asked
// for as a crash.
func (c *Cluster) wait(p *peer, cmd *exec.Cmd, done chan struct{}) {
	err := cmd.Wait()
	now := time.Now()
	c.mu.Lock()
	p.exitErr = err
	p.state = Stopped
	crash := !p.expectExit && !c.closed
	r := Replica{Peer: p.index, Incarnation: p.inc}
	if crash {
		p.crashed = append(p.crashed, fmt.Sprintf("start %d exited unexpectedly: %v", p.starts, err))
	}
	c.mu.Unlock()
	if crash {
		c.hist.addExit(Exit{Replica: r, Time: now, How: "crash"})
		c.opts.Logf("peer %d exited unexpectedly: %v", p.index, err)
	}
	close(done)
}

func readLogFrom(path string, offset int64) ([]logLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, err
	}
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			out = append(out, l)
		}
	}
	return out, nil
}

// tailFrom returns the last n lines of the file after offset.
func tailFrom(path string, offset int64, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if offset < int64(len(b)) {
		b = b[offset:]
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// LogTail returns the last n lines of peer i's log file.
func (c *Cluster) LogTail(i, n int) string {
	return tailFrom(c.Peer(i).Log, 0, n)
}

// running returns p's process and done channel if it runs or is paused.
func (c *Cluster) running(i int) (*peer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 0 || i >= len(c.peers) {
		return nil, fmt.Errorf("testnet: no peer %d", i)
	}
	p := c.peers[i]
	if p.state == Stopped {
		return nil, fmt.Errorf("testnet: peer %d is not running", i)
	}
	return p, nil
}

// Stop sends peer i SIGTERM (and SIGCONT if it is paused) and waits for it
// to exit. It fails if the process does not exit with status 0 within
// Options.StopTimeout, in which case it is killed.
func (c *Cluster) Stop(i int) error {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	return c.stop(i)
}

func (c *Cluster) stop(i int) error {
	p, err := c.running(i)
	if err != nil {
		return err
	}
	c.mu.Lock()
	p.expectExit = true
	paused := p.state == Paused
	pid, done := p.cmd.Process.Pid, p.done
	c.mu.Unlock()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("testnet: SIGTERM peer %d: %w", i, err)
	}
	if paused {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
	t := time.NewTimer(c.opts.StopTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		c.killWait(p)
		c.hist.addExit(Exit{Replica: c.replicaOf(i), Time: time.Now(), How: "kill"})
		return fmt.Errorf("testnet: peer %d did not exit within %v of SIGTERM (killed)", i, c.opts.StopTimeout)
	}
	c.hist.addExit(Exit{Replica: c.replicaOf(i), Time: time.Now(), How: "stop"})
	c.opts.Logf("peer %d stopped", i)
	c.mu.Lock()
	defer c.mu.Unlock()
	if p.exitErr != nil {
		return fmt.Errorf("testnet: peer %d exited with %v after SIGTERM", i, p.exitErr)
	}
	return nil
}

// Kill sends peer i SIGKILL and waits for it to exit.
func (c *Cluster) Kill(i int) error {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	p, err := c.running(i)
	if err != nil {
		return err
	}
	c.killWait(p)
	c.hist.addExit(Exit{Replica: c.replicaOf(i), Time: time.Now(), How: "kill"})
	c.opts.Logf("peer %d killed", i)
	return nil
}

// killWait SIGKILLs p's process and waits for it.
func (c *Cluster) killWait(p *peer) {
	c.mu.Lock()
	p.expectExit = true
	cmd, done := p.cmd, p.done
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart starts peer i again on its data directory, stopping it first
// (SIGTERM) if it runs. It keeps its ports when it can, so the others'
// bootstrap addresses stay valid, and it dials every other peer, so that
// a restarted peer 0 rejoins at once instead of waiting for the others'
// redial backoff.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	c.mu.Lock()
	if i < 0 || i >= len(c.peers) {
		c.mu.Unlock()
		return fmt.Errorf("testnet: no peer %d", i)
	}
	p := c.peers[i]
	st := p.state
	var boot []string
	for j, q := range c.peers {
		if j != i && q.addr != "" {
			boot = append(boot, q.addr)
		}
	}
	c.mu.Unlock()
	if st != Stopped {
		if err := c.stop(i); err != nil {
			return err
		}
	}
	return c.start(ctx, p, boot)
}

// Pause stops peer i with SIGSTOP: it keeps its connections but answers
// nothing until Resume.
func (c *Cluster) Pause(i int) error { return c.signal(i, syscall.SIGSTOP, Running, Paused) }

// Resume continues a paused peer with SIGCONT.
func (c *Cluster) Resume(i int) error { return c.signal(i, syscall.SIGCONT, Paused, Running) }

func (c *Cluster) signal(i int, sig syscall.Signal, from, to PeerState) error {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	p, err := c.running(i)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p.state != from {
		return fmt.Errorf("testnet: peer %d is %s, not %s", i, p.state, from)
	}
	if err := syscall.Kill(p.cmd.Process.Pid, sig); err != nil {
		return err
	}
	if sig == syscall.SIGSTOP {
		// kill returns before the stop takes effect: a thread of the peer
		// must run to begin it, and on a loaded machine the other threads
		// serve requests meanwhile (a write to a "paused" peer was once
		// answered 201). Paused means answering nothing: wait for it.
		if err := awaitStopped(p.cmd.Process.Pid, 10*time.Second); err != nil {
			return fmt.Errorf("testnet: pause peer %d: %w", i, err)
		}
	}
	p.state = to
	c.opts.Logf("peer %d %s", i, to)
	return nil
}

// awaitStopped waits until every thread of process pid is stopped (state
// T in /proc/<pid>/task/*/stat), for at most timeout.
func awaitStopped(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		stopped, err := threadsStopped(pid)
		if err != nil || stopped {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d not stopped %v after SIGSTOP", pid, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// threadsStopped reports whether every thread of process pid is stopped;
// an error if the process is gone or a zombie.
func threadsStopped(pid int) (bool, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "stat"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // the thread exited
		}
		if err != nil {
			return false, err
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		switch {
		case len(f) == 0:
			return false, fmt.Errorf("%s/%s/stat: %q", dir, t.Name(), s)
		case f[0] == "Z" || f[0] == "X":
			return false, fmt.Errorf("pid %d has exited", pid)
		case f[0] != "T" && f[0] != "t":
			return false, nil
		}
	}
	return true, nil
}

// Wipe deletes peer i's data directory, stopping the peer first (SIGTERM)
// if it runs. Its libp2p identity key is put back, so that its peer ID and
// the others' bootstrap addresses stay valid, but its store is gone: the
// next Restart joins as a new replica (a new Incarnation in the history).
func (c *Cluster) Wipe(i int) error {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	if p, _ := c.running(i); p != nil {
		if err := c.stop(i); err != nil {
			return err
		}
	}
	c.mu.Lock()
	p := c.peers[i]
	dir := p.dataDir
	c.mu.Unlock()
	keyPath := filepath.Join(dir, "identity.key")
	key, kerr := os.ReadFile(keyPath)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if kerr == nil {
		if err := os.WriteFile(keyPath, key, 0o600); err != nil {
			return err
		}
	}
	c.mu.Lock()
	p.inc++
	c.mu.Unlock()
	c.opts.Logf("peer %d wiped", i)
	return nil
}

// Partition cuts the network into groups of peer indexes: peers in
// different groups exchange nothing until Heal or the next Partition;
// peers in no group are alone. The harness still reaches every peer's
// HTTP API. Needs netns mode; otherwise ErrNoPartition.
func (c *Cluster) Partition(groups ...[]int) error {
	if c.netns == nil {
		return ErrNoPartition
	}
	c.ctl.Lock()
	defer c.ctl.Unlock()
	groupOf := map[int]int{}
	for g, members := range groups {
		for _, i := range members {
			groupOf[i] = g
		}
	}
	for i := range c.N() {
		if _, ok := groupOf[i]; !ok {
			groupOf[i] = len(groups) + i
		}
	}
	c.hist.endCut(time.Now())
	if err := c.netns.partition(groupOf); err != nil {
		return err
	}
	c.hist.startCut(groupOf, time.Now())
	c.opts.Logf("partitioned: %v", groups)
	return nil
}

// Heal removes the partition in force, if any.
func (c *Cluster) Heal() error {
	if c.netns == nil {
		return ErrNoPartition
	}
	c.ctl.Lock()
	defer c.ctl.Unlock()
	c.hist.endCut(time.Now())
	if err := c.netns.heal(); err != nil {
		return err
	}
	c.opts.Logf("healed")
	return nil
}

// Close stops every peer (SIGTERM, SIGCONT for paused ones, SIGKILL after
// Options.StopTimeout), removes the namespaces, bridge and routes it
// created, and removes the directory unless Keep. It reports peers that
// did not exit cleanly. Calling it again does nothing.
func (c *Cluster) Close() error {
	err := c.shutdown()
	c.removeDir()
	return err
}

// shutdown is Close without removing the directory, so that logs can
// still be read.
func (c *Cluster) shutdown() error {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	peers := slices.Clone(c.peers)
	c.mu.Unlock()
	defer unregister(c)

	var (
		wg   sync.WaitGroup
		emu  sync.Mutex
		errs []error
	)
	for _, p := range peers {
		c.mu.Lock()
		if p.state == Stopped || p.cmd == nil {
			c.mu.Unlock()
			continue
		}
		p.expectExit = true
		pid, done, paused := p.cmd.Process.Pid, p.done, p.state == Paused
		c.mu.Unlock()
		wg.Go(func() {
			_ = syscall.Kill(pid, syscall.SIGTERM)
			if paused {
				_ = syscall.Kill(pid, syscall.SIGCONT)
			}
			t := time.NewTimer(c.opts.StopTimeout)
			defer t.Stop()
			select {
			case <-done:
				c.mu.Lock()
				if p.exitErr != nil {
					emu.Lock()
					errs = append(errs, fmt.Errorf("peer %d exited with %v after SIGTERM", p.index, p.exitErr))
					emu.Unlock()
				}
				c.mu.Unlock()
			case <-t.C:
				c.killWait(p)
				emu.Lock()
				errs = append(errs, fmt.Errorf("peer %d did not exit within %v of SIGTERM (killed)", p.index, c.opts.StopTimeout))
				emu.Unlock()
			}
		})
	}
	wg.Wait()
	if c.netns != nil {
		if err := c.netns.close(); err != nil {
			errs = append(errs, err)
		}
	}
	c.httpc.CloseIdleConnections()
	return errors.Join(errs...)
}

func (c *Cluster) removeDir() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed || c.opts.Keep || !c.tmpDir {
		return
	}
	c.removed = true
	_ = os.RemoveAll(c.dir)
}

// Crashes lists, per peer, the exits that no Stop or Kill asked for.
func (c *Cluster) Crashes() map[int][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[int][]string{}
	for _, p := range c.peers {
		if len(p.crashed) > 0 {
			out[p.index] = slices.Clone(p.crashed)
		}
	}
	return out
}
