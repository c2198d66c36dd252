package testnet

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
)

// JoinConfig configures RunJoin.
type JoinConfig struct {
	// Binary is the crdt-catalog executable. Required.
	Binary string
	// Items is the size of the catalog the new node joins. Default
	// 1,000,000.
	Items int
	// Dir holds the peers' data and the cached state file
	// (state-ITEMS.bin, built once and reused). Default: a directory
	// under os.TempDir().
	Dir string
	// SenderArgs are extra flags of the node holding the catalog; it is
	// loaded through POST /crdt/state, so they must allow a state of its
	// size. ReceiverArgs are those of the new node (default: none, the
	// defaults).
	SenderArgs, ReceiverArgs []string
	// Timeout bounds the join. Default 10 minutes.
	Timeout time.Duration
	// Logf receives progress lines. Default: discard.
	Logf func(format string, args ...any)
}

// JoinResult is what RunJoin measured.
type JoinResult struct {
	Items     int
	StateFile int64         // bytes of the state file, as GET /crdt/state writes it
	Load      time.Duration // POST /crdt/state of the catalog into the sender
	Join      time.Duration // from the new node's start until it has joined
	Transfer  time.Duration // the receiver's own figure: the full-state pull
	Wire      int64         // bytes the receiver read of the full state
	SenderRSS int64         // peak RSS sampled during the join, bytes
	RecvRSS   int64
	SenderCPU time.Duration // CPU time (user and system) during the join
	RecvCPU   time.Duration
}

// String formats r as the report of "testnet join".
func (r *JoinResult) String() string {
	return fmt.Sprintf("items %d: joined in %v (pull %v); %d bytes on the wire, %.0f B/item (state file %.0f B/item); during the join: peak RSS sender %d MiB, receiver %d MiB; CPU sender %v, receiver %v; catalog loaded into the sender in %v",
		r.Items, r.Join.Round(time.Millisecond), r.Transfer.Round(time.Millisecond), r.Wire, float64(r.Wire)/float64(r.Items),
		float64(r.StateFile)/float64(r.Items), r.SenderRSS>>20, r.RecvRSS>>20, r.SenderCPU.Round(10*time.Millisecond),
		r.RecvCPU.Round(10*time.Millisecond), r.Load.Round(time.Millisecond))
}

// joinDoc is item i's ~200-byte document (node's index benchmarks use the
// same shape).
func joinDoc(i int) crdt.Document {
	cluster := fmt.Sprintf("cluster-%02d", i%50)
	created := time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second).Format(time.RFC3339)
	return crdt.Document{
		"size":    []byte(strconv.Itoa(1<<30 + i)),
		"created": []byte(`"` + created + `"`),
		"cluster": []byte(`"` + cluster + `"`),
		"status":  []byte(`"completed"`),
		"region":  []byte(`"eu-west-1"`),
		"owner":   []byte(`"team-storage"`),
		"tier":    []byte(`"gold"`),
		"note":    []byte(`"a snapshot of the volume of a catalog benchmark item"`),
	}
}

