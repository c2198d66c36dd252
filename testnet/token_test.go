package testnet

import (
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"
)

// TestCausalTokens_ReadYourWritesAcrossPeers: on real nodes, a client
// that writes on one peer and reads on another with the write's causal
// token sees its write every time (and, patching one field again and
// again, never an older value), however far gossip is behind.
func TestCausalTokens_ReadYourWritesAcrossPeers(t *testing.T) {
	skipShort(t)
	c := Start(t, Options{Binary: Build(t), N: 3, Seed: seedFor(t)})
	ctx := ctxFor(t, 120*time.Second)
	if err := c.AwaitConnected(ctx, 2); err != nil {
		t.Fatal(err)
	}
	writer, reader := c.Client(0), c.Client(1)
	if st, body, err := writer.do(ctx, "POST", "/"+testColl+"/add/ryw", []byte(`{"n":0}`)); err != nil || st != 201 {
		t.Fatalf("add: %d %s %v", st, body, err)
	}
	for i := 1; i <= 30; i++ {
		st, body, err := writer.do(ctx, "PATCH", "/"+testColl+"/metadata/ryw", fmt.Appendf(nil, `{"n":%d}`, i))
		if err != nil || st != 200 {
			t.Fatalf("patch %d: %d %s %v", i, st, body, err)
		}
		var w struct {
			Token string `json:"causal_token"`
		}
		if err := json.Unmarshal(body, &w); err != nil || w.Token == "" {
			t.Fatalf("patch %d answered no token: %s", i, body)
		}
		st, body, err = reader.do(ctx, "GET", "/"+testColl+"/ryw?timeout=30s&after="+url.QueryEscape(w.Token), nil)
		if err != nil || st != 200 {
			t.Fatalf("read %d on another peer with its token: %d %s %v", i, st, body, err)
		}
		var r struct {
			Metadata struct{ N int } `json:"metadata"`
		}
		if err := json.Unmarshal(body, &r); err != nil || r.Metadata.N != i {
			t.Fatalf("read %d on another peer with its token saw %s", i, body)
		}
	}
}
