package httpapi

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// namespace prefixes every metric name.
const namespace = "catalog"

// httpMetrics counts and times requests by route pattern. Route labels are
// the registered patterns (or "other"), never raw paths, so their number is
// bounded.
type httpMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// newHTTPMetrics registers the request and connection metrics and the
// node collector on reg; conns counts the open connections.
func newHTTPMetrics(reg *prometheus.Registry, c Catalog, conns *atomic.Int64, maxConns int) (*httpMetrics, error) {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests by route pattern and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "http", Name: "request_duration_seconds",
			Help:    "HTTP request latency by route pattern.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
	}
	open := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: "http", Name: "open_connections",
		Help: "HTTP connections open through the limiting listener.",
	}, func() float64 { return float64(conns.Load()) })
	limit := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: "http", Name: "max_connections",
		Help: "Most HTTP connections open at once (MaxConns); more clients wait to be accepted.",
	})
	limit.Set(float64(maxConns))
	for _, col := range []prometheus.Collector{m.requests, m.latency, open, limit, newNodeCollector(c)} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("httpapi: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *httpMetrics) observe(route string, code int, took time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.latency.WithLabelValues(route).Observe(took.Seconds())
}

// nodeCollector exposes the node's Stats, read at scrape time.
type nodeCollector struct {
	c Catalog

	ops, deltas, clockAhead, commits, commitSeconds *prometheus.Desc
	pending, logEntries, logBytes, items, counter   *prometheus.Desc
	waiting, waitingBytes, waitingEvicted, forks    *prometheus.Desc
	unproven, equivocations                         *prometheus.Desc
	commitFailures, writable                        *prometheus.Desc
}

func newNodeCollector(c Catalog) *nodeCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
	}
	return &nodeCollector{
		c:              c,
		ops:            desc("ops_total", "Local operations acknowledged."),
		deltas:         desc("remote_deltas_total", "Remote deltas received, by result: new (joined), duplicate (already applied) rejected (failed validation), refused (of this replica but never written by it, or of a replica beyond the limit) or waited (held until a delta it depends on arrived).", "result"),
		clockAhead:     desc("clock_ahead_total", "Remote timestamps further ahead of the local clock than the configured maximum offset."),
		commits:        desc("commits_total", "Group commits to the store."),
		commitSeconds:  desc("commit_seconds_total", "Time spent writing group commits to the store."),
		pending:        desc("pending_deltas", "Local deltas logged after the GetDeltas cursor (not yet cleared)."),
		logEntries:     desc("delta_log_entries", "Deltas in the delta log."),
		logBytes:       desc("delta_log_bytes", "Encoded size of the delta log."),
		items:          desc("items", "Present items per collection.", "collection"),
		counter:        desc("replica_counter", "Last dot counter this replica used.", "replica"),
		waiting:        desc("waiting_deltas", "Remote deltas held in memory until a delta they depend on arrives."),
		waitingBytes:   desc("waiting_delta_bytes", "Encoded size of the waiting deltas."),
		waitingEvicted: desc("waiting_deltas_evicted_total", "Waiting deltas dropped because the buffer was full (anti-entropy fetches them again)."),
		forks:          desc("fork_evidence_total", "Deltas and states holding operations of this node's own replica that it never wrote."),
		unproven:       desc("deltas_unproven_total", "Remote deltas refused for lacking their origin's proof (a signature, or a chain that can lead to one)."),
		equivocations:  desc("equivocations_total", "Remote deltas refused because their replica had signed a different history."),
		commitFailures: desc("commit_failures_total", "Group commits the store failed to write (a full disk, say); their writes were refused."),
		writable:       desc("store_writable", "1 while the node accepts writes, 0 while its store refuses them (GET /readyz answers 503)."),
	}
}

// Describe implements prometheus.Collector.
func (nc *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		nc.ops, nc.deltas, nc.clockAhead, nc.commits, nc.commitSeconds,
		nc.pending, nc.logEntries, nc.logBytes, nc.items, nc.counter,
		nc.waiting, nc.waitingBytes, nc.waitingEvicted, nc.forks, nc.unproven, nc.equivocations,
		nc.commitFailures, nc.writable,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (nc *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	st := nc.c.Stats()
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(nc.ops, float64(st.Ops))
	counter(nc.deltas, float64(st.DeltasNew), "new")
	counter(nc.deltas, float64(st.DeltasDuplicate), "duplicate")
	counter(nc.deltas, float64(st.DeltasRejected), "rejected")
	counter(nc.deltas, float64(st.DeltasRefused), "refused")
	counter(nc.deltas, float64(st.DeltasWaited), "waited")
	counter(nc.waitingEvicted, float64(st.WaitingEvicted))
	counter(nc.forks, float64(st.ForkEvidence))
	counter(nc.unproven, float64(st.Unproven))
	counter(nc.equivocations, float64(st.Equivocations))
	gauge(nc.waiting, float64(st.Waiting))
	gauge(nc.waitingBytes, float64(st.WaitingBytes))
	counter(nc.clockAhead, float64(st.ClockAhead))
	counter(nc.commits, float64(st.Commits))
	counter(nc.commitSeconds, st.CommitTime.Seconds())
	gauge(nc.pending, float64(st.Pending))
	gauge(nc.logEntries, float64(st.LogEntries))
	gauge(nc.logBytes, float64(st.LogBytes))
	for coll, n := range st.Items {
		gauge(nc.items, float64(n), coll)
	}
	gauge(nc.counter, float64(st.Counter), string(st.Replica))
	counter(nc.commitFailures, float64(st.CommitFailures))
	writable := 1.0
	if nc.c.Writable() != nil {
		writable = 0
	}
	gauge(nc.writable, writable)
}

var _ prometheus.Collector = (*nodeCollector)(nil)
