package httpapi

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
)

// signedNode is newNode with an identity key, as crdt-catalog runs it.
func signedNode(t testing.TB) *node.Node {
	t.Helper()
	return newNode(t, func(c *node.Config) {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		c.Key = k
	})
}

// page is the body of GET /crdt/delta.
type page struct {
	Deltas []json.RawMessage `json:"deltas"`
	Cursor uint64            `json:"cursor"`
	More   bool              `json:"more"`
}

// relay moves every pending delta of from to to over HTTP, posting each
// page of GET /crdt/delta?limit= as it is, and returns the pages and the
// deltas the receiver joined.
func relay(t *testing.T, from, to *Server, limit int) (pages, joined int) {
	t.Helper()
	for {
		res := mustDo(t, from, 200, "GET", fmt.Sprintf("/crdt/delta?limit=%d", limit), "", "")
		var p page
		if err := json.Unmarshal(res.body, &p); err != nil {
			t.Fatal(err)
		}
		if len(res.body) > from.pageBytes+1024 && len(p.Deltas) > 1 {
			t.Fatalf("a page of %d bytes", len(res.body))
		}
		got := mustDo(t, to, 200, "POST", "/crdt/delta", ctJSON, string(res.body)).obj(t)
		joined += int(got["new"].(float64))
		mustDo(t, from, 200, "POST", "/crdt/delta/clear", ctJSON, fmt.Sprintf(`{"cursor":%d}`, p.Cursor))
		pages++
		if !p.More {
			return pages, joined
		}
	}
}

// Issue 10, item 4: the body of GET /crdt/delta, posted as it is to
// another node's POST /crdt/delta, applies; pages of any size carry the
// proof of their deltas, so signed nodes join every delta.
func TestExternalGossip_PagePostedAsIs(t *testing.T) {
	n1, n2 := signedNode(t), signedNode(t)
	s1, s2 := newServer(t, n1, nil), newServer(t, n2, nil)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 8 {
				mustDo(t, s1, 201, "POST", fmt.Sprintf("/snapshots/add/s%d-%d", w, i), ctJSON, `{"n":1}`)
			}
		})
	}
	wg.Wait()
	pages, joined := relay(t, s1, s2, 7)
	if pages != 5 || joined != 32 {
		t.Fatalf("%d pages, %d deltas joined; want 5 and 32", pages, joined)
	}
	if st := n2.Stats(); st.Waiting != 0 || st.Unproven != 0 || st.Items["snapshots"] != 32 {
		t.Fatalf("receiver: %d items, %d waiting, %d unproven", st.Items["snapshots"], st.Waiting, st.Unproven)
	}
}

// A delta as large as a node writes (1 MiB of metadata) posts to a node
// with default settings, and GET /crdt/delta cuts its pages by size so that each is
// one such a node takes; the page's last delta is signed where it is cut.
func TestExternalGossip_PagesBySize(t *testing.T) {
	n1, n2 := signedNode(t), signedNode(t)
	s1 := newServer(t, n1, func(c *Config) { c.MaxBodyBytes = 4 << 20 })
	s1.pageBytes = 3 << 20 // maxDeltaPageBytes is 20 MiB: cut sooner
	s2 := newServer(t, n2, nil)
	blob := strings.Repeat("x", 1<<20-16) // as large as a metadata document may be
	const items = 5                       // more than one page's worth
	for i := range items {
		mustDo(t, s1, 201, "POST", fmt.Sprintf("/images/add/big%d", i), ctJSON, fmt.Sprintf(`{"blob":%q}`, blob))
	}
	pages, joined := relay(t, s1, s2, 1000)
	if pages < 2 || joined != items {
		t.Fatalf("%d pages, %d deltas joined; want more than one page and %d", pages, joined, items)
	}
	if st := n2.Stats(); st.Waiting != 0 || st.Items["images"] != items {
		t.Fatalf("receiver: %d items, %d waiting", st.Items["images"], st.Waiting)
	}
}

// Issue 9, row 5, through POST /crdt/delta on signed nodes: a delta under
// another replica's next dot is refused with 400 if it is signed with the
// wrong key, and waits, never joined, if it is not signed; the replica's
// own delta under that dot then joins in its place.
func TestExternalGossip_ForgedDeltaOfAnotherReplica(t *testing.T) {
	n1, n2 := signedNode(t), signedNode(t)
	s1, s2 := newServer(t, n1, nil), newServer(t, n2, nil)
	mustDo(t, s1, 201, "POST", "/snapshots/add/x", ctJSON, `{"v":"n1"}`)
	relay(t, s1, s2, 100)
	mustDo(t, s1, 200, "PUT", "/snapshots/metadata/x", ctJSON, `{"v":"n1-again"}`)
	res := mustDo(t, s1, 200, "GET", "/crdt/delta", "", "")
	var p page
	if err := json.Unmarshal(res.body, &p); err != nil || len(p.Deltas) != 1 {
		t.Fatalf("page: %v %s", err, res.body)
	}
	var real crdt.Delta
	if err := real.UnmarshalJSON(p.Deltas[0]); err != nil {
		t.Fatal(err)
	}
	forged := real
	forged.Item = crdt.Item{Presence: real.Item.Presence, Fields: map[string][]crdt.Entry{"v": {{Dot: real.Dot, TS: real.TS, Value: []byte(`"forged"`)}}}}
	enc, err := crdt.EncodeDelta(&forged)
	if err != nil {
		t.Fatal(err)
	}
	_, wrongKey, _ := ed25519.GenerateKey(rand.Reader)
	forged.Proof.Sig = crdt.SignHead(wrongKey, real.Dot.Replica, real.Dot.Counter, crdt.ChainNext(real.Proof.Prev, enc))
	b, _ := json.Marshal(&forged)
	mustDo(t, s2, 400, "POST", "/crdt/delta", ctJSON, string(b))
	forged.Proof.Sig = nil
	b, _ = json.Marshal(&forged)
	if got := mustDo(t, s2, 200, "POST", "/crdt/delta", ctJSON, string(b)).obj(t); got["waiting"] != 1.0 || got["new"] != 0.0 {
		t.Fatalf("an unsigned forgery: %v, want it waiting", got)
	}
	if body := string(mustDo(t, s2, 200, "GET", "/snapshots/x", "", "").body); strings.Contains(body, "forged") {
		t.Fatalf("the forgery joined: %s", body)
	}
	if got := mustDo(t, s2, 200, "POST", "/crdt/delta", ctJSON, string(p.Deltas[0])).obj(t); got["new"] != 1.0 {
		t.Fatalf("the replica's own delta: %v, want it joined", got)
	}
	if body := string(mustDo(t, s2, 200, "GET", "/snapshots/x", "", "").body); !strings.Contains(body, `"n1-again"`) {
		t.Fatalf("x on n2: %s", body)
	}
}
