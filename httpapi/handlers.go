package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
)

// Page sizes.
const (
	// defaultQueryLimit is the page size of /catalog/query without limit.
	defaultQueryLimit = 100
	// defaultDeltaLimit is the page size of GET /crdt/delta without limit.
	defaultDeltaLimit = 1000
	// maxDeltaLimit bounds the limit of GET /crdt/delta, so that one
	// response stays a reasonable size.
	maxDeltaLimit = 10000
)

// itemJSON is an item as the API shows it.
type itemJSON struct {
	ID         string                    `json:"id"`
	Collection string                    `json:"collection"`
	Metadata   crdt.Document             `json:"metadata"`
	Conflicts  map[string][]conflictJSON `json:"conflicts,omitzero"`
	// CausalToken is the token of the write that returned the item
	// (also in the Crdt-Causal-Token header); absent on reads.
	CausalToken string `json:"causal_token,omitempty"`
}

// conflictJSON is one losing write of a field.
type conflictJSON struct {
	Value   json.RawMessage `json:"value"`
	TS      crdt.Timestamp  `json:"ts"`
	Replica crdt.ReplicaID  `json:"replica"`
}

// toItem renders it; with conflicts, the "conflicts" object is present
// (empty when no field has concurrent writes).
func toItem(it node.Item, conflicts bool) itemJSON {
	out := itemJSON{ID: it.ID, Collection: it.Collection, Metadata: it.Metadata}
	if out.Metadata == nil {
		out.Metadata = crdt.Document{}
	}
	if conflicts {
		out.Conflicts = make(map[string][]conflictJSON, len(it.Conflicts))
		for f, es := range it.Conflicts {
			list := make([]conflictJSON, len(es))
			for i, e := range es {
				list[i] = conflictJSON{Value: e.Value, TS: e.TS, Replica: e.Dot.Replica}
			}
			out.Conflicts[f] = list
		}
	}
	return out
}

// pathKey returns the item named by the request path in collection coll.
func pathKey(coll string, r *http.Request) (crdt.Key, error) {
	id := r.PathValue("id")
	if err := crdt.ValidateID(id); err != nil {
		return crdt.Key{}, err
	}
	return crdt.Key{Collection: coll, ID: id}, nil
}

// parseMetadata decodes a metadata document; with emptyOK an empty body is
// the empty document.
func parseMetadata(body []byte, emptyOK bool) (crdt.Document, error) {
	if emptyOK && len(body) == 0 {
		return crdt.Document{}, nil
	}
	return crdt.ParseDocument(body)
}

// handleAdd serves POST /{collection}/add/{id}: an upsert (an existing
// item's metadata becomes the body), or, with If-None-Match: *, a
// create-only add that answers 412 when the item is present on this node.
func (s *Server) handleAdd(coll string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		k, err := pathKey(coll, r)
		if err != nil {
			return err
		}
		createOnly, err := createOnlyPrecondition(r)
		if err != nil {
			return err
		}
		body, err := s.readBody(w, r, true, mediaJSON)
		if err != nil {
			return err
		}
		doc, err := parseMetadata(body, true)
		if err != nil {
			return err
		}
		var it node.Item
		if createOnly {
			it, err = s.c.Create(r.Context(), k, doc)
			if errors.Is(err, node.ErrExists) {
				return fmt.Errorf("%w: %s %q is present on this node, and If-None-Match: * adds only an absent item", err, coll, k.ID)
			}
		} else {
			it, err = s.c.Add(r.Context(), k, doc)
		}
		if err != nil {
			return err
		}
		w.Header().Set("Location", "/"+coll+"/"+k.ID)
		s.writeJSON(w, r, http.StatusCreated, s.written(w, it))
		return nil
	}
}

// written renders the item a write returned, with the write's causal
// token, which it also sets as the response's Crdt-Causal-Token header.
func (s *Server) written(w http.ResponseWriter, it node.Item) itemJSON {
	out := toItem(it, false)
	out.CausalToken = setToken(w, tokenOf(it))
	return out
}

