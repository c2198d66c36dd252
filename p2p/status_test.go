package p2p

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPeer_StatusJSON: the p2p object of GET /status has snake_case keys
// only, [] rather than null for empty lists, and reports each connected
// peer's connection kind and address.
func TestPeer_StatusJSON(t *testing.T) {
	a := startPeer(t, testConfig(t), nil)
	b, err := json.Marshal(a.p.Status())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "null") {
		t.Errorf("null in %s", b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	snake := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	for k := range m {
		if !snake.MatchString(k) {
			t.Errorf("key %q is not snake_case", k)
		}
	}
	for _, k := range []string{"reachability", "announced_addrs", "observed_addrs", "relay_reservations", "peers", "connected_peers", "mesh_peers"} {
		if _, ok := m[k]; !ok {
			t.Errorf("no %q in %s", k, b)
		}
	}
	cfg := testConfig(t)
	cfg.Bootstrap = a.p.Addrs()
	c := startPeer(t, cfg, nil)
	waitFor(t, 10*time.Second, "c connected to a", func() bool { return len(c.p.Status().Peers) == 1 })
	st := c.p.Status().Peers[0]
	if st.Connection != ConnDirect || st.Addr == "" || st.ID != a.p.ID().String() {
		t.Errorf("peer status %+v: want a direct connection to a with its address", st)
	}
}
