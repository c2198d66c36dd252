// Command testnet runs clusters of the crdt-catalog binary on this machine.
//
//	testnet up [-n 5] [-dir DIR] [-netns] [-bin FILE]
//	    starts n peers, prints each one's HTTP address and multiaddr, and
//	    runs until Ctrl-C, SIGTERM or "testnet down"; then it stops the
//	    peers and removes what it created.
//	testnet down [-dir DIR]
//	    stops the cluster that "up" started with the same -dir (through
//	    its state file), or, if that "up" died, its peers and namespaces.
//	testnet bench [-n 5] [-rate 1000] [-duration 20s] ...
//	    the cluster benchmark (see -help); -n takes a list, e.g. 3,5,10.
//	testnet join [-items 1000000] [-dir DIR] ...
//	    a new node joining a catalog of that many items by a full-state
//	    pull: time, bytes on the wire, peak RSS of both nodes (see -help).
//
// Run it from the module root (go run ./testnet/cmd/testnet ...): without
// -bin it builds ./cmd/crdt-catalog with "go build". Peers listen on
// 127.0.0.1, or with -netns (root, iproute2) in network namespaces of their
// own with addresses in 10.252.0.0/16.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/crdt-catalog/crdt-catalog/testnet"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		<-ctx.Done()
		stop() // a second signal ends the process at once
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testnet:", err)
		os.Exit(1)
	}
}

const usage = `usage: testnet up [flags] | down [flags] | bench [flags] | join [flags]   (-help after a subcommand lists its flags)`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "up":
		return up(ctx, args[1:], stdout, stderr)
	case "down":
		return down(args[1:], stdout, stderr)
	case "bench":
		return bench(ctx, args[1:], stdout, stderr)
	case "join":
		return join(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown subcommand %q\n%s", args[0], usage)
}

func defaultDir() string { return filepath.Join(os.TempDir(), "crdt-testnet") }

// state is what "up" leaves in DIR/state.json for "down".
type state struct {
	PID     int         `json:"pid"`
	Start   string      `json:"start"` // /proc start time of that pid
	Dir     string      `json:"dir"`
	Netns   bool        `json:"netns"`
	Started time.Time   `json:"started"`
	Peers   []peerState `json:"peers"`
}

