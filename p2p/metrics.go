package p2p

import "github.com/prometheus/client_golang/prometheus"

// Stats are the peer's running totals. Their JSON keys are snake_case,
// as GET /status shows them under "p2p".
type Stats struct {
	Peers     int `json:"connected_peers"` // connected peers of this catalog (as listed by Peers)
	MeshPeers int `json:"mesh_peers"`      // peers this one forwards every gossip message to

	Published       uint64 `json:"published"`        // gossip messages published
	PublishedDeltas uint64 `json:"published_deltas"` // deltas in them
	Received        uint64 `json:"received"`         // gossip messages received from others and joined
	Rejected        uint64 `json:"rejected"`         // gossip messages rejected by the validator (the sender is disconnected)
	Ignored         uint64 `json:"ignored"`          // gossip messages in a newer format, dropped without penalty
	Gaps            uint64 `json:"gaps"`             // received deltas that showed a missed one
	// NotWriter counts gossip messages rejected because their origin is
	// not on the writers list (their forwarder stays connected).
	NotWriter uint64 `json:"not_writer"`
	// PullsSkipped counts pulls not made because the peer is not on the
	// writers list.
	PullsSkipped uint64 `json:"pulls_skipped"`
	// Writers is the length of the writers list; 0 means no list: every
	// peer may write. Left out of JSON: GET /status shows it as
	// "writers", a count or "any".
	Writers int `json:"-"`

	Rounds             uint64 `json:"rounds"`           // completed anti-entropy pulls
	SyncFailures       uint64 `json:"sync_failures"`    // pulls or answers cut short
	SyncRejected       uint64 `json:"sync_rejected"`    // sync streams that carried garbage
	SyncRefused        uint64 `json:"sync_refused"`     // inbound sync streams reset at once: over MaxSyncStreamsPerPeer or MaxSyncStreams
	SyncStalled        uint64 `json:"sync_stalled"`     // sync streams dropped after SyncIdleTimeout without a byte moving
	SyncStreams        int    `json:"sync_streams"`     // inbound sync streams being answered now
	BadPeers           uint64 `json:"bad_peers"`        // times a peer was disconnected as bad (garbage, a stall, a full state over the limits)
	BackedOffPeers     int    `json:"backed_off_peers"` // peers not pulled from now, for having been bad
	SyncDeltasSent     uint64 `json:"sync_deltas_sent"`
	SyncDeltasReceived uint64 `json:"sync_deltas_received"`
	SyncBytesSent      uint64 `json:"sync_bytes_sent"`
	SyncBytesReceived  uint64 `json:"sync_bytes_received"`
	FullStatesSent     uint64 `json:"full_states_sent"`
	FullStatesReceived uint64 `json:"full_states_received"`

	GossipDuplicates   uint64 `json:"gossip_duplicates"`    // gossip messages received again and dropped
	GossipDroppedRPCs  uint64 `json:"gossip_dropped_rpcs"`  // GossipSub RPCs dropped on a full peer queue
	GossipMessageBytes uint64 `json:"gossip_message_bytes"` // message bytes queued for sending, relaying included
	GossipControlBytes uint64 `json:"gossip_control_bytes"` // control bytes queued (IHAVE, IWANT, IDONTWANT, GRAFT, PRUNE)

	BytesSent     int64 `json:"bytes_sent"` // all libp2p traffic, gossip relaying included
	BytesReceived int64 `json:"bytes_received"`
}

// Stats returns the current figures.
func (p *Peer) Stats() Stats {
	bw := p.bw.GetBandwidthTotals()
	c := &p.stats
	return Stats{
		Peers:              len(p.catalogPeers()),
		MeshPeers:          p.tracer.meshPeers(),
		Published:          c.published.Load(),
		PublishedDeltas:    c.publishedDeltas.Load(),
		Received:           c.received.Load(),
		Rejected:           c.rejected.Load(),
		Ignored:            c.ignored.Load(),
		Gaps:               c.gaps.Load(),
		NotWriter:          c.notWriter.Load(),
		PullsSkipped:       c.pullsSkipped.Load(),
		Writers:            p.writerCount(),
		Rounds:             c.rounds.Load(),
		SyncFailures:       c.syncFailures.Load(),
		SyncRejected:       c.syncRejected.Load(),
		SyncRefused:        c.syncRefused.Load(),
		SyncStalled:        c.syncStalled.Load(),
		SyncStreams:        p.syncStreams(),
		BadPeers:           c.badPeers.Load(),
		BackedOffPeers:     p.backedOffPeers(),
		SyncDeltasSent:     c.syncDeltasSent.Load(),
		SyncDeltasReceived: c.syncDeltasReceived.Load(),
		SyncBytesSent:      c.syncBytesSent.Load(),
		SyncBytesReceived:  c.syncBytesReceived.Load(),
		FullStatesSent:     c.fullSent.Load(),
		FullStatesReceived: c.fullReceived.Load(),
		GossipDuplicates:   p.tracer.duplicates.Load(),
		GossipDroppedRPCs:  p.tracer.droppedRPCs.Load(),
		GossipMessageBytes: p.tracer.messageBytes.Load(),
		GossipControlBytes: p.tracer.controlBytes.Load(),
		BytesSent:          bw.TotalOut,
		BytesReceived:      bw.TotalIn,
	}
}

// Collector exposes Stats to Prometheus, read at scrape time.
func (p *Peer) Collector() prometheus.Collector { return collector{p} }

type metric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(Stats) float64
}

func newMetric(name, help string, kind prometheus.ValueType, value func(Stats) float64) metric {
	return metric{prometheus.NewDesc("catalog_p2p_"+name, help, nil, nil), kind, value}
}

