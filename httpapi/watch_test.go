package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
)

// watchConn is one open watch stream.
type watchConn struct {
	res *http.Response
	r   *bufio.Reader
	sse bool
}

// sseMsg is one message of a stream: its SSE id and event name (empty
// in NDJSON) and its JSON.
type sseMsg struct {
	id, event string
	ev        watchEvent
}

// openWatch opens GET url; header lines are "Name: value". It fails the
// test unless the answer is 200.
func openWatch(t testing.TB, client *http.Client, url string, headers ...string) *watchConn {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Add(k, v)
	}
	if client == nil {
		client = http.DefaultClient
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("GET %s: %d %s", url, res.StatusCode, b)
	}
	return &watchConn{res: res, r: bufio.NewReader(res.Body), sse: strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream")}
}

// next reads the next message; io.EOF at the end of the stream.
func (c *watchConn) next(t testing.TB) (sseMsg, error) {
	t.Helper()
	var m sseMsg
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return m, err
		}
		line = strings.TrimSuffix(line, "\n")
		if !c.sse {
			if err := json.Unmarshal([]byte(line), &m.ev); err != nil {
				t.Fatalf("NDJSON line %q: %v", line, err)
			}
			return m, nil
		}
		switch {
		case line == "":
			return m, nil
		case strings.HasPrefix(line, "id: "):
			m.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			m.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(line[6:]), &m.ev); err != nil {
				t.Fatalf("SSE data %q: %v", line, err)
			}
		default:
			t.Fatalf("unexpected SSE line %q", line)
		}
	}
}

// expect reads messages, skipping heartbeats, and checks them against
// want, one "type kind id seq" line per message (see brief).
func (c *watchConn) expect(t testing.TB, want ...string) []sseMsg {
	t.Helper()
	var got []sseMsg
	for len(got) < len(want) {
		m, err := c.next(t)
		if err != nil {
			t.Fatalf("after %d messages: %v", len(got), err)
		}
		if m.ev.Type == "heartbeat" {
			continue
		}
		if c.sse && m.event != m.ev.Type {
			t.Fatalf("SSE event %q carries type %q", m.event, m.ev.Type)
		}
		if s := brief(m.ev); s != want[len(got)] {
			t.Fatalf("message %d: %s, want %s", len(got), s, want[len(got)])
		}
		got = append(got, m)
	}
	return got
}

// brief renders a message as "type kind id metadata".
func brief(ev watchEvent) string {
	s := ev.Type
	if ev.Kind != "" {
		s += " " + ev.Kind
	}
	if ev.Item != nil {
		md, _ := json.Marshal(ev.Item.Metadata)
		s += " " + ev.Item.ID + " " + string(md)
	} else if ev.ID != "" {
		s += " " + ev.ID
	}
	return s
}