// createOnlyPrecondition reports whether the request asks for a
// create-only add (If-None-Match: *). The API issues no entity tags, so
// any other If-None-Match is refused rather than silently ignored.
func createOnlyPrecondition(r *http.Request) (bool, error) {
	vals := r.Header.Values("If-None-Match")
	if len(vals) == 0 {
		return false, nil
	}
	if len(vals) == 1 && strings.TrimSpace(vals[0]) == "*" {
		return true, nil
	}
	return false, badRequest("If-None-Match: only * is supported (add only if absent); this API issues no entity tags")
}

// removedJSON is the body of a remove's response.
type removedJSON struct {
	Removed     string `json:"removed"`
	CausalToken string `json:"causal_token"`
}

// handleRemove serves DELETE /{collection}/remove/{id}.
func (s *Server) handleRemove(coll string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		k, err := pathKey(coll, r)
		if err != nil {
			return err
		}
		// A batch of one, for the dot of the remove.
		items, err := s.c.Batch(r.Context(), []node.Op{{Kind: node.OpRemove, Key: k}})
		if be := (*node.BatchError)(nil); errors.As(err, &be) {
			err = be.Err
		}
		if err != nil {
			return err
		}
		s.writeJSON(w, r, http.StatusOK, removedJSON{k.ID, setToken(w, tokenOf(items...))})
		return nil
	}
}

// handleReplace serves PUT /{collection}/metadata/{id}.
func (s *Server) handleReplace(coll string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		k, err := pathKey(coll, r)
		if err != nil {
			return err
		}
		body, err := s.readBody(w, r, false, mediaJSON)
		if err != nil {
			return err
		}
		doc, err := parseMetadata(body, false)
		if err != nil {
			return err
		}
		it, err := s.c.Replace(r.Context(), k, doc)
		if err != nil {
			return err
		}
		s.writeJSON(w, r, http.StatusOK, s.written(w, it))
		return nil
	}
}

// handlePatch serves PATCH /{collection}/metadata/{id}.
func (s *Server) handlePatch(coll string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		k, err := pathKey(coll, r)
		if err != nil {
			return err
		}
		body, err := s.readBody(w, r, false, mediaMergePatch, mediaJSON)
		if err != nil {
			return err
		}
		patch, err := parseMetadata(body, false)
		if err != nil {
			return err
		}
		it, err := s.c.Patch(r.Context(), k, patch)
		if err != nil {
			return err
		}
		s.writeJSON(w, r, http.StatusOK, s.written(w, it))
		return nil
	}
}

// handleGet serves GET /{collection}/{id}.
func (s *Server) handleGet(coll string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		k, err := pathKey(coll, r)
		if err != nil {
			return err
		}
		conflicts, err := boolParam(r.URL.Query(), "conflicts")
		if err != nil {
			return err
		}
		if err := s.waitAfter(r); err != nil {
			return err
		}
		it, err := s.c.Get(r.Context(), k)
		if err != nil {
			return err
		}
		s.writeJSON(w, r, http.StatusOK, toItem(it, conflicts))
		return nil
	}
}

// queryResponse is the body of GET /catalog/query.
type queryResponse struct {
	Items      []itemJSON `json:"items"`
	NextCursor string     `json:"next_cursor,omitempty"`
	// Scanned and Read are node.Page's: whether the query scanned the
	// collection (no term of it is indexed) and how many items it read.
	Scanned bool `json:"scanned"`
	Read    int  `json:"read"`
}

// countResponse is the body of GET /catalog/query with count=true.
type countResponse struct {
	Count   int  `json:"count"`
	Scanned bool `json:"scanned"`
}

