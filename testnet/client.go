package testnet

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Client talks to one peer's HTTP API. Its writes are recorded in the
// cluster's History; its reads are not. It follows the peer across
// restarts (new ports included). Safe for concurrent use.
type Client struct {
	c *Cluster
	i int
}

// Client returns a client of peer i.
func (c *Cluster) Client(i int) *Client { return &Client{c: c, i: i} }

// Peer returns the index of the client's peer.
func (cl *Client) Peer() int { return cl.i }

// do sends one request and returns the status and body. The request
// carries the cluster's token if it has one.
func (cl *Client) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	base := cl.c.Peer(cl.i).HTTP
	if base == "" {
		return 0, nil, fmt.Errorf("testnet: peer %d has no HTTP address", cl.i)
	}
	ctx, cancel := context.WithTimeout(ctx, cl.c.opts.RequestTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if cl.c.token != "" {
		req.Header.Set("Authorization", "Bearer "+cl.c.token)
	}
	resp, err := cl.c.httpc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Result is what a recorded write returned.
type Result struct {
	Tag     string // the operation's tag (add and put)
	Outcome Outcome
	Status  int    // HTTP status; 0 if no answer arrived
	Err     string // transport error or error body, if not OK
}

// Down reports whether the write failed for want of a reachable peer (no
// HTTP answer at all), as opposed to an answer such as 404.
func (r Result) Down() bool { return r.Status == 0 && r.Outcome != OK }

// write runs one recorded write and classifies its outcome.
func (cl *Client) write(ctx context.Context, kind Kind, method, coll, id string, doc map[string]any) Result {
	k := Key{Collection: coll, ID: id}
	idx, tagged := cl.c.hist.Begin(cl.c.replicaOf(cl.i), kind, k, doc)
	var body []byte
	if tagged != nil {
		var err error
		if body, err = json.Marshal(tagged); err != nil {
			cl.c.hist.End(idx, Failed, 0, err.Error())
			return Result{Outcome: Failed, Err: err.Error()}
		}
	}
	path := fmt.Sprintf("/%s/%s/%s", url.PathEscape(coll), map[Kind]string{KindAdd: "add", KindRemove: "remove", KindPut: "metadata"}[kind], url.PathEscape(id))
	status, resp, err := cl.do(ctx, method, path, body)
	o := classify(status, err)
	msg := ""
	if err != nil {
		msg = err.Error()
	} else if o != OK {
		msg = strings.TrimSpace(string(resp))
	}
	cl.c.hist.End(idx, o, status, msg)
	tag, _ := tagged["op"].(string)
	return Result{Tag: tag, Outcome: o, Status: status, Err: msg}
}

// classify maps an HTTP answer or transport error to an outcome: 2xx is
// OK, 4xx Failed, 5xx Unknown; a refused connection is Failed (the
// request never left), any other transport error Unknown.
func classify(status int, err error) Outcome {
	switch {
	case err != nil:
		var op *net.OpError
		if errors.Is(err, syscall.ECONNREFUSED) || (errors.As(err, &op) && op.Op == "dial") {
			return Failed
		}
		return Unknown
	case status >= 200 && status < 300:
		return OK
	case status >= 400 && status < 500:
		return Failed
	}
	return Unknown
}

// Add adds coll/id with metadata doc plus the field "op" holding the
// operation's tag. Recorded.
func (cl *Client) Add(ctx context.Context, coll, id string, doc map[string]any) Result {
	if doc == nil {
		doc = map[string]any{}
	}
	return cl.write(ctx, KindAdd, http.MethodPost, coll, id, doc)
}

// Remove removes coll/id. A 404 (absent here) is Failed. Recorded.
func (cl *Client) Remove(ctx context.Context, coll, id string) Result {
	return cl.write(ctx, KindRemove, http.MethodDelete, coll, id, nil)
}

// Put replaces the metadata of coll/id with doc plus the field "op". A 404
// (absent here) is Failed. Recorded.
func (cl *Client) Put(ctx context.Context, coll, id string, doc map[string]any) Result {
	if doc == nil {
		doc = map[string]any{}
	}
	return cl.write(ctx, KindPut, http.MethodPut, coll, id, doc)
}

// Item is one catalog item as a peer lists it.
type Item struct {
	Key      Key
	Metadata map[string]any
	// Raw is the item's JSON (metadata and conflicts included) with object
	// keys sorted, for comparing items across peers.
	Raw string
}

// State is a peer's whole catalog, by key. The caller owns it.
type State map[Key]Item

// Present reports whether coll/id is in s.
func (s State) Present(coll, id string) bool {
	_, ok := s[Key{Collection: coll, ID: id}]
	return ok
}

func decodeItem(b []byte) (Item, error) {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return Item{}, err
	}
	return itemFromMap(m)
}

func itemFromMap(m map[string]any) (Item, error) {
	id, _ := m["id"].(string)
	coll, _ := m["collection"].(string)
	md, _ := m["metadata"].(map[string]any)
	raw, err := json.Marshal(m) // map keys come out sorted
	if err != nil {
		return Item{}, err
	}
	return Item{Key: Key{Collection: coll, ID: id}, Metadata: md, Raw: string(raw)}, nil
}

