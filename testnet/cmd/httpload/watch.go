package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The watch phase (-watchers N > 0), after phase 1:
//
//  W1. The write rate with N idle watchers: N streams of GET
//     /catalog/watch on the collection, with a filter no add matches
//     (each stream's goroutine on the node still wakes for every commit
//     and evaluates the filter), while phase 1's load runs again; then
//     the same load without them. Reported against the mean of the two
//     runs without watchers (phase 1 and this one).
//  W2. Event latency: N streams, stream j filtering shard=j%S (S =
//     -watch-shards), while one paced writer adds -watch-rate items a
//     second for -watch-duration, item i with shard i%S and its send time.
//     Each change an item's N/S watchers receive gives one latency, from
//     the start of the add's request to the line arriving: it includes
//     the add's commit (and fsync). Also the node's CPU and memory.

// watchReport is what the watch phase measured.
type watchReport struct {
	Watchers         int     `json:"watchers"`
	Shards           int     `json:"shards"`
	IdleAddsPerSec   float64 `json:"idle_adds_per_sec"`
	NoneAddsPerSec   float64 `json:"none_adds_per_sec"` // mean of phase 1 and the run after W1
	AfterAddsPerSec  float64 `json:"after_adds_per_sec"`
	IdleRatioPct     float64 `json:"idle_ratio_pct"`
	Rate             int     `json:"rate"`
	Writes           int64   `json:"writes"`
	WriteErrors      int64   `json:"write_errors"`
	Expected         int64   `json:"expected_events"`
	Received         int64   `json:"received_events"`
	Latency          latency `json:"latency"`
	AddLatency       latency `json:"add_latency"` // of the paced adds themselves
	NodeCPUPct       float64 `json:"node_cpu_pct"`
	LoadCPUPct       float64 `json:"load_cpu_pct"`
	NodeRSSMiB       float64 `json:"node_rss_mib"`
	NodeRSSIdleMiB   float64 `json:"node_rss_before_watchers_mib"`
	NodeRSSPeakMiB   float64 `json:"node_rss_peak_mib"`
	StreamsCut       int64   `json:"streams_cut"`
	ElapsedSec       float64 `json:"elapsed_sec"`
	LatencyP99Target float64 `json:"latency_p99_target_ms"`
}

// streams opens n watch streams with the filter of stream j, and reads
// each on its own goroutine, calling line with the stream's lines, until
// stop is called; open returns once every stream answered.
func (l *loader) streams(ctx context.Context, n int, filter func(j int) string, line func(j int, b []byte, at time.Time)) (stop func() int64, err error) {
	ctx, cancel := context.WithCancel(ctx)
	var (
		wg    sync.WaitGroup
		cut   atomic.Int64
		ready = make(chan error, n)
	)
	tr := &http.Transport{Proxy: nil, MaxConnsPerHost: 0, MaxIdleConnsPerHost: n, DisableCompression: true}
	cl := &http.Client{Transport: tr}
	for j := range n {
		wg.Go(func() {
			q := url.Values{"type": {collection}, "q": {filter(j)}}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.base+"/catalog/watch?"+q.Encode(), nil)
			if err != nil {
				ready <- err
				return
			}
			req.Header.Set("Accept", "application/x-ndjson")
			resp, err := cl.Do(req)
			if err != nil {
				ready <- err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
				ready <- fmt.Errorf("watch: %d %s", resp.StatusCode, b)
				return
			}
			ready <- nil
			r := bufio.NewReaderSize(resp.Body, 16<<10)
			for {
				b, err := r.ReadSlice('\n')
				if err != nil {
					if ctx.Err() == nil {
						cut.Add(1)
					}
					return
				}
				line(j, b, time.Now())
			}
		})
	}
	stop = func() int64 {
		cancel()
		wg.Wait()
		tr.CloseIdleConnections()
		return cut.Load()
	}
	for range n {
		if e := <-ready; e != nil && err == nil {
			err = e
		}
	}
	if err != nil {
		stop()
		return nil, err
	}
	return stop, nil
}

