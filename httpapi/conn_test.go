package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
)

// liveServer serves s over a limiting listener on a loopback port, as
// cmd/crdt-catalog does, until the end of the test; it returns the base
// URL.
func liveServer(t testing.TB, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := s.HTTPServer(log.New(io.Discard, "", 0))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(s.LimitListener(ln))
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return "http://" + ln.Addr().String()
}

// eventually polls cond until it holds, failing the test after a generous
// deadline.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rawRequest opens a connection to base and writes head (request line and
// headers, each line ending in \r\n, without the blank line) and then the
// blank line and body.
func rawRequest(t testing.TB, base, head, body string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, head+"\r\n"+body); err != nil {
		t.Fatal(err)
	}
	return c
}

// readResponse reads one response from c, within a deadline that fails
// the test rather than hang it.
func readResponse(t testing.TB, c net.Conn) *http.Response {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return res
}

// attacker opens connections to addr one after another for as long as
// stop is not closed, and on each sends a request whose headers (with
// slowHeaders) or body trickle in a byte at a time. It counts the
// responses it gets by status.
type attacker struct {
	addr        string
	slowHeaders bool
	statuses    *sync.Map // status line prefix -> *atomic.Int64
}

func (a attacker) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		c, err := net.Dial("tcp", a.addr)
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		a.trickle(c, stop)
		c.Close()
	}
}

func (a attacker) trickle(c net.Conn, stop <-chan struct{}) {
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil && len(line) >= 12 {
			v, _ := a.statuses.LoadOrStore(line[:12], new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
		}
		_, _ = io.Copy(io.Discard, c)
	}()
	msg := "POST /crdt/delta HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
	if !a.slowHeaders {
		if _, err := io.WriteString(c, msg); err != nil {
			return
		}
		msg = strings.Repeat(" ", 100000)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < len(msg); i++ {
		select {
		case <-stop:
			return
		case <-closed:
			return
		case <-tick.C:
		}
		if _, err := c.Write([]byte{msg[i]}); err != nil {
			return
		}
	}
}

// TestServer_SlowClientsLeaveHonestOnes holds the server at its connection
// limit with clients whose headers or bodies trickle in, and checks that an
// honest client is still served, that the deadlines cut the slow ones
// (408 for a body), and that every connection is released afterwards.
func TestServer_SlowClientsLeaveHonestOnes(t *testing.T) {
	const maxConns, attackers = 16, 120
	s := newServer(t, newNode(t, nil), func(c *Config) {
		c.MaxConns = maxConns
		c.ReadHeaderTimeout = 300 * time.Millisecond
		c.BodyTimeout = 300 * time.Millisecond
		c.IdleTimeout = time.Second
	})
	base := liveServer(t, s)
	addr := strings.TrimPrefix(base, "http://")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	statuses := new(sync.Map)
	for i := range attackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			attacker{addr: addr, slowHeaders: i%2 == 1, statuses: statuses}.run(stop)
		}()
	}
	stopped := false
	stopAttack := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer stopAttack()
	eventually(t, "the slow clients fill every connection", func() bool { return s.conns.Load() == maxConns })

	client := &http.Client{Timeout: 60 * time.Second}
	for _, path := range []string{"/readyz", "/snapshots/add/honest"} {
		var res *http.Response
		var err error
		if strings.Contains(path, "add") {
			res, err = client.Post(base+path, ctJSON, strings.NewReader(`{"ok":true}`))
		} else {
			res, err = client.Get(base + path)
		}
		if err != nil {
			t.Fatalf("honest %s under attack: %v", path, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode >= 300 {
			t.Fatalf("honest %s under attack: status %d", path, res.StatusCode)
		}
	}
	eventually(t, "a slow body gets 408", func() bool {
		v, ok := statuses.Load("HTTP/1.1 408")
		return ok && v.(*atomic.Int64).Load() > 0
	})
	stopAttack()
	eventually(t, "every connection is released", func() bool { return s.conns.Load() == 0 })
}

// TestServer_TokenBeforeBody checks that a write without the token is
// answered 401 at once, without the server waiting for a body that never
// comes, and that its connection is closed and released.
func TestServer_TokenBeforeBody(t *testing.T) {
	s := newServer(t, newNode(t, nil), func(c *Config) {
		c.Token = "s3cret-s3cret-s3cret"
		c.BodyTimeout = time.Hour // a server that waited for the body would hang the test
		c.MaxConns = 4
	})
	base := liveServer(t, s)
	for i := range 8 { // twice the connection limit: each must be released
		c := rawRequest(t, base, "POST /crdt/state HTTP/1.1\r\nHost: x\r\nContent-Type: "+ctState+"\r\nContent-Length: 1000000\r\n", "only the start of a body")
		res := readResponse(t, c)
		if res.StatusCode != http.StatusUnauthorized || !res.Close {
			t.Fatalf("request %d: status %d, close %v; want 401 and the connection closed", i, res.StatusCode, res.Close)
		}
		// The server closes its end without reading on.
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("request %d: connection not closed by the server: %v", i, err)
		}
	}
	eventually(t, "every connection is released", func() bool { return s.conns.Load() == 0 })

	// With the token, the same body is waited for.
	c := rawRequest(t, base, "POST /crdt/delta HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-s3cret-s3cret\r\nContent-Type: application/json\r\nContent-Length: 5\r\n", "[")
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the server answered before the authenticated body was complete")
	}
	if _, err := io.WriteString(c, "   ]"); err != nil {
		t.Fatal(err)
	}
	if res := readResponse(t, c); res.StatusCode != http.StatusOK {
		t.Fatalf("authenticated delta: status %d", res.StatusCode)
	}
}

