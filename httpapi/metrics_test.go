package httpapi

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMetrics_Exposition(t *testing.T) {
	n := newNode(t, nil)
	s := newServer(t, n, nil)
	mustDo(t, s, 201, "POST", "/snapshots/add/snap1", ctJSON, seedBody)
	mustDo(t, s, 404, "GET", "/snapshots/nope", "", "")
	mustDo(t, s, 404, "GET", "/no/such/route/at/all", "", "")
	mustDo(t, s, 405, "GET", "/crdt/delta/clear", "", "")
	mustDo(t, s, 400, "POST", "/crdt/delta", ctJSON, `[null]`)

	res := mustDo(t, s, 200, "GET", "/metrics", "", "")
	body := string(res.body)
	for _, want := range []string{
		`catalog_http_requests_total{code="201",route="POST /snapshots/add/{id}"} 1`,
		`catalog_http_requests_total{code="404",route="GET /snapshots/{id}"} 1`,
		`catalog_http_requests_total{code="404",route="/"} 1`,
		`catalog_http_requests_total{code="405",route="/crdt/delta/clear"} 1`,
		`catalog_http_requests_total{code="400",route="POST /crdt/delta"} 1`,
		`catalog_http_request_duration_seconds_bucket{route="POST /snapshots/add/{id}",le="+Inf"} 1`,
		`catalog_items{collection="snapshots"} 1`,
		`catalog_items{collection="images"} 0`,
		`catalog_pending_deltas 1`,
		`catalog_delta_log_entries 1`,
		`catalog_ops_total 1`,
		`catalog_remote_deltas_total{result="new"} 0`,
		`catalog_commits_total `,
		`catalog_replica_counter{replica="` + string(n.ReplicaID()) + `"} 1`,
		`go_goroutines `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

func TestMetrics_Registry(t *testing.T) {
	n := newNode(t, nil)
	reg := prometheus.NewRegistry()
	s := newServer(t, n, func(c *Config) { c.Registry = reg })
	if s.Registry() != reg {
		t.Fatal("Registry() is not the configured registry")
	}
	mustDo(t, s, 200, "GET", "/healthz", "", "")
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
	}
	joined := strings.Join(names, " ")
	for _, want := range []string{"catalog_http_requests_total", "catalog_items", "catalog_pending_deltas"} {
		if !strings.Contains(joined, want) {
			t.Errorf("registry lacks %s; has %s", want, joined)
		}
	}
	if strings.Contains(joined, "go_goroutines") {
		t.Error("a caller's registry got the Go collector")
	}
	// A second server cannot register the same metrics on it.
	cfg := DefaultConfig()
	cfg.Registry = reg
	if _, err := New(n, cfg); err == nil {
		t.Fatal("second New on one registry succeeded")
	}
}