// runWatchPhase runs W1 and W2; first is the first unused item index.
func runWatchPhase(ctx context.Context, o *options, lg *loader, nd *nodeProc, rep *report, first int) error {
	wr := &watchReport{Watchers: o.watchers, Shards: o.watchShards, Rate: o.watchRate, LatencyP99Target: 50}
	rep.Watch = wr
	if nd != nil {
		wr.NodeRSSIdleMiB, _ = procRSS(nd.cmd.Process.Pid)
	}

	progress("watch W1: %d idle watchers, then %d adds by %d clients", o.watchers, o.n, o.clients)
	stop, err := lg.streams(ctx, o.watchers, func(int) string { return "shard=none" }, func(int, []byte, time.Time) {})
	if err != nil {
		return fmt.Errorf("watch W1: %w", err)
	}
	idle := lg.load(ctx, first, o.n, o.clients, o.duration, false)
	first += int(idle.issued)
	wr.StreamsCut += stop()
	progress("watch W1: the same adds without watchers")
	after := lg.load(ctx, first, o.n, o.clients, o.duration, false)
	first += int(after.issued)
	wr.IdleAddsPerSec = float64(idle.acked) / idle.elapsed.Seconds()
	wr.AfterAddsPerSec = float64(after.acked) / after.elapsed.Seconds()
	wr.NoneAddsPerSec = (rep.Add.PerSec + wr.AfterAddsPerSec) / 2
	if wr.NoneAddsPerSec > 0 {
		wr.IdleRatioPct = 100 * wr.IdleAddsPerSec / wr.NoneAddsPerSec
	}
	progress("watch W1: %.0f adds/s with idle watchers, %.0f and %.0f without (%.0f%%)", wr.IdleAddsPerSec, rep.Add.PerSec, wr.AfterAddsPerSec, wr.IdleRatioPct)
	if ctx.Err() != nil {
		return ctx.Err()
	}

	progress("watch W2: %d watchers over %d shards, %d adds/s for %v", o.watchers, o.watchShards, o.watchRate, o.watchDuration)
	var (
		mu       sync.Mutex
		lats     = make([]time.Duration, 0, o.watchRate*int(o.watchDuration.Seconds()+1)*max(1, o.watchers/o.watchShards))
		received atomic.Int64
	)
	stop, err = lg.streams(ctx, o.watchers, func(j int) string { return "shard=" + strconv.Itoa(j%o.watchShards) }, func(_ int, b []byte, at time.Time) {
		if !bytes.Contains(b, []byte(`"type":"change"`)) {
			return
		}
		var m struct {
			Item struct {
				Metadata struct {
					T int64 `json:"t"`
				} `json:"metadata"`
			} `json:"item"`
		}
		if json.Unmarshal(b, &m) != nil || m.Item.Metadata.T == 0 {
			return
		}
		received.Add(1)
		d := at.Sub(time.Unix(0, m.Item.Metadata.T))
		mu.Lock()
		lats = append(lats, d)
		mu.Unlock()
	})
	if err != nil {
		return fmt.Errorf("watch W2: %w", err)
	}
	cpu0 := cpuTimes(nd)
	start := time.Now()
	var (
		wg           sync.WaitGroup
		writes, errs atomic.Int64
		sem          = make(chan struct{}, 64)
		addMu        sync.Mutex
		addLats      []time.Duration
	)
	period := time.Second / time.Duration(o.watchRate)
	total := int(o.watchDuration / period)
	for i := 0; i < total && ctx.Err() == nil; i++ {
		if d := time.Until(start.Add(time.Duration(i) * period)); d > 0 {
			time.Sleep(d)
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			t0 := time.Now()
			doc := fmt.Sprintf(`{"shard":"%d","t":%d}`, i%o.watchShards, t0.UnixNano())
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, lg.base+"/"+collection+"/add/"+lg.tag+"-w"+strconv.Itoa(i), strings.NewReader(doc))
			if err != nil {
				errs.Add(1)
				return
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := lg.cl.Do(req)
			if err != nil {
				errs.Add(1)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				errs.Add(1)
				return
			}
			writes.Add(1)
			addMu.Lock()
			addLats = append(addLats, time.Since(t0))
			addMu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	// Let the last changes arrive (bounded).
	wr.Writes, wr.WriteErrors = writes.Load(), errs.Load()
	// Each write reaches the watchers of its shard: o.watchers/o.watchShards
	// of them (-watchers is a multiple of -watch-shards).
	wr.Expected = wr.Writes * int64(o.watchers) / int64(o.watchShards)
	for deadline := time.Now().Add(10 * time.Second); received.Load() < wr.Expected && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	cpu1 := cpuTimes(nd)
	if nd != nil {
		wr.NodeRSSMiB, wr.NodeRSSPeakMiB = procRSS(nd.cmd.Process.Pid)
	}
	wr.StreamsCut += stop()
	wr.Received = received.Load()
	wr.ElapsedSec = elapsed.Seconds()
	wr.NodeCPUPct = 100 * (cpu1.node - cpu0.node) / elapsed.Seconds()
	wr.LoadCPUPct = 100 * (cpu1.self - cpu0.self) / elapsed.Seconds()
	mu.Lock()
	wr.Latency = summarize(lats)
	mu.Unlock()
	wr.AddLatency = summarize(addLats)
	progress("watch W2: %d writes, %d of %d events, latency p50 %.1f ms p99 %.1f ms", wr.Writes, wr.Received, wr.Expected, wr.Latency.P50Ms, wr.Latency.P99Ms)
	return ctx.Err()
}

// procRSS reads a process's resident set size and its peak, in MiB.
func procRSS(pid int) (rss, peak float64) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return rss, peak
}

// writeText prints the watch phase.
func (wr *watchReport) writeText(w io.Writer) {
	fmt.Fprintf(w, "\nwatch: %d watchers\n", wr.Watchers)
	fmt.Fprintf(w, "  W1 write rate with idle watchers: %.0f adds/s; without: %.0f (mean of phase 1 and %.0f after); %.1f%% (target >= 90%%)\n",
		wr.IdleAddsPerSec, wr.NoneAddsPerSec, wr.AfterAddsPerSec, wr.IdleRatioPct)
	fmt.Fprintf(w, "  W2 %d adds/s over %d shards for %.1fs: %d writes (%d errors), %d of %d events received\n",
		wr.Rate, wr.Shards, wr.ElapsedSec, wr.Writes, wr.WriteErrors, wr.Received, wr.Expected)
	fmt.Fprintf(w, "  W2 event latency (add sent -> change line read): p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms (target p99 <= %.0f ms)\n",
		wr.Latency.P50Ms, wr.Latency.P90Ms, wr.Latency.P99Ms, wr.Latency.MaxMs, wr.LatencyP99Target)
	fmt.Fprintf(w, "  W2 latency of the paced adds themselves (sent -> 201 read): p50 %.2f ms, p99 %.2f ms\n", wr.AddLatency.P50Ms, wr.AddLatency.P99Ms)
	fmt.Fprintf(w, "  W2 node CPU %.0f%% of a core, httpload CPU %.0f%%; node RSS %.1f MiB (%.1f before watchers, peak %.1f); streams cut: %d\n",
		wr.NodeCPUPct, wr.LoadCPUPct, wr.NodeRSSMiB, wr.NodeRSSIdleMiB, wr.NodeRSSPeakMiB, wr.StreamsCut)
}