// TestServer_BodyTimeout checks that an authenticated body that stops
// arriving gets 408 and its connection closed.
func TestServer_BodyTimeout(t *testing.T) {
	s := newServer(t, newNode(t, nil), func(c *Config) { c.BodyTimeout = 100 * time.Millisecond })
	base := liveServer(t, s)
	c := rawRequest(t, base, "POST /snapshots/add/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n", "{")
	res := readResponse(t, c)
	if res.StatusCode != http.StatusRequestTimeout || !res.Close {
		t.Fatalf("stalled body: status %d, close %v; want 408 and close", res.StatusCode, res.Close)
	}
	// Kept-alive connections still work for whole requests.
	client := &http.Client{Timeout: 30 * time.Second}
	for i := range 3 {
		res, err := client.Post(base+fmt.Sprintf("/snapshots/add/k%d", i), ctJSON, strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("add %d: status %d", i, res.StatusCode)
		}
	}
}

// bigNode returns a node whose full state is about 6 MiB.
func bigNode(t testing.TB) *node.Node {
	t.Helper()
	n := newNode(t, nil)
	pad := strings.Repeat("p", 500<<10)
	for i := range 12 {
		doc, err := crdt.ParseDocument([]byte(`{"pad":"` + pad + `"}`))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.Add(context.Background(), crdt.Key{Collection: "snapshots", ID: fmt.Sprint("big", i)}, doc); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// slowReader hands out r in 64 KiB pieces, pausing before each: about a
// MiB per half second, slow against the test's deadlines in total but
// steady.
type slowReader struct{ r io.Reader }

func (s slowReader) Read(p []byte) (int, error) {
	time.Sleep(30 * time.Millisecond)
	return s.r.Read(p[:min(len(p), 64<<10)])
}

// TestServer_LargeStateSlowButSteady streams a full state out and back in
// more slowly in total than the write and body timeouts, but steadily:
// both transfers complete. A delta body as slow is cut off.
func TestServer_LargeStateSlowButSteady(t *testing.T) {
	timeouts := func(c *Config) {
		c.BodyTimeout = 2 * time.Second
		c.WriteTimeout = 2 * time.Second
	}
	from := liveServer(t, newServer(t, bigNode(t), timeouts))
	to := newNode(t, nil)
	toURL := liveServer(t, newServer(t, to, timeouts))

	res, err := http.Get(from + "/crdt/state")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var got bytes.Buffer
	start := time.Now()
	if _, err := io.Copy(&got, slowReader{res.Body}); err != nil {
		t.Fatalf("slow read of the state: %v", err)
	}
	if got.Len() < 5<<20 {
		t.Fatalf("state of %d bytes, want about 6 MiB", got.Len())
	}
	t.Logf("read %d bytes in %v", got.Len(), time.Since(start))

	start = time.Now()
	post, err := http.Post(toURL+"/crdt/state", ctState, slowReader{bytes.NewReader(got.Bytes())})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(post.Body)
	post.Body.Close()
	if post.StatusCode != http.StatusOK {
		t.Fatalf("slow state upload: status %d: %s", post.StatusCode, body)
	}
	t.Logf("posted in %v: %s", time.Since(start), body)
	if st := to.Stats(); st.Items["snapshots"] != 12 {
		t.Fatalf("after the upload: %d items, want 12", st.Items["snapshots"])
	}

	// The same pace on an ordinary body runs into BodyTimeout.
	slow := liveServer(t, newServer(t, newNode(t, nil), func(c *Config) {
		c.BodyTimeout = 200 * time.Millisecond
		c.MaxBodyBytes = 8 << 20
	}))
	delta, err := http.Post(slow+"/crdt/delta", ctJSON, slowReader{strings.NewReader("[" + strings.Repeat(" ", 1<<20) + "]")})
	if err == nil {
		delta.Body.Close()
		if delta.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("slow delta body: status %d, want 408", delta.StatusCode)
		}
	}
	// (The client may also see the connection closed while it still
	// sends: either way the server did not wait.)
}