func add(t testing.TB, n *node.Node, id, doc string) {
	t.Helper()
	d, err := crdt.ParseDocument([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Add(context.Background(), crdt.Key{Collection: "snapshots", ID: id}, d); err != nil {
		t.Fatal(err)
	}
}

// TestWatch_InitialThenChanges: initial=true sends the matching items, the
// end-of-initial marker with the change it stands at, then the changes
// with the filter evaluated before and after each: an item entering it is
// added, one leaving it removed, others are not sent. As SSE the changes
// carry their seq as event id.
func TestWatch_InitialThenChanges(t *testing.T) {
	n := newNode(t, nil)
	srv := httptest.NewServer(newServer(t, n, nil))
	t.Cleanup(srv.Close)
	add(t, n, "a", `{"owner":"ann"}`)
	add(t, n, "b", `{"owner":"bob"}`)
	c := openWatch(t, nil, srv.URL+"/catalog/watch?type=snapshots&q=owner%3Dann&initial=true")
	ms := c.expect(t, `item a {"owner":"ann"}`, "initial_end")
	if ms[1].id != "2" || ms[1].ev.Seq != 2 {
		t.Fatalf("end of initial: id %q seq %d, want 2", ms[1].id, ms[1].ev.Seq)
	}
	add(t, n, "b", `{"owner":"ann"}`) // enters
	add(t, n, "c", `{"owner":"cid"}`) // never matches: not sent
	if _, err := n.Add(context.Background(), crdt.Key{Collection: "images", ID: "i"}, crdt.Document{"owner": []byte(`"ann"`)}); err != nil {
		t.Fatal(err) // another collection: not sent
	}
	add(t, n, "a", `{"owner":"ann","v":1}`)
	add(t, n, "a", `{"owner":"dan"}`) // leaves
	if err := n.Remove(context.Background(), crdt.Key{Collection: "snapshots", ID: "b"}); err != nil {
		t.Fatal(err)
	}
	ms = c.expect(t, `change added b {"owner":"ann"}`, `change updated a {"owner":"ann","v":1}`, "change removed a", "change removed b")
	if ms[0].id != "3" || ms[3].id != "8" {
		t.Fatalf("event ids %q..%q, want 3..8", ms[0].id, ms[3].id)
	}
	if o := ms[0].ev.Origin; o == nil || o.Via != "local" || o.Replica != string(n.ReplicaID()) || o.Counter == 0 {
		t.Fatalf("origin %+v", o)
	}
}

// TestWatch_ResumeNDJSON: since=N, or Last-Event-ID: N, resume after
// change N; NDJSON is served for Accept: application/x-ndjson.
func TestWatch_ResumeNDJSON(t *testing.T) {
	n := newNode(t, nil)
	srv := httptest.NewServer(newServer(t, n, nil))
	t.Cleanup(srv.Close)
	for i := range 4 {
		add(t, n, fmt.Sprint("s", i), `{}`)
	}
	c := openWatch(t, nil, srv.URL+"/catalog/watch?type=snapshots&since=2", "Accept: application/x-ndjson")
	if ct := c.res.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("Content-Type %q", ct)
	}
	ms := c.expect(t, "change added s2 {}", "change added s3 {}")
	if ms[0].ev.Seq != 3 {
		t.Fatalf("first seq %d, want 3", ms[0].ev.Seq)
	}
	c = openWatch(t, nil, srv.URL+"/catalog/watch?type=snapshots&initial=true", "Last-Event-ID: 3")
	c.expect(t, "change added s3 {}")
	add(t, n, "s4", `{}`)
	c.expect(t, "change added s4 {}")
}

// TestWatch_Refusals: 410 with the way to resynchronise once the history
// no longer reaches back to since; 400 for bad parameters; 404 for an
// unknown collection; 503 beyond MaxWatchers.
func TestWatch_Refusals(t *testing.T) {
	n := newNode(t, func(c *node.Config) { c.ChangeHistory = 3 })
	s := newServer(t, n, func(c *Config) { c.MaxWatchers = 1 })
	for i := range 6 {
		add(t, n, fmt.Sprint("s", i), `{}`)
	}
	res := mustDo(t, s, 410, "GET", "/catalog/watch?type=snapshots&since=1", "", "")
	if msg := res.obj(t)["error"].(string); !strings.Contains(msg, "initial=true") || !strings.Contains(msg, "oldest: 4") {
		t.Fatalf("410 says %q", msg)
	}
	mustDo(t, s, 410, "GET", "/catalog/watch?type=snapshots&since=99", "", "")
	mustDo(t, s, 400, "GET", "/catalog/watch?type=snapshots&since=3&initial=true", "", "")
	mustDo(t, s, 400, "GET", "/catalog/watch?type=snapshots&since=x", "", "")
	mustDo(t, s, 400, "GET", "/catalog/watch?type=snapshots&q=size%3E1+%3D2", "", "")
	mustDo(t, s, 400, "GET", "/catalog/watch", "", "")
	mustDo(t, s, 404, "GET", "/catalog/watch?type=nope", "", "")
	// after= as on every read: a write this node has not applied.
	other := newNode(t, nil)
	tok := crdt.Token{other.ReplicaID(): 1}
	mustDo(t, s, 504, "GET", "/catalog/watch?type=snapshots&timeout=10ms&after="+tok.String(), "", "")

	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	openWatch(t, nil, srv.URL+"/catalog/watch?type=snapshots")
	res2, err := http.Get(srv.URL + "/catalog/watch?type=snapshots")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res2.Body)
	res2.Body.Close()
	if res2.StatusCode != 503 || !strings.Contains(string(b), "too many watchers") || res2.Header.Get("Retry-After") == "" {
		t.Fatalf("watcher beyond the limit: %d %s", res2.StatusCode, b)
	}
}