// Get reads coll/id; ok is false on 404. Not recorded.
func (cl *Client) Get(ctx context.Context, coll, id string) (it Item, ok bool, err error) {
	status, b, err := cl.do(ctx, http.MethodGet, fmt.Sprintf("/%s/%s", url.PathEscape(coll), url.PathEscape(id)), nil)
	switch {
	case err != nil:
		return Item{}, false, err
	case status == http.StatusNotFound:
		return Item{}, false, nil
	case status != http.StatusOK:
		return Item{}, false, fmt.Errorf("GET %s/%s: %d %s", coll, id, status, bytes.TrimSpace(b))
	}
	it, err = decodeItem(b)
	return it, err == nil, err
}

// Status is the part of GET /status the harness uses.
type Status struct {
	Replica     string            `json:"replica"`
	Counter     uint64            `json:"counter"`
	Version     map[string]uint64 `json:"applied_version_vector"`
	Items       map[string]int64  `json:"items"`
	Collections []string          `json:"collections"`
	PeerID      string            `json:"peer_id"`
	Listen      []string          `json:"listen"`
	Peers       []PeerStatus      `json:"peers"`
	P2P         P2PStatus         `json:"p2p"`
}

// PeerStatus is one connected peer as GET /status lists it.
type PeerStatus struct {
	ID         string  `json:"id"`
	Known      bool    `json:"known"`
	Ahead      uint64  `json:"ahead"`
	Behind     uint64  `json:"behind"`
	Connection string  `json:"connection"` // direct, relayed or hole-punched
	Addr       string  `json:"addr"`
	RTTMillis  float64 `json:"rtt_ms"`
}

// P2PStatus is the part of the "p2p" object of GET /status the harness
// uses.
type P2PStatus struct {
	Reachability       string       `json:"reachability"`
	AnnouncedAddrs     []string     `json:"announced_addrs"`
	ObservedAddrs      []string     `json:"observed_addrs"`
	RelayReservations  []string     `json:"relay_reservations"`
	HolePunches        uint64       `json:"hole_punches"`
	MeshPeers          int          `json:"mesh_peers"`
	Peers              []PeerStatus `json:"peers"`
	FullStatesReceived uint64       `json:"full_states_received"`
	SyncDeltasReceived uint64       `json:"sync_deltas_received"`
}

// Status reads GET /status.
func (cl *Client) Status(ctx context.Context) (*Status, error) {
	status, b, err := cl.do(ctx, http.MethodGet, "/status", nil)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("GET /status: %d %s", status, bytes.TrimSpace(b))
	}
	var s Status
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("GET /status: %w", err)
	}
	return &s, nil
}

// maxPages bounds one listing: 10,000 pages of 1,000 items.
const maxPages = 10000

// Listing reads every item of every collection, with conflicts, page by
// page (1,000 per page).
func (cl *Client) Listing(ctx context.Context, colls []string) (State, error) {
	out := State{}
	for _, coll := range colls {
		cursor := ""
		for page := 0; ; page++ {
			if page == maxPages {
				return nil, fmt.Errorf("listing %s: more than %d pages", coll, maxPages)
			}
			q := url.Values{"type": {coll}, "limit": {"1000"}, "conflicts": {"true"}}
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			status, b, err := cl.do(ctx, http.MethodGet, "/catalog/query?"+q.Encode(), nil)
			if err != nil {
				return nil, err
			}
			if status != http.StatusOK {
				return nil, fmt.Errorf("query %s: %d %s", coll, status, bytes.TrimSpace(b))
			}
			var res struct {
				Items      []map[string]any `json:"items"`
				NextCursor string           `json:"next_cursor"`
			}
			if err := json.Unmarshal(b, &res); err != nil {
				return nil, fmt.Errorf("query %s: %w", coll, err)
			}
			for _, m := range res.Items {
				it, err := itemFromMap(m)
				if err != nil {
					return nil, err
				}
				out[it.Key] = it
			}
			if res.NextCursor == "" {
				break
			}
			cursor = res.NextCursor
		}
	}
	return out, nil
}

// Metrics reads GET /metrics and returns every sample without labels by
// name, and samples with labels under their full "name{labels}".
func (cl *Client) Metrics(ctx context.Context) (map[string]float64, error) {
	status, b, err := cl.do(ctx, http.MethodGet, "/metrics", nil)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %d", status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out, nil
}

// Memory is a process's resident memory, from /proc/<pid>/status.
type Memory struct {
	RSS  int64 // VmRSS, bytes
	Peak int64 // VmHWM (peak RSS), bytes
}

// Memory reads peer i's resident memory; the peer must be running.
func (c *Cluster) Memory(i int) (Memory, error) {
	pid := c.Peer(i).PID
	if pid == 0 {
		return Memory{}, fmt.Errorf("testnet: peer %d is not running", i)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			m.RSS = kb << 10
		case "VmHWM:":
			m.Peak = kb << 10
		}
	}
	return m, nil
}
