// Command httpload is a bounded load generator for the HTTP API of a real
// crdt-catalog node, on loopback only.
//
// It starts the node binary (building ./cmd/crdt-catalog with "go build"
// when -bin is empty) on a fresh data directory, or uses an already running
// node given by -addr, and runs two phases:
//
//  1. Adds: -clients goroutines over keep-alive connections POST
//     /snapshots/add/{id} with distinct ids and a JSON metadata document of
//     exactly -doc-bytes bytes, until -n adds were sent or -duration passed.
//     Every answer other than 201 counts as an error. It reports the
//     acknowledged adds per second and the latency of every request
//     (p50/p90/p99/max).
//  2. Queries (skipped with -query-items 0): it first tops the collection
//     up to -query-items items with the same loader (untimed), then times
//     GET /catalog/query for the first page of 100, a page whose cursor lies
//     in the middle of the id range, and a filter that scans every item
//     but matches few of them.
//
// It prints a plain-text report (with -json, a JSON one) that also gives
// the node's group-commit figures (from /metrics) and the CPU time of the
// node and of httpload itself, since both share the machine; then it stops
// the node with SIGTERM and checks that it exits with status 0 within 10 s.
//
// Every loop is bounded by a count and by a time limit: no add starts after
// -duration (or -fill-timeout), and adds in flight then get 10 s more; the
// timed queries stop at -query-timeout. The node it starts listens on
// 127.0.0.1 only: when its -help lists peer-to-peer flags, httpload passes
// -listen /ip4/127.0.0.1/tcp/0 and turns -dht, -mdns and -nat off, and it
// drops CRDT_CATALOG_* variables from the node's environment. -addr must
// name a loopback host.
//
// Usage, from the module root:
//
//	go run ./testnet/cmd/httpload -clients 32 -n 50000 -duration 60s
//	go run ./testnet/cmd/httpload -addr http://127.0.0.1:8080 -query-items 0
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Targets of the issue this tool measures.
const (
	targetAddsPerSec = 15000
	targetAddP99     = 10 * time.Millisecond
	targetPageP99    = 20 * time.Millisecond
)

// Fixed bounds of the harness.
const (
	collection     = "snapshots"
	pageLimit      = 100
	pageReps       = 200 // timed requests per page query
	scanReps       = 20  // timed requests of the full-scan filter
	buildTimeout   = 5 * time.Minute
	startTimeout   = 30 * time.Second
	stopTimeout    = 10 * time.Second
	requestTimeout = 30 * time.Second
	drainGrace     = 10 * time.Second // in-flight adds may finish this long after -duration
	scanQuery      = "size>=999999999"
	rareEvery      = 10000 // one document in rareEvery matches scanQuery
)

type options struct {
	bin          string
	addr         string
	clients      int
	n            int
	duration     time.Duration
	docBytes     int
	queryItems   int
	sync         bool
	data         string
	jsonOut      bool
	fillTimeout  time.Duration
	queryTimeout time.Duration

	watchers      int // the watch phase (watch.go); 0: skipped
	watchShards   int
	watchRate     int
	watchDuration time.Duration
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "httpload:", err)
		os.Exit(1)
	}
}

