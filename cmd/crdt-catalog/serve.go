package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/crdt-catalog/crdt-catalog/httpapi"
	"github.com/crdt-catalog/crdt-catalog/node"
	"github.com/crdt-catalog/crdt-catalog/p2p"
)

// options are the node's flags. Each flag NAME may also be set by the
// environment variable CRDT_CATALOG_NAME (upper case, '-' as '_'); a flag on
// the command line wins.
type options struct {
	data          string
	listen        stringList
	bootstrap     stringList
	mdns          bool
	dht           bool
	nat           bool
	network       string
	swarmKey      string
	antiEntropy   time.Duration
	meshDegree    int
	httpAddr      string
	collections   string
	indexes       indexList
	logLevel      string
	logFormat     string
	sync          bool
	tokenFile     string
	tokenForReads bool
	maxBody       int64
	maxState      int64
	maxLogBytes   int64
	maxOffset     time.Duration
	maxReplicas   int
	maxConns      int
	maxWatchers   int
	changeHistory int
	changeBytes   int64
	writers       stringList
	writersFile   string
	version       bool
	profile       string
	announce      stringList
	announceApp   stringList
	noAnnounce    stringList
	dhtMode       string
	reachability  string
	relayService  bool
	relayClient   bool
}

func parseFlags(args []string, stderr io.Writer, getenv func(string) string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("crdt-catalog", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.data, "data", "./data", "data directory of the embedded LevelDB store (created if missing)")
	o.listen = stringList{vals: p2p.DefaultListen()}
	fs.Var(&o.listen, "listen", fmt.Sprintf("libp2p listen multiaddr; repeatable (the environment takes a comma-separated list). The default port %d is not IPFS's 4001; an address in use stops the start", p2p.DefaultPort))
	fs.StringVar(&o.profile, "profile", p2p.ProfileLAN, "network profile: lan (advertise private addresses; DHT server) or wan (advertise public and relay addresses only; DHT mode follows reachability)")
	fs.Var(&o.announce, "announce", "multiaddr to advertise instead of the listen and observed addresses (relay addresses are kept); repeatable")
	fs.Var(&o.announceApp, "announce-append", "multiaddr to advertise in addition to the others; repeatable")
	fs.Var(&o.noAnnounce, "no-announce", "CIDR prefix whose addresses are never advertised, e.g. 10.0.0.0/8; repeatable")
	fs.StringVar(&o.dhtMode, "dht-mode", "", "DHT mode: auto (client until AutoNAT finds this node public), client or server; default: server with -profile lan, auto with -profile wan")
	fs.StringVar(&o.reachability, "reachability", "auto", "auto (AutoNAT decides), public (e.g. a bootstrap node with a public address: relay service and DHT server at once) or private")
	fs.BoolVar(&o.relayService, "relay-service", true, "serve circuit relay v2 to peers behind NATs while this node is publicly reachable (no effect otherwise)")
	fs.BoolVar(&o.relayClient, "relay-client", true, "while not publicly reachable, keep relay reservations on bootstrap peers and peers offering relay, and advertise relay addresses; hole punching then upgrades relayed connections")
	fs.Var(&o.bootstrap, "bootstrap", "bootstrap peer multiaddr ending in /p2p/<peer id>, dialled at start and redialled while disconnected; repeatable")
	fs.BoolVar(&o.mdns, "mdns", false, "discover peers by mDNS on the local network (multicasts on every interface)")
	fs.BoolVar(&o.dht, "dht", true, "discover peers through the Kademlia DHT rendezvous of the network")
	fs.BoolVar(&o.nat, "nat", false, "map the libp2p port on the gateway by UPnP/NAT-PMP")
	fs.StringVar(&o.network, "network", "default", "catalog network name: names the gossip topic, sync protocol and DHT rendezvous")
	fs.StringVar(&o.swarmKey, "swarm-key", "", "libp2p pre-shared key file: only peers with the same key connect (TCP only; QUIC listen addresses are dropped)")
	fs.DurationVar(&o.antiEntropy, "antientropy-interval", 5*time.Second, "how often to pull missed deltas from one random connected peer")
	fs.IntVar(&o.meshDegree, "mesh-degree", 2, "GossipSub mesh degree: peers each peer forwards a delta to (2-64; more costs bandwidth, fewer relies on repair)")
	fs.StringVar(&o.httpAddr, "http", "127.0.0.1:8080", "HTTP API listen address; :0 picks a free port. A non-loopback address requires -api-token-file")
	fs.StringVar(&o.collections, "collections", "snapshots,images", "comma-separated collections served")
	fs.Var(&o.indexes, "index", "secondary index COLLECTION:FIELD,FIELD... (e.g. snapshots:cluster,size,created): queries with an =, <, <=, > or >= term on an indexed field read the index instead of scanning; built at start if missing, dropped when no longer named (indexes added at runtime with index-add stay until index-drop); repeatable (the environment separates several with ';')")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.BoolVar(&o.sync, "sync", true, "fsync every commit before acknowledging it (off: a machine crash may lose recent writes)")
	fs.StringVar(&o.tokenFile, "api-token-file", "", "file holding the bearer token that every non-GET request must carry")
	fs.BoolVar(&o.tokenForReads, "api-token-reads", false, "require the bearer token on GET requests too")
	fs.Int64Var(&o.maxBody, "max-body", 1<<20, "largest accepted request body, in bytes")
	fs.IntVar(&o.maxConns, "max-conns", 1024, "most HTTP connections open at once; further clients wait to be accepted (keep it well below the file descriptor limit)")
	fs.Int64Var(&o.maxState, "max-state", 0, "largest full state this node imports, in bytes; 0: from a peer, any that leaves 1 GiB free on the disk of -data (it is checked and joined in pieces of 1 MiB), and by POST /crdt/state up to 1 GiB")
	fs.Int64Var(&o.maxLogBytes, "max-log-bytes", 128<<20, "size of the delta log, in bytes (about 300 a delta): peers that missed fewer deltas catch up by deltas, others by a full state")
	fs.DurationVar(&o.maxOffset, "max-clock-offset", time.Minute, "how far ahead of this node's wall clock a peer's timestamp may pull the clock that stamps local writes")
	fs.Var(&o.writers, "writers", "comma-separated peer IDs whose deltas this node accepts from the network (this node always counts); repeatable; none and no -writers-file: every peer may write")
	fs.StringVar(&o.writersFile, "writers-file", "", "file of writer peer IDs, one per line, # comments; joined to -writers; reloaded on SIGHUP and when it changes")
	fs.BoolVar(&o.version, "version", false, "print the version (as the version subcommand does) and exit")
	fs.IntVar(&o.maxWatchers, "max-watchers", 256, "most GET /catalog/watch streams open at once (each holds one of -max-conns); one more is answered 503")
	fs.IntVar(&o.changeHistory, "change-history", 100_000, "changes kept for watchers to resume from (GET /catalog/watch?since=); an older since is answered 410")
	fs.Int64Var(&o.changeBytes, "change-history-bytes", 64<<20, "bound of the kept changes' size, in bytes (each holds the item before and after)")
	fs.IntVar(&o.maxReplicas, "max-replicas", 100_000, "most replicas the causal contexts may name, a memory bound; deltas of further new replicas are refused (at most 14316557)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: crdt-catalog [flags]\n       crdt-catalog example | version | keygen -swarm-key FILE | reincarnate -data DIR | repair -data DIR\n"+
			"       crdt-catalog add | get | rm | set | patch | query | indexes | index-add | index-drop | status | peers | backup | restore  (the client of a node; COMMAND -help)\n"+
			"       crdt-catalog completion bash|zsh\n\n"+
			"Runs one catalog node. Every flag can also be set by the environment\n"+
			"variable CRDT_CATALOG_<FLAG> (e.g. CRDT_CATALOG_HTTP); the command line wins.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	// Environment first, so that explicit flags override it.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "version" {
			return // an action, not a setting: CRDT_CATALOG_VERSION must not stop a node from serving
		}
		name := "CRDT_CATALOG_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" && envErr == nil {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	// A repeatable flag on the command line replaces the environment's list.
	o.listen.set, o.bootstrap.set, o.writers.set = false, false, false
	o.announce.set, o.announceApp.set, o.noAnnounce.set = false, false, false
	o.indexes.set = false
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (subcommands: example, version, keygen, reincarnate, repair, completion; the client's add, get, rm, set, patch, query, status, peers, backup, restore)", fs.Arg(0))
	}
	return o, nil
}

func newLogger(o *options, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	switch o.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	}
	return nil, fmt.Errorf("-log-format must be text or json, got %q", o.logFormat)
}

