package testnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// Targets of the cluster benchmark (issue 5).
const (
	// TargetVisibilityP50 bounds the median visibility latency under
	// 1,000 writes/s over 5 peers.
	TargetVisibilityP50 = 50 * time.Millisecond
	// TargetVisibilityP99 bounds its 99th percentile.
	TargetVisibilityP99 = 250 * time.Millisecond
	// TargetCatchUp bounds the catch-up of a peer that missed 10,000
	// writes.
	TargetCatchUp = 2 * time.Second
	// TargetBytesFactor bounds the bytes sent per replicated add (per
	// delivery to one other peer) as a multiple of the encoded delta.
	TargetBytesFactor = 3
)

// benchColl is the collection the benchmark writes.
const benchColl = "snapshots"

// BenchConfig configures RunBench. Zero values take the defaults given
// per field. Every loop is bounded by a count and by a time.
type BenchConfig struct {
	// Binary is the crdt-catalog executable. Required.
	Binary string
	// N is the number of peers, all on loopback. Default 5.
	N int
	// Rate is the offered load: writes per second over all peers, issued
	// open-loop (on schedule, whether earlier writes have returned or
	// not). Default 1000.
	Rate int
	// Duration of the load. Default 20s.
	Duration time.Duration
	// MaxOps caps the writes of the load. Default Rate×Duration; at most
	// 1,000,000.
	MaxOps int
	// MaxInFlight caps concurrent writes; when all are busy the schedule
	// slips (counted as late). Default 256.
	MaxInFlight int
	// SampleEvery: every SampleEvery-th write is watched on every other
	// peer for its visibility latency. Default Rate/20 (20 samples/s).
	SampleEvery int
	// PollInterval is the visibility watchers' finest pace: a watcher
	// polls every PollInterval, or every tenth of the time since the
	// acknowledgement once that is longer, so that the resolution stays
	// within 10% of the latency measured while slow watches cost few GETs.
	// Default 2ms.
	PollInterval time.Duration
	// VisibilityTimeout bounds one watch. Default 10s.
	VisibilityTimeout time.Duration
	// CatchUp is K, the writes a stopped peer misses before its restart
	// is timed. Default 10000; negative skips the phase.
	CatchUp int
	// Mix is the share, in percent, of adds, metadata updates and removes.
	// Default 60/25/15.
	Mix [3]int
	// Seed draws every random choice. Default: ResolveSeed(0).
	Seed int64
	// Dir, Keep and Args are passed to Launch.
	Dir  string
	Keep bool
	Args []string
	// Logf receives progress lines. Default: discard.
	Logf func(format string, args ...any) `json:"-"`
}