// TestWatch_HeartbeatAndClosing: an idle stream gets heartbeats with its
// position; SetClosing ends it with an error message naming where to
// resume.
func TestWatch_HeartbeatAndClosing(t *testing.T) {
	n := newNode(t, nil)
	s := newServer(t, n, func(c *Config) { c.WatchHeartbeat = 20 * time.Millisecond })
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	add(t, n, "a", `{}`)
	c := openWatch(t, nil, srv.URL+"/catalog/watch?type=snapshots")
	m, err := c.next(t)
	if err != nil || m.ev.Type != "heartbeat" || m.ev.Seq != 1 || m.id != "1" {
		t.Fatalf("first message %+v, %v; want a heartbeat at 1", m, err)
	}
	s.SetClosing(true)
	for {
		m, err := c.next(t)
		if err != nil {
			t.Fatalf("stream ended without its error message: %v", err)
		}
		if m.ev.Type == "error" {
			if m.ev.Resume != "since=1" || !strings.Contains(m.ev.Error, "shutting down") {
				t.Fatalf("last message %+v", m.ev)
			}
			break
		}
	}
	if _, err := c.next(t); err != io.EOF {
		t.Fatalf("after the error message: %v", err)
	}
}

// TestWatch_SlowWatcherCutOff: a client that stops reading does not hold
// writers back; once it reads again, the stream it fell behind on ends
// with a message saying it was too slow and where to resume.
func TestWatch_SlowWatcherCutOff(t *testing.T) {
	n := newNode(t, nil)
	// Small socket buffers on both ends, so that the server's writes
	// block after a few changes.
	small := func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = errors.Join(syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096),
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096))
		})
		return errors.Join(err, serr)
	}
	ln, err := (&net.ListenConfig{Control: small}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api := newServer(t, n, nil)
	api.groupRing = 16 // the group's ring: a stream more than 16 changes behind is too slow
	srv := httptest.NewUnstartedServer(api)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	client := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{Control: small}).DialContext}}
	c := openWatch(t, client, srv.URL+"/catalog/watch?type=snapshots", "Accept: application/x-ndjson")
	add(t, n, "first", `{}`)
	c.expect(t, "change added first {}")
	big := fmt.Sprintf(`{"pad":%q}`, strings.Repeat("x", 4000))
	for i := range 200 {
		add(t, n, fmt.Sprint("s", i), big)
	}
	last := watchEvent{Seq: 1}
	for {
		m, err := c.next(t)
		if err != nil {
			t.Fatalf("stream ended without its error message after %+v: %v", last, err)
		}
		if m.ev.Type == "error" {
			if !strings.Contains(m.ev.Error, "too slow") || m.ev.Resume != fmt.Sprint("since=", last.Seq) {
				t.Fatalf("last message %+v after seq %d", m.ev, last.Seq)
			}
			return
		}
		if m.ev.Type == "change" {
			if m.ev.Seq != last.Seq+1 {
				t.Fatalf("change %d after %d", m.ev.Seq, last.Seq)
			}
			last = m.ev
		}
	}
}

// TestWatch_GroupShared: streams with one filter share one reader of the
// feed once they have caught up with it: a stream resuming from far back
// reads on its own first, then joins; each gets every change once, in
// order; the group ends with its last stream.
func TestWatch_GroupShared(t *testing.T) {
	n := newNode(t, nil)
	s := newServer(t, n, nil)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	for i := range 5 {
		add(t, n, fmt.Sprint("a", i), `{"k":1}`)
	}
	url := srv.URL + "/catalog/watch?type=snapshots&q=k%3D1"
	live := openWatch(t, nil, url, "Accept: application/x-ndjson")
	add(t, n, "b0", `{"k":1}`) // the live stream catches up and starts the group
	live.expect(t, `change added b0 {"k":1}`)
	back := openWatch(t, nil, url+"&since=0", "Accept: application/x-ndjson")
	for i := range 20 {
		add(t, n, fmt.Sprint("c", i), `{"k":1}`)
		add(t, n, fmt.Sprint("x", i), `{"k":2}`) // matches neither
	}
	for name, c := range map[string]*watchConn{"live": live, "back": back} {
		var seqs []uint64
		for len(seqs) < map[string]int{"live": 20, "back": 26}[name] {
			m, err := c.next(t)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if m.ev.Type == "change" {
				seqs = append(seqs, m.ev.Seq)
			}
		}
		for i := 1; i < len(seqs); i++ {
			if seqs[i] <= seqs[i-1] {
				t.Fatalf("%s: changes %v out of order or doubled", name, seqs)
			}
		}
	}
	s.groupsMu.Lock()
	g := s.groups[groupKey("snapshots", "k=1", false)]
	s.groupsMu.Unlock()
	if g == nil {
		t.Fatal("no group for the shared filter")
	}
	g.mu.Lock()
	members := g.members
	g.mu.Unlock()
	if members != 2 {
		t.Fatalf("the group has %d members, want 2", members)
	}
	live.res.Body.Close()
	back.res.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.groupsMu.Lock()
		left := len(s.groups)
		s.groupsMu.Unlock()
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d groups left after their streams closed", left)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
