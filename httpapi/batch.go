package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
)

// batchRequest is the body of POST /{collection}/batch.
type batchRequest struct {
	Ops []batchOp `json:"ops"`
}

// batchOp is one operation of a batch: "op" is add, create, remove,
// replace or patch (what POST add, POST add with If-None-Match: *,
// DELETE remove, PUT metadata and PATCH metadata do), "metadata" the
// document of add, create and replace, or the merge patch of patch.
type batchOp struct {
	Op       string          `json:"op"`
	ID       string          `json:"id"`
	Metadata json.RawMessage `json:"metadata"`
}

// batchResult is the outcome of one operation: the item after it, or
// none after a remove.
type batchResult struct {
	Op   string    `json:"op"`
	ID   string    `json:"id"`
	Item *itemJSON `json:"item,omitempty"`
}

// handleBatch serves POST /{collection}/batch: many writes to one
// collection as one atomic write (node.Batch): all are applied or none,
// in one commit, and peers receive them together. An error names the
// operation that failed and leaves the node unchanged. The body is at
// most Config.MaxBodyBytes, with at most node.MaxBatchOps operations.
func (s *Server) handleBatch(coll string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		body, err := s.readBody(w, r, false, mediaJSON)
		if err != nil {
			return err
		}
		var req batchRequest
		if err := decodeStrict(body, &req); err != nil {
			return err
		}
		if req.Ops == nil {
			return badRequest(`want {"ops": [{"op": "add", "id": "...", "metadata": {...}}, ...]}`)
		}
		if len(req.Ops) > node.MaxBatchOps {
			return badRequest("a batch of %d operations: at most %d", len(req.Ops), node.MaxBatchOps)
		}
		ops := make([]node.Op, len(req.Ops))
		for i, o := range req.Ops {
			if ops[i], err = parseBatchOp(coll, o); err != nil {
				return fmt.Errorf("operation %d: %w", i, err)
			}
		}
		items, err := s.c.Batch(r.Context(), ops)
		if err != nil {
			var be *node.BatchError
			if errors.As(err, &be) && be.Index < len(req.Ops) {
				o := req.Ops[be.Index]
				return fmt.Errorf("operation %d (%s %q): %w; nothing of the batch was applied", be.Index, o.Op, o.ID, be.Err)
			}
			return err
		}
		out := struct {
			Results     []batchResult `json:"results"`
			CausalToken string        `json:"causal_token"`
		}{make([]batchResult, len(ops)), setToken(w, tokenOf(items...))}
		for i, op := range ops {
			out.Results[i] = batchResult{Op: req.Ops[i].Op, ID: op.Key.ID}
			if op.Kind != node.OpRemove {
				it := toItem(items[i], false)
				out.Results[i].Item = &it
			}
		}
		s.writeJSON(w, r, http.StatusOK, out)
		return nil
	}
}

// parseBatchOp checks one operation of a batch in collection coll.
func parseBatchOp(coll string, o batchOp) (node.Op, error) {
	kind, ok := node.ParseOpKind(o.Op)
	if !ok {
		return node.Op{}, badRequest(`"op" must be add, create, remove, replace or patch; got %q`, o.Op)
	}
	if err := crdt.ValidateID(o.ID); err != nil {
		return node.Op{}, err
	}
	op := node.Op{Kind: kind, Key: crdt.Key{Collection: coll, ID: o.ID}}
	meta := trimJSONSpace(o.Metadata)
	if string(meta) == "null" {
		meta = nil
	}
	var err error
	switch kind {
	case node.OpRemove:
		if meta != nil {
			return node.Op{}, badRequest(`a remove takes no "metadata"`)
		}
	case node.OpAdd, node.OpCreate:
		op.Doc, err = parseMetadata(meta, true)
	default:
		if meta == nil {
			return node.Op{}, badRequest(`%s needs "metadata"`, o.Op)
		}
		op.Doc, err = parseMetadata(meta, false)
	}
	return op, err
}