// handleQuery serves GET /catalog/query?type=&q=&limit=&cursor=&conflicts=,
// or, with count=true, the number of matches.
func (s *Server) handleQuery(w http.ResponseWriter, r *http.Request) error {
	params := r.URL.Query()
	coll := params.Get("type")
	if coll == "" {
		return badRequest(`query parameter "type" (the collection) is required`)
	}
	limit, err := intParam(params, "limit", defaultQueryLimit, node.MaxQueryLimit)
	if err != nil {
		return err
	}
	conflicts, err := boolParam(params, "conflicts")
	if err != nil {
		return err
	}
	count, err := boolParam(params, "count")
	if err != nil {
		return err
	}
	if count && (params.Has("limit") || params.Has("cursor") || conflicts) {
		return badRequest(`"count" counts every match: it takes no "limit", "cursor" or "conflicts"`)
	}
	if err := s.waitAfter(r); err != nil {
		return err
	}
	if count {
		n, scanned, err := s.c.Count(r.Context(), coll, params.Get("q"))
		if err != nil {
			return err
		}
		s.writeJSON(w, r, http.StatusOK, countResponse{Count: n, Scanned: scanned})
		return nil
	}
	page, err := s.c.Query(r.Context(), coll, params.Get("q"), limit, params.Get("cursor"))
	if err != nil {
		return err
	}
	out := queryResponse{Items: make([]itemJSON, len(page.Items)), NextCursor: page.NextCursor, Scanned: page.Scanned, Read: page.Read}
	for i, it := range page.Items {
		out.Items[i] = toItem(it, conflicts)
	}
	s.writeJSON(w, r, http.StatusOK, out)
	return nil
}

// deltasResponse is the body of GET /crdt/delta.
type deltasResponse struct {
	Deltas []json.RawMessage `json:"deltas"`
	Cursor uint64            `json:"cursor"`
	More   bool              `json:"more"`
}

// maxDeltaPageBytes bounds the JSON of the deltas of one GET /crdt/delta
// page (but for a single delta, which is never cut): what POST
// /crdt/delta takes, on any node, whatever its MaxBodyBytes.
const maxDeltaPageBytes = crdt.MaxDeltaJSONBytes

// handleGetDeltas serves GET /crdt/delta?limit=: the pending deltas of
// this node's own operations and the cursor to clear them with. A page
// holds at most limit deltas and maxDeltaPageBytes of their JSON, and its
// last delta carries this node's signature, so that the page as a whole
// is proven wherever it is posted.
func (s *Server) handleGetDeltas(w http.ResponseWriter, r *http.Request) error {
	limit, err := intParam(r.URL.Query(), "limit", defaultDeltaLimit, maxDeltaLimit)
	if err != nil {
		return err
	}
	p, err := s.c.GetDeltas(r.Context(), limit)
	if errors.Is(err, node.ErrCursorExpired) {
		return fmt.Errorf("%w; the pending deltas are no longer all in the log: take a full state instead: "+
			"GET /crdt/state on this node, POST that body to the receiver's /crdt/state, then POST /crdt/delta/clear "+
			`here with {"cursor": N}, N from the %s header of the GET`, err, headerCursor)
	}
	if err != nil {
		return err
	}
	out := deltasResponse{Deltas: []json.RawMessage{}, Cursor: p.Cursor, More: p.More}
	size := 0
	for i, d := range p.Deltas {
		b, err := d.MarshalJSON()
		if err != nil {
			return err
		}
		if size += len(b) + 1; size > s.pageBytes && i > 0 {
			// Cut here: the last delta kept must carry the signature.
			last := p.Deltas[i-1]
			if err := s.c.Attest(last); err != nil {
				return err
			}
			if out.Deltas[i-1], err = last.MarshalJSON(); err != nil {
				return err
			}
			out.Cursor, out.More = p.Seqs[i-1], true
			break
		}
		out.Deltas = append(out.Deltas, b)
	}
	s.writeJSON(w, r, http.StatusOK, out)
	return nil
}

// applyResponse is the body of POST /crdt/delta.
type applyResponse struct {
	New       int `json:"new"`
	Duplicate int `json:"duplicate"`
	Waiting   int `json:"waiting"`
	Refused   int `json:"refused"`
}

// handleApplyDeltas serves POST /crdt/delta: one delta object, an array
// of them, or a page as GET /crdt/delta returns it, validated all or
// nothing. It takes a body of up to max(MaxBodyBytes,
// crdt.MaxDeltaJSONBytes): room for any delta, and for any page another
// node serves.
func (s *Server) handleApplyDeltas(w http.ResponseWriter, r *http.Request) error {
	body, err := s.readBodyUpTo(w, r, max(s.cfg.MaxBodyBytes, crdt.MaxDeltaJSONBytes), false, mediaJSON)
	if err != nil {
		return err
	}
	deltas, err := decodeDeltas(body)
	if err != nil {
		return err
	}
	var res node.ApplyResult
	if len(deltas) > 0 {
		if res, err = s.c.ApplyDeltas(r.Context(), deltas); err != nil {
			return err
		}
	}
	s.writeJSON(w, r, http.StatusOK, applyResponse{New: res.New, Duplicate: res.Duplicate, Waiting: res.Waiting, Refused: res.Refused})
	return nil
}