func parseFlags() (*options, error) {
	o := &options{}
	flag.StringVar(&o.bin, "bin", "", "crdt-catalog binary to run (empty: go build ./cmd/crdt-catalog into a temporary directory)")
	flag.StringVar(&o.addr, "addr", "", "base URL of an already running node on loopback (e.g. http://127.0.0.1:8080) instead of starting one")
	flag.IntVar(&o.clients, "clients", 32, "concurrent clients")
	flag.IntVar(&o.n, "n", 50000, "total adds of phase 1 (hard bound)")
	flag.DurationVar(&o.duration, "duration", 60*time.Second, "time bound of phase 1")
	flag.IntVar(&o.docBytes, "doc-bytes", 150, "size of each metadata document in bytes")
	flag.IntVar(&o.queryItems, "query-items", 100000, "items the collection holds during the query phase (0: skip the query phase)")
	flag.BoolVar(&o.sync, "sync", true, "passed to the node as -sync (fsync every group commit)")
	flag.StringVar(&o.data, "data", "", "data directory of the node (empty: a temporary directory, removed at the end)")
	flag.BoolVar(&o.jsonOut, "json", false, "print the report as JSON")
	flag.DurationVar(&o.fillTimeout, "fill-timeout", 5*time.Minute, "time bound of the untimed top-up before the query phase")
	flag.DurationVar(&o.queryTimeout, "query-timeout", 2*time.Minute, "time bound of the timed queries")
	flag.IntVar(&o.watchers, "watchers", 0, "watch phase after phase 1: this many GET /catalog/watch streams (0: skip it)")
	flag.IntVar(&o.watchShards, "watch-shards", 100, "watch phase: streams filter shard=j%S; each paced add reaches watchers/S of them (watchers must be a multiple)")
	flag.IntVar(&o.watchRate, "watch-rate", 1000, "watch phase: paced adds per second while the latency is measured")
	flag.DurationVar(&o.watchDuration, "watch-duration", 20*time.Second, "watch phase: how long the paced adds run")
	flag.Parse()
	if flag.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", flag.Arg(0))
	}
	switch {
	case o.clients < 1 || o.clients > 4096:
		return nil, fmt.Errorf("-clients must be 1-4096, got %d", o.clients)
	case o.n < 1 || o.n > 100_000_000:
		return nil, fmt.Errorf("-n must be 1-100000000, got %d", o.n)
	case o.duration <= 0:
		return nil, fmt.Errorf("-duration must be positive, got %v", o.duration)
	case o.docBytes < 0 || o.docBytes > 512<<10:
		return nil, fmt.Errorf("-doc-bytes must be 0-%d, got %d", 512<<10, o.docBytes)
	case o.queryItems < 0 || o.queryItems > 100_000_000:
		return nil, fmt.Errorf("-query-items must be 0-100000000, got %d", o.queryItems)
	case o.watchers < 0 || o.watchers > 10_000 || o.watchShards < 1 || o.watchers%o.watchShards != 0:
		return nil, fmt.Errorf("-watchers must be 0-10000 and a multiple of -watch-shards, got %d and %d", o.watchers, o.watchShards)
	case o.watchRate < 1 || o.watchRate > 100_000 || o.watchDuration <= 0 || o.watchDuration > time.Hour:
		return nil, errors.New("-watch-rate must be 1-100000 and -watch-duration positive, at most 1h")
	case o.fillTimeout <= 0 || o.queryTimeout <= 0:
		return nil, errors.New("-fill-timeout and -query-timeout must be positive")
	}
	if o.addr != "" {
		if o.bin != "" || o.data != "" {
			return nil, errors.New("-addr uses a running node: -bin and -data do not apply")
		}
		base, err := loopbackURL(o.addr)
		if err != nil {
			return nil, err
		}
		o.addr = base
	}
	return o, nil
}

// loopbackURL checks that raw is an http URL whose host is a loopback
// address and returns it without a trailing slash.
func loopbackURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("-addr: %w", err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return "", fmt.Errorf("-addr %q: want http://HOST:PORT", raw)
	}
	host := u.Hostname()
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", fmt.Errorf("-addr %q: host %q is not a loopback address; httpload only loads loopback nodes", raw, host)
	}
	return strings.TrimRight(u.Scheme+"://"+u.Host+u.Path, "/"), nil
}

// run does the whole measurement; the node is stopped on every path.
func run() (err error) {
	o, err := parseFlags()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A closed stdout or stderr (| head) must not kill httpload before it
	// stops the node: ignore SIGPIPE, so that writes fail instead.
	signal.Ignore(syscall.SIGPIPE)

	rep := &report{Machine: machine(), Config: config{
		Clients: o.clients, N: o.n, Duration: o.duration.String(), DocBytes: o.docBytes,
		QueryItems: o.queryItems, Args: os.Args[1:],
	}}

	base := o.addr
	var nd *nodeProc
	if base == "" {
		var cleanup func()
		nd, cleanup, err = startNode(ctx, o)
		if cleanup != nil {
			defer cleanup()
		}
		if err != nil {
			return err
		}
		if base, err = loopbackURL(nd.base); err != nil {
			return fmt.Errorf("node logged %w", err)
		}
		rep.Node = nodeInfo{Binary: nd.bin, Args: nd.args, Data: nd.data, Sync: strconv.FormatBool(o.sync), Addr: base, PID: nd.cmd.Process.Pid}
		defer func() {
			if nd != nil { // not stopped by the normal path
				nd.kill()
			}
		}()
	} else {
		rep.Node = nodeInfo{Addr: base, Sync: "unknown (external node)"}
	}
	progress("node at %s", base)

	var dials atomic.Int64
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy: nil, // loopback: never through a proxy
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        2 * o.clients,
		MaxIdleConnsPerHost: 2 * o.clients,
		MaxConnsPerHost:     o.clients, // one connection per client, reused
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: requestTimeout}
	lg := &loader{cl: cl, base: base, tag: "hl" + strconv.FormatInt(time.Now().UnixNano()/1e6, 36), docBytes: o.docBytes}
	rep.Config.IDPrefix = lg.tag
	rep.Config.DocBytesActual = len(lg.doc(0))

	phaseErr := runPhases(ctx, o, lg, nd, rep)
	rep.Add.Connections = dials.Load()
	tr.CloseIdleConnections()

	// Stop the node gracefully whatever happened above.
	if nd != nil {
		progress("stopping the node with SIGTERM")
		st := nd.stop()
		rep.Stop = &st
		rep.Node.LogWarnings = nd.logs.warnCount()
		tail := nd.logs.tail()
		nd = nil
		if !rep.Stop.OK {
			err = fmt.Errorf("node did not stop cleanly: %s\nlast log lines:\n%s", rep.Stop.Detail, strings.Join(tail, "\n"))
		}
	}
	if phaseErr != nil {
		if rep.Add.Latency.Count == 0 { // nothing measured: no report
			return errors.Join(phaseErr, err)
		}
		rep.Error = phaseErr.Error()
		err = errors.Join(phaseErr, err)
	}
	rep.evaluate()
	if o.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if werr := enc.Encode(rep); werr != nil && err == nil {
			err = werr
		}
	} else {
		rep.writeText(os.Stdout)
	}
	return err
}