func (c *BenchConfig) fill() error {
	if c.Binary == "" {
		return errors.New("bench: Binary is required")
	}
	if c.N == 0 {
		c.N = 5
	}
	if c.N < 2 {
		return fmt.Errorf("bench: N must be at least 2, got %d", c.N)
	}
	if c.Rate == 0 {
		c.Rate = 1000
	}
	if c.Duration == 0 {
		c.Duration = 20 * time.Second
	}
	if c.MaxOps == 0 {
		c.MaxOps = int(float64(c.Rate) * c.Duration.Seconds())
	}
	c.MaxOps = min(c.MaxOps, 1_000_000)
	if c.Rate < 1 || c.Duration < 0 || c.MaxOps < 1 {
		return fmt.Errorf("bench: need Rate, Duration and MaxOps positive")
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 256
	}
	if c.SampleEvery == 0 {
		c.SampleEvery = max(1, c.Rate/20)
	}
	if c.PollInterval == 0 {
		c.PollInterval = 2 * time.Millisecond
	}
	if c.VisibilityTimeout == 0 {
		c.VisibilityTimeout = 10 * time.Second
	}
	if c.CatchUp == 0 {
		c.CatchUp = 10000
	}
	if c.Mix == [3]int{} {
		c.Mix = [3]int{60, 25, 15}
	}
	if c.Seed == 0 {
		c.Seed = ResolveSeed(0)
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return nil
}

// Latencies summarizes a set of durations.
type Latencies struct {
	N        int
	P50, P99 time.Duration
	Max      time.Duration
	Timeouts int // watches that never saw the write
}

func summarize(ds []time.Duration, timeouts int) Latencies {
	l := Latencies{N: len(ds), Timeouts: timeouts}
	if len(ds) == 0 {
		return l
	}
	slices.Sort(ds)
	q := func(p float64) time.Duration { return ds[min(len(ds)-1, int(p*float64(len(ds))))] }
	l.P50, l.P99, l.Max = q(0.50), q(0.99), ds[len(ds)-1]
	return l
}

// String formats l as "p50 … p99 … max … (n=…)".
func (l Latencies) String() string {
	s := fmt.Sprintf("p50 %v, p99 %v, max %v (n=%d)", l.P50.Round(10*time.Microsecond), l.P99.Round(10*time.Microsecond), l.Max.Round(10*time.Microsecond), l.N)
	if l.Timeouts > 0 {
		s += fmt.Sprintf(", %d never seen", l.Timeouts)
	}
	return s
}

// BenchResult is what RunBench measured.
type BenchResult struct {
	Config  BenchConfig
	Started time.Time
	LoadAvg [2]string // /proc/loadavg before and after
	// CPUPressure and IOPressure are the "some" lines of
	// /proc/pressure/{cpu,io} after the load (share of time some task
	// waited for a CPU, or for I/O, over 10, 60 and 300 s): other work on
	// the machine shows up here.
	CPUPressure, IOPressure string

	// The load.
	Ops, OK, Failed, Unknown int
	ByKind                   map[Kind]int
	LoadTime                 time.Duration // first scheduled write to last acknowledgement
	Achieved                 float64       // acknowledged writes per second over LoadTime
	Late                     int           // writes sent more than 10 ms after their scheduled time
	MaxLag                   time.Duration
	WriteLatency             Latencies // send to acknowledgement
	Visibility               Latencies // acknowledgement on the writer to first sight on another peer
	VisibilityByKind         map[Kind]Latencies
	Convergence              time.Duration // last acknowledgement to equal version vectors everywhere

	// Traffic: catalog_p2p_bytes_sent_total, summed over the peers, from
	// just before the load to convergence.
	BytesSent        int64
	BytesPerOp       float64 // per acknowledged write
	BytesPerDelivery float64 // per acknowledged write and other peer
	DeltaBytes       int     // encoded size of one add delta of the benchmark's document
	Published        int64   // gossip messages published (all peers)
	PublishedDeltas  int64   // deltas in them

	Memory []Memory // per peer, after the load

	// Where the time went during the load (from just before it to
	// convergence): CPU seconds of each peer and of the harness (the load
	// generator and the visibility watchers), the watchers' GETs, and the
	// peers' group commits (count and seconds, summed).
	PeerCPU       []float64
	HarnessCPU    float64
	Wall          time.Duration
	Polls         int64
	Commits       int64
	CommitSeconds float64
	RemoteNew     int64 // remote deltas joined (all peers)
	RemoteDup     int64 // remote deltas that were duplicates
	SyncBytes     int64 // of BytesSent, bytes sent on anti-entropy streams
	SyncDeltas    int64 // deltas received by anti-entropy pulls
	Rounds        int64 // anti-entropy pulls completed
	Gaps          int64 // gossip messages that showed a missed delta (each triggers a pull)

	// GossipSub's own accounting (all peers): bytes of messages and of
	// control traffic queued for sending, duplicate messages received, and
	// RPCs dropped on full queues.
	GossipMessageBytes int64
	GossipControlBytes int64
	GossipDuplicates   int64
	GossipDroppedRPCs  int64

	// Catch-up of a peer that missed CatchUp writes.
	CatchUpWrites    int
	CatchUpWriteTime time.Duration // writing them on the other peers
	CatchUpFromExec  time.Duration // restart (exec) to equal version vector
	CatchUpFromReady time.Duration // the restarted peer's HTTP address logged to equal version vector
	CatchUpFull      bool          // the peer received a full state rather than deltas
	CatchUpDeltas    int64         // deltas it received by anti-entropy
}

// benchDoc is the ~150-byte document of node/bench_test.go; the client
// adds the operation tag "op".
func benchDoc(i int) map[string]any {
	return map[string]any{"size": 1<<30 + i, "created": "2023-12-07T10:30:45Z", "cluster": "cluster-a",
		"status": "completed", "region": "eu-west-1", "owner": "team-storage", "tier": "gold"}
}

// deltaSize encodes the add delta of benchDoc(0) with a tag like the
// client's, as a node with a 16-hex-digit replica ID makes it.
func deltaSize() (int, error) {
	doc := benchDoc(0)
	doc["op"] = "p0.123456"
	js, err := json.Marshal(doc)
	if err != nil {
		return 0, err
	}
	d, err := crdt.ParseDocument(js)
	if err != nil {
		return 0, err
	}
	dot := crdt.Dot{Replica: "3f2a9c41d07e5b68", Counter: 123456}
	ts := crdt.MakeTimestamp(time.Date(2023, 12, 7, 10, 30, 45, 0, time.UTC).UnixMilli(), 0)
	delta, err := crdt.AddDelta(crdt.Key{Collection: benchColl, ID: "b0-000123"}, nil, d, dot, ts)
	if err != nil {
		return 0, err
	}
	enc, err := crdt.EncodeDelta(delta)
	return len(enc), err
}

// idPool holds, per peer, the ids the benchmark added there and has not
// removed, minus those with an operation or a watch in flight.
type idPool struct {
	mu   sync.Mutex
	live [][]string
}

func (p *idPool) take(peer int, rng *rand.Rand) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := p.live[peer]
	if len(ids) == 0 {
		return "", false
	}
	k := rng.IntN(len(ids))
	id := ids[k]
	ids[k] = ids[len(ids)-1]
	p.live[peer] = ids[:len(ids)-1]
	return id, true
}