// decodeDeltas decodes one delta object, an array of them, or a page
// ({"deltas": [...], "cursor": N, "more": B}, the body of GET
// /crdt/delta); each delta is validated as it decodes, and the first bad
// one fails the whole body.
func decodeDeltas(b []byte) ([]*crdt.Delta, error) {
	if len(b) == 0 {
		return nil, badRequest("empty body: want a delta object, an array of deltas, or a page of GET /crdt/delta")
	}
	switch b[0] {
	case '{':
		var page struct {
			Deltas []json.RawMessage `json:"deltas"`
			Cursor *uint64           `json:"cursor"`
			More   *bool             `json:"more"`
		}
		if err := decodeStrict(b, &page); err == nil && page.Deltas != nil {
			return decodeDeltaList(page.Deltas)
		}
		d, err := decodeDelta(b)
		if err != nil {
			return nil, err
		}
		return []*crdt.Delta{d}, nil
	case '[':
		var raws []json.RawMessage
		if err := json.Unmarshal(b, &raws); err != nil {
			return nil, badRequest("malformed JSON: %v", err)
		}
		return decodeDeltaList(raws)
	default:
		return nil, badRequest("want a delta object, an array of deltas, or a page of GET /crdt/delta")
	}
}

// decodeDeltaList decodes each delta of a list.
func decodeDeltaList(raws []json.RawMessage) ([]*crdt.Delta, error) {
	deltas := make([]*crdt.Delta, len(raws))
	for i, raw := range raws {
		d, err := decodeDelta(raw)
		if err != nil {
			return nil, fmt.Errorf("delta %d: %w", i, err)
		}
		deltas[i] = d
	}
	return deltas, nil
}

func decodeDelta(b []byte) (*crdt.Delta, error) {
	if b = trimJSONSpace(b); len(b) == 0 || b[0] != '{' {
		return nil, badRequest("a delta must be a JSON object")
	}
	d := new(crdt.Delta)
	if err := d.UnmarshalJSON(b); err != nil {
		return nil, err
	}
	return d, nil
}

// clearRequest is the body of POST /crdt/delta/clear. The cursor is kept
// raw so that a bad one gets a message about cursors, not about Go types.
type clearRequest struct {
	Cursor json.RawMessage `json:"cursor"`
}

// parseCursor reads the cursor of POST /crdt/delta/clear: a JSON integer
// from 0 to 2^64-1, as GET /crdt/delta returns it.
func parseCursor(raw json.RawMessage) (uint64, error) {
	c, err := strconv.ParseUint(string(raw), 10, 64)
	if err != nil {
		return 0, badRequest(`"cursor" must be an integer from 0 to %d, the "cursor" of a GET /crdt/delta answer (or leave it out to clear everything); got %.40s`,
			uint64(math.MaxUint64), raw)
	}
	return c, nil
}

// handleClearDeltas serves POST /crdt/delta/clear: up to the cursor given,
// or every durable delta when the body is empty or has no cursor.
func (s *Server) handleClearDeltas(w http.ResponseWriter, r *http.Request) error {
	body, err := s.readBody(w, r, true, mediaJSON)
	if err != nil {
		return err
	}
	var req clearRequest
	if len(body) > 0 {
		if err := decodeStrict(body, &req); err != nil {
			return err
		}
	}
	var cleared uint64
	if req.Cursor == nil {
		cleared, err = s.c.ClearAllDeltas(r.Context())
	} else {
		if cleared, err = parseCursor(req.Cursor); err != nil {
			return err
		}
		err = s.c.ClearDeltas(r.Context(), cleared)
	}
	if err != nil {
		return err
	}
	s.writeJSON(w, r, http.StatusOK, map[string]uint64{"cleared": cleared})
	return nil
}