var p2pMetrics = []metric{
	newMetric("peers", "Connected peers of this catalog.", prometheus.GaugeValue, func(s Stats) float64 { return float64(s.Peers) }),
	newMetric("mesh_peers", "Peers in the GossipSub mesh: those this peer forwards every message to.", prometheus.GaugeValue, func(s Stats) float64 { return float64(s.MeshPeers) }),
	newMetric("messages_published_total", "Gossip messages published.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.Published) }),
	newMetric("deltas_published_total", "Deltas carried by published gossip messages.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.PublishedDeltas) }),
	newMetric("messages_received_total", "Gossip messages received from other peers.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.Received) }),
	newMetric("messages_rejected_total", "Gossip messages rejected by the topic validator.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.Rejected) }),
	newMetric("messages_ignored_total", "Gossip messages in a newer wire or delta format, dropped without penalty.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.Ignored) }),
	newMetric("messages_rejected_not_writer_total", "Gossip messages rejected because their origin is not on the writers list.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.NotWriter) }),
	newMetric("pulls_skipped_not_writer_total", "Anti-entropy pulls not made because the peer is not on the writers list.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.PullsSkipped) }),
	newMetric("writers", "Peers on the writers list; 0 when there is none and every peer may write.", prometheus.GaugeValue, func(s Stats) float64 { return float64(s.Writers) }),
	newMetric("gaps_total", "Received deltas that showed a missed earlier delta.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.Gaps) }),
	newMetric("antientropy_rounds_total", "Completed anti-entropy pulls.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.Rounds) }),
	newMetric("sync_failures_total", "Anti-entropy exchanges cut short.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.SyncFailures) }),
	newMetric("sync_rejected_total", "Sync streams that carried garbage (the peer was disconnected).", prometheus.CounterValue, func(s Stats) float64 { return float64(s.SyncRejected) }),
	newMetric("sync_refused_total", "Inbound sync streams reset at once: the peer's or the global limit of concurrent streams was reached.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.SyncRefused) }),
	newMetric("sync_stalled_total", "Sync streams dropped because no byte moved for the idle timeout.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.SyncStalled) }),
	newMetric("sync_streams", "Inbound sync streams being answered.", prometheus.GaugeValue, func(s Stats) float64 { return float64(s.SyncStreams) }),
	newMetric("bad_peers_total", "Peers disconnected as bad on a sync stream: garbage, a stall, a full state over the limits.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.BadPeers) }),
	newMetric("backed_off_peers", "Peers not pulled from, for having been bad, until their backoff ends.", prometheus.GaugeValue, func(s Stats) float64 { return float64(s.BackedOffPeers) }),
	newMetric("sync_deltas_sent_total", "Deltas sent in answer to pulls.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.SyncDeltasSent) }),
	newMetric("sync_deltas_received_total", "Deltas received by pulls.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.SyncDeltasReceived) }),
	newMetric("sync_bytes_sent_total", "Bytes sent on sync streams.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.SyncBytesSent) }),
	newMetric("sync_bytes_received_total", "Bytes received on sync streams.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.SyncBytesReceived) }),
	newMetric("full_states_sent_total", "Full-state transfers sent.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.FullStatesSent) }),
	newMetric("full_states_received_total", "Full-state transfers received.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.FullStatesReceived) }),
	newMetric("gossip_duplicates_total", "Gossip messages received again and dropped as duplicates.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.GossipDuplicates) }),
	newMetric("gossip_dropped_rpcs_total", "GossipSub RPCs dropped because a peer's send queue was full.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.GossipDroppedRPCs) }),
	newMetric("gossip_message_bytes_total", "Bytes of gossip messages queued for sending, relaying included.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.GossipMessageBytes) }),
	newMetric("gossip_control_bytes_total", "Bytes of GossipSub control messages queued for sending.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.GossipControlBytes) }),
	newMetric("bytes_sent_total", "All libp2p bytes sent.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.BytesSent) }),
	newMetric("bytes_received_total", "All libp2p bytes received.", prometheus.CounterValue, func(s Stats) float64 { return float64(s.BytesReceived) }),
}

type collector struct{ p *Peer }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range p2pMetrics {
		ch <- m.desc
	}
	c.p.rounds.deltas.Describe(ch)
	c.p.rounds.bytes.Describe(ch)
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.p.Stats()
	for _, m := range p2pMetrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(s))
	}
	c.p.rounds.deltas.Collect(ch)
	c.p.rounds.bytes.Collect(ch)
}

// roundSizes are the distributions of what one completed anti-entropy pull
// received: items (deltas, or the items of a full state) and bytes. A pull
// after a partition should receive about what was missed; the catalog's
// size shows only in full-state rounds.
type roundSizes struct {
	deltas, bytes prometheus.Histogram
}

func newRoundSizes() roundSizes {
	return roundSizes{
		deltas: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "catalog_p2p_antientropy_round_deltas",
			Help:    "Deltas (or, for a full state, items) received by one completed anti-entropy pull.",
			Buckets: []float64{0, 1, 10, 100, 1000, 10_000, 100_000, 1_000_000},
		}),
		bytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "catalog_p2p_antientropy_round_bytes",
			Help:    "Bytes received by one completed anti-entropy pull.",
			Buckets: prometheus.ExponentialBuckets(256, 8, 9), // 256 B to 4 GiB
		}),
	}
}

func (r roundSizes) observe(deltas, bytes int) {
	r.deltas.Observe(float64(deltas))
	r.bytes.Observe(float64(bytes))
}