func (p *idPool) put(peer int, id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.live[peer] = append(p.live[peer], id)
}

// RunBench launches a loopback cluster of cfg.N peers and measures it
// under an open-loop write load; see BenchConfig and BenchResult. It
// closes the cluster before returning. A result is returned with the
// phases that completed even when a later phase fails.
func RunBench(ctx context.Context, cfg BenchConfig) (*BenchResult, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	res := &BenchResult{Config: cfg, Started: time.Now(), ByKind: map[Kind]int{}, VisibilityByKind: map[Kind]Latencies{}}
	res.LoadAvg[0] = loadAvg()
	var err error
	if res.DeltaBytes, err = deltaSize(); err != nil {
		return nil, err
	}
	c, err := Launch(ctx, Options{Binary: cfg.Binary, N: cfg.N, Network: "bench", Dir: cfg.Dir, Keep: cfg.Keep,
		Args: cfg.Args, Seed: cfg.Seed, PollInterval: 10 * time.Millisecond, Logf: cfg.Logf})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	err = runBench(ctx, c, cfg, res)
	res.LoadAvg[1] = loadAvg()
	return res, err
}

func runBench(ctx context.Context, c *Cluster, cfg BenchConfig, res *BenchResult) error {
	n := cfg.N
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := c.AwaitConnected(wctx, n-1); err != nil {
		return err
	}
	for i := range n {
		if r := c.Client(i).Add(wctx, benchColl, fmt.Sprintf("warmup-%d", i), nil); r.Outcome != OK {
			return fmt.Errorf("warm-up write on peer %d: %+v", i, r)
		}
	}
	if _, err := c.AwaitVersions(wctx); err != nil {
		return err
	}
	cfg.Logf("bench: %d peers connected and warmed up", n)
	before, err := sumMetrics(ctx, c)
	if err != nil {
		return err
	}
	cpuBefore := make([]float64, n)
	for i := range n {
		cpuBefore[i] = procCPU(c.Peer(i).PID)
	}
	selfBefore := selfCPU()
	wallBefore := time.Now()

	// The load.
	rng := Rand(cfg.Seed, "bench-load")
	pool := &idPool{live: make([][]string, n)}
	sem := make(chan struct{}, cfg.MaxInFlight)
	var (
		wg, watchWG        sync.WaitGroup
		mu                 sync.Mutex // guards the slices and counters below
		writeLat           []time.Duration
		vis                = map[Kind][]time.Duration{}
		visTimeouts        = map[Kind]int{}
		lastAck            time.Time
		addSeq             atomic.Int64
		polls              atomic.Int64
		loadStart          = time.Now()
		interval           = time.Second / time.Duration(cfg.Rate)
		deadline           = loadStart.Add(cfg.Duration)
		hardStop           = deadline.Add(time.Minute)
		reqCtx, reqCancel  = context.WithDeadline(ctx, hardStop)
		watchCtx, wcCancel = context.WithDeadline(ctx, hardStop.Add(cfg.VisibilityTimeout))
	)
	defer reqCancel()
	defer wcCancel()
	// watch polls every other peer for one write and calls done when every
	// watcher has finished.
	watch := func(kind Kind, origin int, id, tag string, acked time.Time, done func()) {
		var one sync.WaitGroup
		for q := range n {
			if q == origin {
				continue
			}
			one.Add(1)
			watchWG.Go(func() {
				defer one.Done()
				cl := c.Client(q)
				end := acked.Add(cfg.VisibilityTimeout)
				for time.Now().Before(end) && watchCtx.Err() == nil {
					polls.Add(1)
					it, ok, err := cl.Get(watchCtx, benchColl, id)
					seen := err == nil && ((kind == KindRemove && !ok) || (kind != KindRemove && ok && it.Metadata["op"] == tag))
					if seen {
						d := time.Since(acked)
						mu.Lock()
						vis[kind] = append(vis[kind], d)
						mu.Unlock()
						return
					}
					time.Sleep(max(cfg.PollInterval, time.Since(acked)/10))
				}
				mu.Lock()
				visTimeouts[kind]++
				mu.Unlock()
			})
		}
		watchWG.Go(func() { one.Wait(); done() })
	}
	ops := 0
	for i := 0; i < cfg.MaxOps; i++ {
		due := loadStart.Add(time.Duration(i) * interval)
		if !due.Before(deadline) || ctx.Err() != nil {
			break
		}
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		sem <- struct{}{}
		if lag := time.Since(due); lag > 10*time.Millisecond {
			res.Late++
			res.MaxLag = max(res.MaxLag, lag)
		}
		peer := rng.IntN(n)
		kind := KindAdd
		switch x := rng.IntN(100); {
		case x < cfg.Mix[0]:
		case x < cfg.Mix[0]+cfg.Mix[1]:
			kind = KindPut
		default:
			kind = KindRemove
		}
		var id string
		if kind != KindAdd {
			var ok bool
			if id, ok = pool.take(peer, rng); !ok {
				kind = KindAdd
			}
		}
		if kind == KindAdd {
			id = fmt.Sprintf("b%d-%06d", peer, addSeq.Add(1))
		}
		sample := i%cfg.SampleEvery == 0
		seq := i
		ops++
		wg.Go(func() {
			defer func() { <-sem }()
			cl := c.Client(peer)
			sent := time.Now()
			var r Result
			switch kind {
			case KindAdd:
				r = cl.Add(reqCtx, benchColl, id, benchDoc(seq))
			case KindPut:
				r = cl.Put(reqCtx, benchColl, id, benchDoc(seq))
			case KindRemove:
				r = cl.Remove(reqCtx, benchColl, id)
			}
			acked := time.Now()
			mu.Lock()
			res.ByKind[kind]++
			switch r.Outcome {
			case OK:
				res.OK++
				writeLat = append(writeLat, acked.Sub(sent))
				if acked.After(lastAck) {
					lastAck = acked
				}
			case Failed:
				res.Failed++
			default:
				res.Unknown++
			}
			mu.Unlock()
			switch {
			case r.Outcome != OK:
				return
			case !sample:
				if kind != KindRemove {
					pool.put(peer, id)
				}
				return
			}
			watch(kind, peer, id, r.Tag, acked, func() {
				if kind != KindRemove {
					pool.put(peer, id)
				}
			})
		})
	}
	res.Ops = ops
	cfg.Logf("bench: %d writes scheduled; waiting for the last acknowledgements", ops)
	wg.Wait()
	res.LoadTime = lastAck.Sub(loadStart)
	if res.LoadTime > 0 {
		res.Achieved = float64(res.OK) / res.LoadTime.Seconds()
	}
	cctx, ccancel := context.WithTimeout(ctx, 2*time.Minute)
	defer ccancel()
	convergedAt, err := c.AwaitVersions(cctx)
	if err != nil {
		return fmt.Errorf("convergence after the load: %w", err)
	}
	res.Convergence = max(0, convergedAt.Sub(lastAck))
	watchWG.Wait()
	res.WriteLatency = summarize(writeLat, 0)
	var all []time.Duration
	allTimeouts := 0
	for k, ds := range vis {
		res.VisibilityByKind[k] = summarize(slices.Clone(ds), visTimeouts[k])
		all = append(all, ds...)
		allTimeouts += visTimeouts[k]
	}
	for k, t := range visTimeouts {
		if _, ok := vis[k]; !ok {
			res.VisibilityByKind[k] = summarize(nil, t)
		}
	}
	res.Visibility = summarize(all, allTimeouts)
	after, err := sumMetrics(ctx, c)
	if err != nil {
		return err
	}
	res.Wall = time.Since(wallBefore)
	res.HarnessCPU = selfCPU() - selfBefore
	res.Polls = polls.Load()
	for i := range n {
		res.PeerCPU = append(res.PeerCPU, procCPU(c.Peer(i).PID)-cpuBefore[i])
	}
	res.Commits = int64(after["catalog_commits_total"] - before["catalog_commits_total"])
	res.CommitSeconds = after["catalog_commit_seconds_total"] - before["catalog_commit_seconds_total"]
	res.RemoteNew = int64(after[`catalog_remote_deltas_total{result="new"}`] - before[`catalog_remote_deltas_total{result="new"}`])
	res.RemoteDup = int64(after[`catalog_remote_deltas_total{result="duplicate"}`] - before[`catalog_remote_deltas_total{result="duplicate"}`])
	diff := func(name string) int64 { return int64(after[name] - before[name]) }
	res.SyncBytes = diff("catalog_p2p_sync_bytes_sent_total")
	res.SyncDeltas = diff("catalog_p2p_sync_deltas_received_total")
	res.Rounds = diff("catalog_p2p_antientropy_rounds_total")
	res.Gaps = diff("catalog_p2p_gaps_total")
	res.GossipMessageBytes = diff("catalog_p2p_gossip_message_bytes_total")
	res.GossipControlBytes = diff("catalog_p2p_gossip_control_bytes_total")
	res.GossipDuplicates = diff("catalog_p2p_gossip_duplicates_total")
	res.GossipDroppedRPCs = diff("catalog_p2p_gossip_dropped_rpcs_total")
	res.BytesSent = int64(after["catalog_p2p_bytes_sent_total"] - before["catalog_p2p_bytes_sent_total"])
	res.Published = int64(after["catalog_p2p_messages_published_total"] - before["catalog_p2p_messages_published_total"])
	res.PublishedDeltas = int64(after["catalog_p2p_deltas_published_total"] - before["catalog_p2p_deltas_published_total"])
	if res.OK > 0 {
		res.BytesPerOp = float64(res.BytesSent) / float64(res.OK)
		res.BytesPerDelivery = res.BytesPerOp / float64(n-1)
	}
	for i := range n {
		m, err := c.Memory(i)
		if err != nil {
			return err
		}
		res.Memory = append(res.Memory, m)
	}
	if _, err := c.AwaitConverged(cctx); err != nil {
		return fmt.Errorf("listings after the load: %w", err)
	}
	res.CPUPressure, res.IOPressure = pressure("cpu"), pressure("io")
	cfg.Logf("bench: load done: %d ok writes, visibility %v, convergence %v", res.OK, res.Visibility, res.Convergence)
	if cfg.CatchUp < 0 {
		return nil
	}
	return catchUp(ctx, c, cfg, res)
}