// serve runs a node until ctx ends: open the store, start the HTTP API,
// and on SIGINT/SIGTERM stop accepting requests, finish in-flight ones,
// then flush and close the store.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	o, err := parseFlags(args, stderr, getenv)
	if err != nil {
		return err
	}
	build := readBuildInfo()
	if o.version {
		return printVersion(stdout, build)
	}
	log, err := newLogger(o, stderr)
	if err != nil {
		return err
	}
	token, err := readToken(o.tokenFile)
	if err != nil {
		return err
	}
	if token == "" && !isLoopback(o.httpAddr) {
		return fmt.Errorf("-http %s is not a loopback address: set -api-token-file so that the API is not open to the network", o.httpAddr)
	}
	fixed, err := parseWriterList(o.writers.vals)
	if err != nil {
		return err
	}
	writers := &writersList{fixed: fixed, file: o.writersFile, log: log}
	initial, err := writers.read()
	if err != nil {
		return err
	}

	if err := os.MkdirAll(o.data, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	store, err := node.OpenLevelDB(filepath.Join(o.data, "store"), o.sync)
	if err != nil {
		return storeHint(err, o.data)
	}
	cfg := node.DefaultConfig()
	cfg.Logger = log
	cfg.Collections = strings.Split(o.collections, ",")
	// A full state is checked whole in a temporary file before it is
	// joined: keep it on the data directory's disk, not on a tmpfs.
	cfg.TempDir = o.data
	// ...and keep it there until its join has committed, so that an
	// import cut by a crash is finished at the next start.
	cfg.StateDir = o.data
	cfg.MaxStateBytes = o.maxState
	cfg.MaxLogBytes = o.maxLogBytes
	cfg.MaxClockOffset = o.maxOffset
	cfg.MaxReplicas = o.maxReplicas
	cfg.ChangeHistory, cfg.ChangeHistoryBytes = o.changeHistory, o.changeBytes
	cfg.Indexes = o.indexes.byColl
	// The replica is keyed by the peer's identity: its deltas carry proofs
	// that every peer checks.
	keyFile := filepath.Join(o.data, "identity.key")
	if cfg.Key, err = p2p.NodeKey(keyFile); err != nil {
		store.Close()
		return err
	}
	n, err := node.Open(ctx, store, cfg)
	if err != nil {
		store.Close()
		return storeHint(err, o.data)
	}

	pcfg := p2p.DefaultConfig()
	pcfg.KeyFile = keyFile
	pcfg.Listen = o.listen.vals
	pcfg.Bootstrap = o.bootstrap.vals
	pcfg.MDNS, pcfg.DHT, pcfg.NAT = o.mdns, o.dht, o.nat
	pcfg.Network = o.network
	pcfg.AntiEntropyInterval = o.antiEntropy
	pcfg.MeshDegree = o.meshDegree
	pcfg.Logger = log
	pcfg.Writers = initial
	pcfg.Profile = o.profile
	pcfg.Announce, pcfg.AnnounceAppend, pcfg.NoAnnounce = o.announce.vals, o.announceApp.vals, o.noAnnounce.vals
	pcfg.DHTMode = o.dhtMode
	pcfg.Reachability = o.reachability
	pcfg.RelayService, pcfg.RelayClient = o.relayService, o.relayClient
	if o.swarmKey != "" {
		if pcfg.SwarmKey, err = os.ReadFile(o.swarmKey); err != nil {
			n.Close()
			return fmt.Errorf("-swarm-key: %w", err)
		}
		log.Info("private network: TCP only, QUIC is off (it cannot carry a pre-shared key)")
	}
	peer, err := p2p.New(ctx, n, pcfg)
	if err != nil {
		n.Close()
		return err
	}
	// The writers list: logged now, reloaded from its file on SIGHUP
	// and when the file changes, until shutdown.
	writers.set = peer.SetWriters
	writers.logList(initial)
	wctx, stopWatch := context.WithCancel(ctx)
	var watching sync.WaitGroup
	if o.writersFile != "" {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		watching.Go(func() {
			defer signal.Stop(hup)
			writers.watch(wctx, hup, writersPoll)
		})
	}
	closeAll := func() error {
		stopWatch()
		watching.Wait()
		perr := peer.Close()
		if err := n.Close(); err != nil {
			return err
		}
		return perr
	}

	acfg := httpapi.DefaultConfig()
	acfg.Logger = log
	acfg.Status = func() map[string]any {
		var w any = "any"
		if ids := peer.Writers(); ids != nil {
			w = len(ids)
		}
		// Lists are [] when empty, never null.
		listen, peers := peer.Addrs(), peer.Peers()
		if listen == nil {
			listen = []string{}
		}
		if peers == nil {
			peers = []p2p.PeerStatus{}
		}
		return map[string]any{"peer_id": peer.ID().String(), "listen": listen, "peers": peers, "p2p": peer.Status(), "writers": w, "build": build}
	}
	acfg.Token = token
	acfg.TokenForReads = o.tokenForReads
	acfg.MaxBodyBytes = o.maxBody
	acfg.MaxStateBytes = o.maxState
	acfg.MaxConns = o.maxConns
	acfg.MaxWatchers = o.maxWatchers
	api, err := httpapi.New(n, acfg)
	if err == nil {
		err = api.Registry().Register(peer.Collector())
	}
	if err != nil {
		closeAll()
		return err
	}
	ln, err := net.Listen("tcp", o.httpAddr)
	if err != nil {
		closeAll()
		return fmt.Errorf("http listen: %w", err)
	}
	srv := api.HTTPServer(slog.NewLogLogger(log.Handler(), slog.LevelWarn))
	ln = api.LimitListener(ln)
	log.Info("crdt-catalog", "version", build.Version, "revision", build.Revision, "modified", build.Modified, "go", build.GoVersion)
	log.Info("replica", "replica", n.ReplicaID(), "data", o.data)
	log.Info("peer", "peer_id", peer.ID().String(), "network", o.network)
	log.Info("http api listening", "http", "http://"+ln.Addr().String())
	for _, a := range peer.Addrs() {
		log.Info("libp2p listening", "addr", a)
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err = <-served:
	case <-ctx.Done():
		log.Info("shutting down")
		api.SetClosing(true)
		sctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		err = srv.Shutdown(sctx)
		cancel()
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	if cerr := closeAll(); cerr != nil && err == nil {
		err = cerr
	}
	if err == nil {
		log.Info("stopped")
	}
	return err
}

func readToken(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("-api-token-file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if len(t) < 16 {
		return "", fmt.Errorf("-api-token-file %s: token must be at least 16 characters", path)
	}
	return t, nil
}

// stringList is a repeatable flag; each value may also be a
// comma-separated list (as the environment gives it). The first Set
// replaces the default.
type stringList struct {
	vals []string
	set  bool
}

func (l *stringList) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(l.vals, ",")
}

func (l *stringList) Set(v string) error {
	if !l.set {
		l.vals, l.set = nil, true
	}
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			l.vals = append(l.vals, s)
		}
	}
	return nil
}

// isLoopback reports whether a listen address binds only to loopback.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
