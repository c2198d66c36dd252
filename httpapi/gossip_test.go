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
		if len(res.body) > crdt.MaxDeltaJSONBytes+1024 {
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
	s2 := newServer(t, n2, nil)
	blob := strings.Repeat("x", 1<<20-16) // as large as a metadata document may be
	const items = 24                      // more than one page's worth
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
