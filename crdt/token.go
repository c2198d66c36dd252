package crdt

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Token is a causal read token: for each replica, the counter of its
// last dot a reader wants to see. A write hands out a token naming its
// dots; a reader holding it asks a node to answer only once it has
// applied them (and, since a replica's deltas are applied in order,
// everything of that replica before them). Tokens merge as version
// vectors, so a client can keep one token for everything it has written
// and read.
//
// Its text form (String, ParseToken) is URL-safe: "replica:counter"
// entries sorted by replica and joined by commas.
type Token map[ReplicaID]uint64

// MaxTokenReplicas bounds the replicas one token names.
const MaxTokenReplicas = 1000

// Add makes t cover d.
func (t Token) Add(d Dot) {
	if d.Counter > t[d.Replica] {
		t[d.Replica] = d.Counter
	}
}

// Merge makes t cover everything o covers.
func (t Token) Merge(o Token) {
	for r, c := range o {
		t.Add(Dot{r, c})
	}
}

// Missing returns the dots of t that applied does not contain, sorted.
func (t Token) Missing(applied *Context) []Dot {
	var out []Dot
	for r, c := range t {
		if d := (Dot{r, c}); !applied.Contains(d) {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, compareDots)
	return out
}

// String returns t's text form; "" for an empty token.
func (t Token) String() string {
	rs := make([]ReplicaID, 0, len(t))
	for r := range t {
		rs = append(rs, r)
	}
	slices.Sort(rs)
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(string(r))
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(t[r], 10))
	}
	return b.String()
}

// ParseToken parses a token's text form; tokens merged by a client may
// list a replica more than once (the greater counter counts) and in any
// order. An empty string is the empty token. It returns an error wrapping
// ErrInvalid for anything else, and ErrTooLarge for more than
// MaxTokenReplicas entries, checked before it allocates for them.
func ParseToken(s string) (Token, error) {
	t := Token{}
	if s == "" {
		return t, nil
	}
	if n := strings.Count(s, ",") + 1; n > MaxTokenReplicas {
		return nil, fmt.Errorf("%w: a token of %d entries, at most %d", ErrTooLarge, n, MaxTokenReplicas)
	}
	for e := range strings.SplitSeq(s, ",") {
		i := strings.LastIndexByte(e, ':')
		if i < 0 {
			return nil, fmt.Errorf("%w: token entry %.80q is not replica:counter", ErrInvalid, e)
		}
		c, err := strconv.ParseUint(e[i+1:], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: token entry %.80q: counter is not a number from 1 to %d", ErrInvalid, e, uint64(1<<64-1))
		}
		d := Dot{ReplicaID(e[:i]), c}
		if err := d.Validate(); err != nil {
			return nil, fmt.Errorf("token: %w", err)
		}
		t.Add(d)
	}
	if len(t) > MaxTokenReplicas {
		return nil, fmt.Errorf("%w: a token of %d replicas, at most %d", ErrTooLarge, len(t), MaxTokenReplicas)
	}
	return t, nil
}