// runPhases runs the add phase and, unless skipped, the query phase.
func runPhases(ctx context.Context, o *options, lg *loader, nd *nodeProc, rep *report) error {
	before, err := lg.scrape(ctx)
	if err != nil {
		return fmt.Errorf("before phase 1: %w", err)
	}
	cpu0 := cpuTimes(nd)
	progress("phase 1: %d adds by %d clients, at most %v", o.n, o.clients, o.duration)
	res := lg.load(ctx, 0, o.n, o.clients, o.duration, true)
	cpu1 := cpuTimes(nd)
	after, err := lg.scrape(ctx)
	if err != nil {
		return fmt.Errorf("after phase 1: %w", err)
	}
	rep.Add = res.summary()
	rep.Add.NodeCPUSec, rep.Add.LoadCPUSec = cpu1.node-cpu0.node, cpu1.self-cpu0.self
	if nd != nil && cpu1.machine > 0 {
		rep.Add.OtherCPUSec = max(0, cpu1.machine-cpu0.machine-rep.Add.NodeCPUSec-rep.Add.LoadCPUSec)
	}
	if rep.Add.ElapsedSec > 0 {
		rep.Add.NodeCPUPct = 100 * rep.Add.NodeCPUSec / rep.Add.ElapsedSec
		rep.Add.LoadCPUPct = 100 * rep.Add.LoadCPUSec / rep.Add.ElapsedSec
		rep.Add.OtherCPUPct = 100 * rep.Add.OtherCPUSec / rep.Add.ElapsedSec
	}
	if res.acked > 0 {
		rep.Add.NodeCPUPerAddUs = 1e6 * rep.Add.NodeCPUSec / float64(res.acked)
		rep.Add.LoadCPUPerAddUs = 1e6 * rep.Add.LoadCPUSec / float64(res.acked)
	}
	rep.Add.ItemsBefore, rep.Add.ItemsAfter = before.items, after.items
	if grew := after.items - before.items; grew != res.acked {
		rep.Add.Note = fmt.Sprintf("the collection grew by %d items but %d adds were acknowledged", grew, res.acked)
	}
	rep.Add.Commits = after.commits - before.commits
	if rep.Add.Commits > 0 {
		rep.Add.OpsPerCommit = (after.ops - before.ops) / rep.Add.Commits
		rep.Add.CommitMeanMs = 1000 * (after.commitSec - before.commitSec) / rep.Add.Commits
	}
	if rep.Add.ElapsedSec > 0 {
		rep.Add.CommitBusyPct = 100 * (after.commitSec - before.commitSec) / rep.Add.ElapsedSec
	}
	progress("phase 1: %d acknowledged in %.2fs (%.0f/s), %d errors", res.acked, res.elapsed.Seconds(), rep.Add.PerSec, res.errors)
	next := int(res.issued)
	if o.watchers > 0 && ctx.Err() == nil {
		if err := runWatchPhase(ctx, o, lg, nd, rep, next); err != nil {
			return err
		}
		if after, err = lg.scrape(ctx); err != nil {
			return fmt.Errorf("after the watch phase: %w", err)
		}
		next = int(after.items) // the watch phase's ids sort after phase 1's
	}
	if o.queryItems == 0 || ctx.Err() != nil {
		return ctx.Err()
	}

	// Top up to -query-items, ids continuing after phase 1's.
	fill := &fillInfo{Existing: int(after.items), Target: o.queryItems}
	rep.Fill = fill
	if missing := o.queryItems - int(after.items); missing > 0 {
		progress("phase 2: adding %d items (untimed, at most %v)", missing, o.fillTimeout)
		fr := lg.load(ctx, next, missing, o.clients, o.fillTimeout, false)
		fill.Added, fill.Errors, fill.ElapsedSec = int(fr.acked), int(fr.errors), fr.elapsed.Seconds()
		next += int(fr.issued)
	}
	st, err := lg.scrape(ctx)
	if err != nil {
		return fmt.Errorf("after the top-up: %w", err)
	}
	fill.Final = int(st.items)
	if fill.Final < o.queryItems {
		fill.Note = fmt.Sprintf("the collection holds %d items, fewer than -query-items %d", fill.Final, o.queryItems)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	// The id ranks in the middle of ours: on a fresh node, of the whole
	// collection.
	mid := lg.id(next / 2)
	deadline := time.Now().Add(o.queryTimeout)
	qs := []struct {
		name, q, cursor string
		reps            int
		target          bool
	}{
		{"first page (limit 100)", "", "", pageReps, true},
		{"middle page (limit 100, cursor " + mid + ")", "", mid, pageReps, true},
		{"full-scan filter " + scanQuery + " (limit 100)", scanQuery, "", scanReps, false},
	}
	for _, q := range qs {
		progress("phase 2: %d x %s", q.reps, q.name)
		rep.Queries = append(rep.Queries, lg.timeQuery(ctx, q.name, q.q, q.cursor, q.reps, q.target, deadline))
	}
	return ctx.Err()
}

// loader issues requests against one node.
type loader struct {
	cl       *http.Client
	base     string
	tag      string // id prefix of this run
	docBytes int
}

// id is the i-th id of this run; ids sort in i order.
func (l *loader) id(i int) string { return fmt.Sprintf("%s-%09d", l.tag, i) }

var epoch = time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC)