type peerState struct {
	Index int    `json:"index"`
	HTTP  string `json:"http"`
	Addr  string `json:"addr"`
	PID   int    `json:"pid"`
	Start string `json:"start"`
	Log   string `json:"log"`
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

func readState(dir string) (*state, error) {
	b, err := os.ReadFile(statePath(dir))
	if err != nil {
		return nil, err
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", statePath(dir), err)
	}
	return &s, nil
}

// binary returns -bin, or builds the binary into dir.
func binary(ctx context.Context, bin, dir string, stderr io.Writer) (string, error) {
	if bin != "" {
		return bin, nil
	}
	fmt.Fprintf(stderr, "building %s ...\n", testnet.MainPackage)
	return testnet.BuildTo(ctx, dir, false)
}

func up(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("testnet up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 5, "number of peers")
	dir := fs.String("dir", defaultDir(), "state directory (state.json, the binary, the peers' data and logs)")
	netns := fs.Bool("netns", false, "run each peer in a network namespace of its own (root, iproute2)")
	bin := fs.String("bin", "", "crdt-catalog binary (default: build ./cmd/crdt-catalog)")
	dht := fs.Bool("dht", false, "turn on the peers' DHT discovery")
	first := fs.Bool("bootstrap-first", false, "every peer dials peer 0 only (default: every earlier peer)")
	keep := fs.Bool("keep", false, "keep the peers' data and logs after stopping")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if old, err := readState(*dir); err == nil && testnet.ProcStart(old.PID) == old.Start {
		return fmt.Errorf("a cluster started by pid %d is up in %s: run \"testnet down -dir %s\" first", old.PID, *dir, *dir)
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	b, err := binary(ctx, *bin, *dir, stderr)
	if err != nil {
		return err
	}
	clusterDir := filepath.Join(*dir, "cluster")
	_ = os.RemoveAll(clusterDir)
	opts := testnet.Options{Binary: b, N: *n, Dir: clusterDir, Netns: *netns, DHT: *dht,
		Logf: func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }}
	if *first {
		opts.Bootstrap = testnet.BootstrapFirst
	}
	c, err := testnet.Launch(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(stderr, "stopping the peers ...")
		if err := c.Close(); err != nil {
			fmt.Fprintln(stderr, "testnet:", err)
		}
		_ = os.Remove(statePath(*dir))
		if !*keep {
			_ = os.RemoveAll(clusterDir)
		}
	}()
	st := state{PID: os.Getpid(), Start: testnet.ProcStart(os.Getpid()), Dir: clusterDir, Netns: *netns, Started: time.Now()}
	for _, p := range c.Peers() {
		st.Peers = append(st.Peers, peerState{Index: p.Index, HTTP: p.HTTP, Addr: p.Addr, PID: p.PID, Start: testnet.ProcStart(p.PID), Log: p.Log})
		fmt.Fprintf(stdout, "peer %d  %s  %s\n", p.Index, p.HTTP, p.Addr)
	}
	js, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(statePath(*dir), js, 0o644); err != nil {
		return err
	}
	if *netns {
		fmt.Fprintf(stdout, "the APIs are not on loopback: send \"Authorization: Bearer $(cat %s)\" with every write\n", filepath.Join(clusterDir, "api-token"))
	}
	fmt.Fprintf(stdout, "logs in %s; Ctrl-C or \"testnet down -dir %s\" stops the cluster\n", clusterDir, *dir)
	<-ctx.Done()
	return nil
}

func down(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("testnet down", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", defaultDir(), "state directory given to up")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := readState(*dir)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stdout, "no cluster is up in %s\n", *dir)
		return nil
	}
	if err != nil {
		return err
	}
	if testnet.ProcStart(st.PID) == st.Start {
		// "up" is alive: it stops its peers and cleans up on SIGTERM.
		if err := syscall.Kill(st.PID, syscall.SIGTERM); err != nil {
			return err
		}
		if !waitGone(st.PID, st.Start, 60*time.Second) {
			return fmt.Errorf("up (pid %d) did not exit within 60s of SIGTERM", st.PID)
		}
		fmt.Fprintf(stdout, "stopped the cluster of pid %d\n", st.PID)
		return nil
	}
	// "up" died without cleaning up: stop its peers by pid, then remove
	// its namespaces.
	for _, p := range st.Peers {
		if p.PID == 0 || testnet.ProcStart(p.PID) != p.Start {
			continue
		}
		_ = syscall.Kill(p.PID, syscall.SIGCONT)
		_ = syscall.Kill(p.PID, syscall.SIGTERM)
		if !waitGone(p.PID, p.Start, 10*time.Second) {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
			waitGone(p.PID, p.Start, 5*time.Second)
		}
		fmt.Fprintf(stdout, "stopped peer %d (pid %d)\n", p.Index, p.PID)
	}
	if st.Netns {
		testnet.RemoveStale()
	}
	_ = os.Remove(statePath(*dir))
	fmt.Fprintf(stdout, "cleaned up after pid %d, which had exited; data and logs left in %s\n", st.PID, st.Dir)
	return nil
}

// waitGone waits until the process pid with start time start is gone.
func waitGone(pid int, start string, d time.Duration) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if testnet.ProcStart(pid) != start {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return testnet.ProcStart(pid) != start
}

func bench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("testnet bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ns := fs.String("n", "5", "peers; a comma-separated list runs one benchmark per value")
	rate := fs.Int("rate", 1000, "writes per second offered, over all peers (open loop)")
	dur := fs.Duration("duration", 20*time.Second, "load duration")
	maxOps := fs.Int("max-ops", 0, "cap on the load's writes (default rate x duration)")
	catchUp := fs.Int("catchup", 10000, "writes a stopped peer misses before its catch-up is timed (negative: skip)")
	sample := fs.Int("sample-every", 0, "watch every k-th write for visibility (default rate/20)")
	poll := fs.Duration("poll", 2*time.Millisecond, "visibility poll interval")
	inflight := fs.Int("max-inflight", 256, "cap on concurrent writes")
	seed := fs.Int64("seed", 0, "seed (default TESTNET_SEED, else the clock)")
	bin := fs.String("bin", "", "crdt-catalog binary (default: build ./cmd/crdt-catalog)")
	asJSON := fs.Bool("json", false, "print the results as JSON")
	keep := fs.Bool("keep", false, "keep the peers' data and logs")
	verbose := fs.Bool("v", false, "log the harness's events")
	var peerArgs listFlag
	fs.Var(&peerArgs, "peer-arg", "extra flag for every peer, e.g. -peer-arg=-sync=false (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var counts []int
	for _, s := range strings.Split(*ns, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || v < 2 {
			return fmt.Errorf("-n %q: want integers of at least 2", *ns)
		}
		counts = append(counts, v)
	}
	tmp, err := os.MkdirTemp("", "testnet-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	b, err := binary(ctx, *bin, tmp, stderr)
	if err != nil {
		return err
	}
	s := testnet.ResolveSeed(*seed)
	logf := func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }
	quiet := func(string, ...any) {}
	var results []*testnet.BenchResult
	var firstErr error
	for _, n := range counts {
		cfg := testnet.BenchConfig{Binary: b, N: n, Rate: *rate, Duration: *dur, MaxOps: *maxOps, CatchUp: *catchUp,
			SampleEvery: *sample, PollInterval: *poll, MaxInFlight: *inflight, Seed: s, Keep: *keep, Logf: quiet, Args: peerArgs}
		if *verbose {
			cfg.Logf = logf
		}
		if *keep {
			cfg.Dir = filepath.Join(os.TempDir(), fmt.Sprintf("testnet-bench-n%d-%d", n, time.Now().Unix()))
			logf("keeping data and logs in %s", cfg.Dir)
		}
		logf("bench: %d peers, %d writes/s for %v ...", n, *rate, *dur)
		res, err := testnet.RunBench(ctx, cfg)
		if res != nil {
			results = append(results, res)
			if !*asJSON {
				res.Print(stdout)
				fmt.Fprintln(stdout)
			}
		}
		if err != nil {
			logf("bench with %d peers: %v", n, err)
			if firstErr == nil {
				firstErr = err
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(results); err != nil {
			return err
		}
	}
	return firstErr
}

// listFlag is a repeatable string flag.
type listFlag []string

// String joins the values with spaces.
func (l *listFlag) String() string { return strings.Join(*l, " ") }

// Set appends one value.
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func join(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("testnet join", flag.ContinueOnError)
	fs.SetOutput(stderr)
	items := fs.Int("items", 1_000_000, "items of the catalog the new node joins")
	dir := fs.String("dir", filepath.Join(os.TempDir(), "crdt-testnet-join"), "directory of the peers and of the cached state file (state-ITEMS.bin)")
	bin := fs.String("bin", "", "crdt-catalog binary (default: build ./cmd/crdt-catalog)")
	timeout := fs.Duration("timeout", 10*time.Minute, "bound on loading the catalog and on the join")
	var senderArgs, receiverArgs listFlag
	fs.Var(&senderArgs, "sender-arg", "extra flag of the node holding the catalog (repeatable); default -max-state=8589934592, so that POST /crdt/state loads it")
	fs.Var(&receiverArgs, "receiver-arg", "extra flag of the new node (repeatable); default none: the defaults")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(senderArgs) == 0 {
		senderArgs = listFlag{"-max-state=8589934592"}
	}
	tmp, err := os.MkdirTemp("", "testnet-join-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	b, err := binary(ctx, *bin, tmp, stderr)
	if err != nil {
		return err
	}
	logf := func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }
	res, err := testnet.RunJoin(ctx, testnet.JoinConfig{Binary: b, Items: *items, Dir: *dir, SenderArgs: senderArgs,
		ReceiverArgs: receiverArgs, Timeout: *timeout, Logf: logf})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, res)
	return nil
}