// handleStatus serves GET /status.
func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) error {
	out := map[string]any{}
	if s.cfg.Status != nil {
		maps.Copy(out, s.cfg.Status())
	}
	st := s.c.Stats()
	version := st.Version
	if version == nil {
		version = map[crdt.ReplicaID]uint64{}
	}
	items := st.Items
	if items == nil {
		items = map[string]int64{}
	}
	out["replica"] = st.Replica
	out["counter"] = st.Counter
	// Per replica, the counter up to which this node holds every delta.
	// Not "version": that reads as the software's, which cmd's StatusFunc
	// reports under "build".
	out["applied_version_vector"] = version
	out["collections"] = slices.Sorted(maps.Keys(s.colls))
	out["items"] = items
	out["delta_log"] = map[string]any{"entries": st.LogEntries, "bytes": st.LogBytes}
	out["pending"] = st.Pending
	out["ops"] = st.Ops
	out["deltas"] = map[string]uint64{"new": st.DeltasNew, "duplicate": st.DeltasDuplicate, "rejected": st.DeltasRejected,
		"refused": st.DeltasRefused, "waited": st.DeltasWaited, "evicted": st.WaitingEvicted,
		"unproven": st.Unproven, "equivocations": st.Equivocations}
	out["waiting"] = map[string]int64{"deltas": int64(st.Waiting), "bytes": st.WaitingBytes}
	if len(st.Equivocators) > 0 {
		eqs := make([]map[string]any, len(st.Equivocators))
		for i, e := range st.Equivocators {
			eqs[i] = map[string]any{"replica": e.Replica, "from_counter": e.From}
		}
		// Replicas proven to have signed two histories: their deltas from
		// from_counter on are refused and their entries dropped.
		out["equivocators"] = eqs
	}
	out["clock_ahead"] = st.ClockAhead
	if st.Fork != "" {
		out["fork_suspected"] = map[string]any{"evidence": st.ForkEvidence, "first": st.Fork, "writes_refused": st.Forked}
	}
	out["commit_failures"] = st.CommitFailures
	if ix, ok := s.c.(Indexer); ok {
		out["indexes"] = ix.Indexes()
	}
	out["writable"] = true
	if err := s.c.Writable(); err != nil {
		out["writable"] = false
		out["write_error"] = err.Error()
	}
	s.writeJSON(w, r, http.StatusOK, out)
	return nil
}

// handleHealthz serves GET /healthz: the process is up.
func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) error {
	s.writeJSON(w, r, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// handleReadyz serves GET /readyz: 503 while closing, and 503 with the
// reason while the node cannot write (its store failed a write and has
// not taken one since, or it is closed).
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) error {
	if s.closing.Load() {
		return errClosing
	}
	if err := s.c.Writable(); err != nil {
		return &httpError{http.StatusServiceUnavailable, "not ready: " + err.Error()}
	}
	s.writeJSON(w, r, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}

// methodNotAllowed answers 405 on a known path, listing the allowed
// methods.
func methodNotAllowed(allow string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Allow", allow)
		return &httpError{http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s; allowed: %s", r.Method, r.URL.Path, allow)}
	}
}

// notFound answers 404 for every path no route matches, naming the
// collection when the path has the shape of an item route.
func (s *Server) notFound(w http.ResponseWriter, r *http.Request) error {
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	itemShape := len(segs) == 2 ||
		len(segs) == 3 && slices.Contains([]string{"add", "remove", "metadata"}, segs[1])
	if itemShape && !s.colls[segs[0]] && !slices.Contains(reservedNames, segs[0]) &&
		crdt.ValidateCollection(segs[0]) == nil {
		return &httpError{http.StatusNotFound, fmt.Sprintf("unknown collection %q", segs[0])}
	}
	return &httpError{http.StatusNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path)}
}

// intParam reads a positive integer query parameter, def when absent.
func intParam(params url.Values, name string, def, limit int) (int, error) {
	v := params.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > limit {
		return 0, badRequest("query parameter %q must be an integer from 1 to %d, got %q", name, limit, v)
	}
	return n, nil
}

// boolParam reads a boolean query parameter, false when absent.
func boolParam(params url.Values, name string) (bool, error) {
	v := params.Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, badRequest("query parameter %q must be true or false, got %q", name, v)
	}
	return b, nil
}