// doc is the metadata of the i-th item: fixed-width fields padded to
// docBytes. One in rareEvery has size 999999999 and matches scanQuery.
func (l *loader) doc(i int) []byte {
	size := 100_000_000 + (i*7919)%800_000_000
	if i%rareEvery == rareEvery-1 {
		size = 999_999_999
	}
	created := epoch.Add(time.Duration(i%500_000) * time.Minute).Format("2006-01-02T15:04:05Z")
	b := make([]byte, 0, max(l.docBytes, 160))
	b = fmt.Appendf(b, `{"size":%d,"created":"%s","cluster":"cluster-a","status":"completed","owner":"team-storage","region":"eu-west-1","pad":"`, size, created)
	for pad := l.docBytes - len(b) - 2; pad > 0; pad-- {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// loadResult is what one run of the loader saw.
type loadResult struct {
	issued, acked, errors int64
	elapsed               time.Duration
	stoppedBy             string
	latencies             []time.Duration // every completed request, if recorded
	errs                  map[string]int
}

// load adds items first..first+count-1 with clients workers until all were
// sent or limit passed; requests in flight then get drainGrace to finish.
func (l *loader) load(ctx context.Context, first, count, clients int, limit time.Duration, record bool) loadResult {
	start := time.Now()
	deadline := start.Add(limit)
	rctx, cancel := context.WithDeadline(ctx, deadline.Add(drainGrace))
	defer cancel()
	var (
		next, acked, errs atomic.Int64
		mu                sync.Mutex
		all               []time.Duration
		errKinds          = map[string]int{}
		timedOut          atomic.Bool
		wg                sync.WaitGroup
	)
	noteErr := func(kind string) {
		errs.Add(1)
		mu.Lock()
		if len(errKinds) < 20 || errKinds[kind] > 0 {
			errKinds[kind]++
		}
		mu.Unlock()
	}
	for range clients {
		wg.Go(func() {
			var lat []time.Duration
			if record {
				lat = make([]time.Duration, 0, count/clients+1)
				defer func() {
					mu.Lock()
					all = append(all, lat...)
					mu.Unlock()
				}()
			}
			for {
				if rctx.Err() != nil {
					return
				}
				if !time.Now().Before(deadline) {
					timedOut.Store(true)
					return
				}
				i := int(next.Add(1) - 1)
				if i >= count {
					return
				}
				t0 := time.Now()
				code, err := l.add(rctx, first+i)
				took := time.Since(t0)
				if record {
					lat = append(lat, took)
				}
				switch {
				case err != nil:
					noteErr(errKind(err))
				case code != http.StatusCreated:
					noteErr("status " + strconv.Itoa(code))
				default:
					acked.Add(1)
				}
			}
		})
	}
	wg.Wait()
	res := loadResult{
		issued: min(next.Load(), int64(count)), acked: acked.Load(), errors: errs.Load(),
		elapsed: time.Since(start), latencies: all, errs: errKinds,
	}
	res.stoppedBy = "count (-n)"
	switch {
	case ctx.Err() != nil:
		res.stoppedBy = "interrupt"
	case timedOut.Load():
		res.stoppedBy = "time (-duration)"
	}
	return res
}

// errKind names an error compactly for the error table.
func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	s := err.Error()
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}

// add POSTs item i and returns the status after reading the whole answer.
func (l *loader) add(ctx context.Context, i int) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.base+"/"+collection+"/add/"+l.id(i), bytes.NewReader(l.doc(i)))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.cl.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}
