package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
)

// HeaderCausalToken is the header of a causal read token: on a write's
// response, the token of what it wrote; on a read's request, the writes
// the read must see (as the "after" parameter does).
const HeaderCausalToken = "Crdt-Causal-Token"

// Bounds of a read's wait for its token ("timeout").
const (
	defaultAfterTimeout = 5 * time.Second
	maxAfterTimeout     = time.Minute
)

// tokenOf returns the token of the writes that returned items.
func tokenOf(items ...node.Item) crdt.Token {
	t := crdt.Token{}
	for _, it := range items {
		if it.Dot.Counter != 0 {
			t.Add(it.Dot)
		}
	}
	return t
}

// setToken puts a write's token in its response header and returns its
// text, for the body.
func setToken(w http.ResponseWriter, t crdt.Token) string {
	s := t.String()
	w.Header().Set(HeaderCausalToken, s)
	return s
}

// waitAfter makes a read wait for the token its request names (the
// "after" parameter, or the Crdt-Causal-Token header; both merge), up to
// its "timeout" parameter (a Go duration, default 5s, at most 1m): the
// read then sees those writes. Without a token it returns at once. When
// the time is up it returns an error that answers 504 with what is
// missing; the node has asked a peer for it meanwhile.
func (s *Server) waitAfter(r *http.Request) error {
	params := r.URL.Query()
	tok := crdt.Token{}
	for _, v := range append(params["after"], r.Header.Values(HeaderCausalToken)...) {
		t, err := crdt.ParseToken(v)
		if err != nil {
			return badRequest("causal token: %v", err)
		}
		tok.Merge(t)
	}
	timeout := defaultAfterTimeout
	if v := params.Get("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > maxAfterTimeout {
			return badRequest(`"timeout" must be a duration such as 500ms or 5s, above 0 and at most %s; got %.40q`, maxAfterTimeout, v)
		}
		timeout = d
	}
	if len(tok) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	err := s.c.WaitApplied(ctx, tok)
	var na *node.NotAppliedError
	if errors.As(err, &na) && errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil {
		return &httpError{http.StatusGatewayTimeout, fmt.Sprintf(
			"waited %s for writes this node has not applied yet: %v; it has asked a peer for them: retry, or read from the node that took the write", timeout, na.Missing)}
	}
	return err
}