// buildState writes the full state of a catalog of items items to path,
// made by a node of its own on a temporary LevelDB.
func buildState(ctx context.Context, path string, items int) error {
	dir, err := os.MkdirTemp(filepath.Dir(path), "build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	store, err := node.OpenLevelDB(dir, false)
	if err != nil {
		return err
	}
	cfg := node.DefaultConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := node.Open(ctx, store, cfg)
	if err != nil {
		return err
	}
	defer n.Close()
	ops := make([]node.Op, 0, node.MaxBatchOps)
	for i := 0; i < items; i += node.MaxBatchOps {
		ops = ops[:0]
		for j := i; j < min(i+node.MaxBatchOps, items); j++ {
			ops = append(ops, node.Op{Kind: node.OpAdd, Key: crdt.Key{Collection: "snapshots", ID: fmt.Sprintf("snap-%08d", j)}, Doc: joinDoc(j)})
		}
		if _, err := n.Batch(ctx, ops); err != nil {
			return err
		}
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if err = n.ExportState(ctx, w); err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// RunJoin measures a new node joining a catalog: it starts a node,
// loads a catalog of cfg.Items items into it (POST /crdt/state of a state
// file built once), then starts a second node, which bootstraps to the
// first, finds it has nothing and pulls a full state (the catalog was
// never in the first node's delta log). The first node is restarted after
// the load, as a node holding the catalog would run. It reports the time from the
// second node's start until it has joined the state, the bytes of the
// transfer, and the peak RSS of both processes, sampled every 50 ms
// during the join.
func RunJoin(ctx context.Context, cfg JoinConfig) (*JoinResult, error) {
	if cfg.Items == 0 {
		cfg.Items = 1_000_000
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(os.TempDir(), "crdt-testnet-join")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	res := &JoinResult{Items: cfg.Items}
	statePath := filepath.Join(cfg.Dir, fmt.Sprintf("state-%d.bin", cfg.Items))
	if _, err := os.Stat(statePath); err != nil {
		cfg.Logf("building the state of %d items in %s", cfg.Items, statePath)
		start := time.Now()
		if err := buildState(ctx, statePath, cfg.Items); err != nil {
			return nil, fmt.Errorf("build the state: %w", err)
		}
		cfg.Logf("built in %v", time.Since(start).Round(time.Second))
	}
	st, err := os.Stat(statePath)
	if err != nil {
		return nil, err
	}
	res.StateFile = st.Size()

	peersDir := filepath.Join(cfg.Dir, "peers")
	_ = os.RemoveAll(peersDir)
	c, err := Launch(ctx, Options{Binary: cfg.Binary, N: 1, Dir: peersDir, Args: cfg.SenderArgs, Logf: cfg.Logf, RequestTimeout: cfg.Timeout})
	if err != nil {
		return nil, err
	}
	defer c.Close()

	cfg.Logf("loading the catalog into peer 0")
	start := time.Now()
	if err := postState(ctx, c, statePath); err != nil {
		return nil, err
	}
	res.Load = time.Since(start)
	cfg.Logf("loaded in %v; restarting peer 0, so that the load's garbage is not counted in its RSS", res.Load.Round(time.Millisecond))
	if err := c.Restart(ctx, 0); err != nil {
		return nil, err
	}

	c.ctl.Lock()
	c.opts.Args = cfg.ReceiverArgs // the new node's flags, from here on
	c.ctl.Unlock()
	sender := c.Peer(0).PID
	sampler := sampleRSS(sender)
	senderCPU := readCPU(sender)
	start = time.Now()
	i, err := c.AddPeer(ctx)
	if err != nil {
		sampler.stop()
		return nil, err
	}
	recv := sampleRSS(c.Peer(i).PID)
	jctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	cl := c.Client(i)
	for {
		s, err := cl.Status(jctx)
		if err == nil && s.P2P.FullStatesReceived > 0 && s.Items["snapshots"] == int64(cfg.Items) {
			break
		}
		select {
		case <-jctx.Done():
			sampler.stop()
			recv.stop()
			return nil, fmt.Errorf("the new node did not join within %v (last status error: %v)\n%s", cfg.Timeout, err, c.LogTail(i, 20))
		case <-time.After(50 * time.Millisecond):
		}
	}
	res.Join = time.Since(start)
	res.SenderCPU, res.RecvCPU = readCPU(sender)-senderCPU, readCPU(c.Peer(i).PID)
	res.SenderRSS, res.RecvRSS = sampler.stop(), recv.stop()
	res.Wire, res.Transfer, err = joinedLine(c.Peer(i).Log)
	return res, err
}

// postState posts the state file to peer 0's POST /crdt/state.
func postState(ctx context.Context, c *Cluster, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Peer(0).HTTP+"/crdt/state", f)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		return fmt.Errorf("POST /crdt/state: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /crdt/state: %d %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return nil
}

// joinedLine reads the bytes and duration of the full state that a
// peer's log says it joined.
func joinedLine(logPath string) (int64, time.Duration, error) {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		var e struct {
			Msg   string          `json:"msg"`
			Bytes int64           `json:"bytes"`
			Took  json.RawMessage `json:"took"` // slog's JSON: nanoseconds
		}
		if json.Unmarshal([]byte(l), &e) != nil || e.Msg != "anti-entropy: joined a full state" {
			continue
		}
		ns, err := strconv.ParseInt(string(e.Took), 10, 64)
		return e.Bytes, time.Duration(ns), err
	}
	return 0, 0, fmt.Errorf("no full-state join in %s", logPath)
}

// rssSampler records the peak resident set of a process.
type rssSampler struct {
	done chan struct{}
	wg   sync.WaitGroup
	peak int64
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if v := readRSS(pid); v > s.peak {
				s.peak = v
			}
			select {
			case <-s.done:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) stop() int64 {
	close(s.done)
	s.wg.Wait()
	return s.peak
}

// readRSS returns VmRSS of pid in bytes (0 if unknown).
func readRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// readCPU returns the user and system CPU time of pid so far (0 if
// unknown), from /proc/PID/stat, in clock ticks of 1/100 s.
func readCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command, which is in parentheses and may hold
	// spaces: utime and stime are the 12th and 13th of them.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}