// catchUp stops the last peer, writes cfg.CatchUp adds on the others
// (32 at a time), waits until they agree, restarts the peer and times
// until its applied version vector equals theirs.
func catchUp(ctx context.Context, c *Cluster, cfg BenchConfig, res *BenchResult) error {
	n := cfg.N
	victim := n - 1
	if err := c.Stop(victim); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var (
		next   atomic.Int64
		failed atomic.Int64
		wg     sync.WaitGroup
	)
	t0 := time.Now()
	for w := range 32 {
		wg.Go(func() {
			cl := c.Client(w % (n - 1))
			for wctx.Err() == nil {
				i := next.Add(1)
				if i > int64(cfg.CatchUp) {
					return
				}
				if r := cl.Add(wctx, benchColl, fmt.Sprintf("c-%06d", i), benchDoc(int(i))); r.Outcome != OK {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	res.CatchUpWriteTime = time.Since(t0)
	res.CatchUpWrites = cfg.CatchUp - int(failed.Load())
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("catch-up: %d of %d writes failed", f, cfg.CatchUp)
	}
	if _, err := c.AwaitVersions(wctx); err != nil {
		return fmt.Errorf("catch-up: the others did not agree: %w", err)
	}
	sts, err := c.Statuses(wctx, []int{0})
	if err != nil {
		return err
	}
	want := sts[0].Version
	cfg.Logf("bench: peer %d missed %d writes; restarting it", victim, res.CatchUpWrites)
	start := time.Now()
	if err := c.Restart(wctx, victim); err != nil {
		return err
	}
	ready := time.Now()
	cl := c.Client(victim)
	for {
		st, err := cl.Status(wctx)
		if err == nil && mapsEqual(st.Version, want) {
			done := time.Now()
			res.CatchUpFromExec, res.CatchUpFromReady = done.Sub(start), done.Sub(ready)
			res.CatchUpFull = st.P2P.FullStatesReceived > 0
			res.CatchUpDeltas = int64(st.P2P.SyncDeltasReceived)
			break
		}
		if wctx.Err() != nil {
			return fmt.Errorf("catch-up: peer %d did not catch up: %w (last error %v)", victim, wctx.Err(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := c.AwaitConverged(wctx); err != nil {
		return fmt.Errorf("catch-up: %w", err)
	}
	cfg.Logf("bench: caught up in %v", res.CatchUpFromExec)
	return nil
}

func mapsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// sumMetrics adds up the peers' metrics by name.
func sumMetrics(ctx context.Context, c *Cluster) (map[string]float64, error) {
	out := map[string]float64{}
	for _, i := range c.Live() {
		m, err := c.Client(i).Metrics(ctx)
		if err != nil {
			return nil, fmt.Errorf("metrics of peer %d: %w", i, err)
		}
		for k, v := range m {
			out[k] += v
		}
	}
	return out, nil
}

// procCPU returns the user and system CPU seconds of process pid, from
// /proc/pid/stat (clock ticks of 1/100 s), or 0.
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	var ut, st float64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return (ut + st) / 100
}

// selfCPU returns this process's user and system CPU seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// pressure returns the "some" line of /proc/pressure/<what>, or "?".
func pressure(what string) string {
	b, err := os.ReadFile("/proc/pressure/" + what)
	if err != nil {
		return "?"
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimPrefix(line, "some ")
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// Print writes a plain-text report with each target and whether it was
// met.
func (r *BenchResult) Print(w io.Writer) {
	cfg := r.Config
	met := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "NO"
	}
	fmt.Fprintf(w, "cluster benchmark: %d peers on loopback, %d writes/s offered for %v (cap %d), mix add/put/remove %d/%d/%d, seed %d\n",
		cfg.N, cfg.Rate, cfg.Duration, cfg.MaxOps, cfg.Mix[0], cfg.Mix[1], cfg.Mix[2], cfg.Seed)
	if len(cfg.Args) > 0 {
		fmt.Fprintf(w, "peer flags: %s\n", strings.Join(cfg.Args, " "))
	}
	fmt.Fprintf(w, "started %s; load average before: %s; after: %s\n", r.Started.Format(time.RFC3339), r.LoadAvg[0], r.LoadAvg[1])
	fmt.Fprintf(w, "pressure after the load: cpu %s; io %s\n", r.CPUPressure, r.IOPressure)
	fmt.Fprintf(w, "writes: %d sent (%d add, %d put, %d remove), %d ok, %d failed, %d unknown; %.0f ok/s over %v; %d sent >10ms late (max lag %v)\n",
		r.Ops, r.ByKind[KindAdd], r.ByKind[KindPut], r.ByKind[KindRemove], r.OK, r.Failed, r.Unknown, r.Achieved, r.LoadTime.Round(time.Millisecond), r.Late, r.MaxLag.Round(time.Millisecond))
	fmt.Fprintf(w, "write latency (send to ack): %v\n", r.WriteLatency)
	fmt.Fprintf(w, "visibility (ack to first sight on another peer, every %dth write, polled every %v): %v\n", cfg.SampleEvery, cfg.PollInterval, r.Visibility)
	for _, k := range []Kind{KindAdd, KindPut, KindRemove} {
		if l, ok := r.VisibilityByKind[k]; ok {
			fmt.Fprintf(w, "  %-6s %v\n", k, l)
		}
	}
	fmt.Fprintf(w, "convergence after the load (last ack to equal version vectors): %v\n", r.Convergence.Round(time.Millisecond))
	fmt.Fprintf(w, "libp2p bytes sent: %d in all; %.0f per ok write; %.0f per write and receiving peer; encoded add delta %d B; %d gossip messages carrying %d deltas\n",
		r.BytesSent, r.BytesPerOp, r.BytesPerDelivery, r.DeltaBytes, r.Published, r.PublishedDeltas)
	fmt.Fprintf(w, "  of which anti-entropy streams: %d bytes (%d pulls, %d deltas received by pulls, %d gossip messages showed a gap)\n",
		r.SyncBytes, r.Rounds, r.SyncDeltas, r.Gaps)
	fmt.Fprintf(w, "  GossipSub: %d bytes of messages and %d of control queued; %d duplicate messages received; %d RPCs dropped\n",
		r.GossipMessageBytes, r.GossipControlBytes, r.GossipDuplicates, r.GossipDroppedRPCs)
	for i, m := range r.Memory {
		cpu := 0.0
		if i < len(r.PeerCPU) {
			cpu = r.PeerCPU[i]
		}
		fmt.Fprintf(w, "peer %d RSS %.1f MiB (peak %.1f MiB), CPU %.1f s\n", i, float64(m.RSS)/(1<<20), float64(m.Peak)/(1<<20), cpu)
	}
	var peerCPU float64
	for _, v := range r.PeerCPU {
		peerCPU += v
	}
	fmt.Fprintf(w, "CPU over %v of load and convergence: peers %.1f s, harness %.1f s (%d visibility GETs), on %d cores\n",
		r.Wall.Round(time.Millisecond), peerCPU, r.HarnessCPU, r.Polls, runtime.NumCPU())
	if r.Commits > 0 {
		fmt.Fprintf(w, "group commits: %d (%.2f ms each on average, %.1f s in all); remote deltas joined %d, duplicates %d\n",
			r.Commits, 1000*r.CommitSeconds/float64(r.Commits), r.CommitSeconds, r.RemoteNew, r.RemoteDup)
	}
	if r.CatchUpWrites > 0 {
		fmt.Fprintf(w, "catch-up: %d writes missed (written in %v); restart to caught up %v (from HTTP ready %v); full state: %v; deltas by anti-entropy: %d\n",
			r.CatchUpWrites, r.CatchUpWriteTime.Round(time.Millisecond), r.CatchUpFromExec.Round(time.Millisecond), r.CatchUpFromReady.Round(time.Millisecond), r.CatchUpFull, r.CatchUpDeltas)
	}
	fmt.Fprintf(w, "targets:\n")
	fmt.Fprintf(w, "  visibility p50 <= %v: %v (%s)\n", TargetVisibilityP50, r.Visibility.P50.Round(10*time.Microsecond), met(r.Visibility.N > 0 && r.Visibility.Timeouts == 0 && r.Visibility.P50 <= TargetVisibilityP50))
	fmt.Fprintf(w, "  visibility p99 <= %v: %v (%s)\n", TargetVisibilityP99, r.Visibility.P99.Round(10*time.Microsecond), met(r.Visibility.N > 0 && r.Visibility.Timeouts == 0 && r.Visibility.P99 <= TargetVisibilityP99))
	if r.CatchUpWrites > 0 {
		fmt.Fprintf(w, "  catch-up of %d writes <= %v: %v (%s)\n", r.CatchUpWrites, TargetCatchUp, r.CatchUpFromExec.Round(time.Millisecond), met(r.CatchUpFromExec <= TargetCatchUp))
	}
	fmt.Fprintf(w, "  bytes per replicated write <= %d x %d B = %d B: %.0f B (%s)\n", TargetBytesFactor, r.DeltaBytes, TargetBytesFactor*r.DeltaBytes, r.BytesPerDelivery, met(r.BytesPerDelivery <= float64(TargetBytesFactor*r.DeltaBytes)))
}
