package httpapi

import (
	"context"
	"fmt"
	"net/http"

	"github.com/crdt-catalog/crdt-catalog/node"
)

// Indexer is the part of a catalog node that manages secondary indexes at
// runtime; *node.Node satisfies it. When the Catalog given to New is also
// an Indexer, the server serves the index routes and shows the indexes in
// GET /status:
//
//	GET    /catalog/indexes                      -> 200 {"indexes": [status...]}
//	GET    /catalog/indexes/{collection}/{field} -> 200 status, 404 if none
//	PUT    /catalog/indexes/{collection}/{field} -> 202 status (added, building), 200 if it exists
//	DELETE /catalog/indexes/{collection}/{field} -> 202 {"dropped": {...}}; entries deleted in the background
//
// A status is node.IndexStatus: {"collection", "field", "state"
// (building, ready, failed, dropping), "config", "api", "indexed",
// "total", "error"}.
type Indexer interface {
	Indexes() []node.IndexStatus
	AddIndex(ctx context.Context, collection, field string) (node.IndexStatus, bool, error)
	DropIndex(ctx context.Context, collection, field string) error
}

var _ Indexer = (*node.Node)(nil)

// indexRoutes registers the index routes if the catalog is an Indexer.
func (s *Server) indexRoutes(add func(method, path string, h handlerFunc)) {
	ix, ok := s.c.(Indexer)
	if !ok {
		return
	}
	const one = "/catalog/indexes/{collection}/{field}"
	add(http.MethodGet, "/catalog/indexes", func(w http.ResponseWriter, r *http.Request) error {
		s.writeJSON(w, r, http.StatusOK, indexesResponse{Indexes: ix.Indexes()})
		return nil
	})
	add(http.MethodGet, one, func(w http.ResponseWriter, r *http.Request) error {
		coll, field := r.PathValue("collection"), r.PathValue("field")
		for _, st := range ix.Indexes() {
			if st.Collection == coll && st.Field == field {
				s.writeJSON(w, r, http.StatusOK, st)
				return nil
			}
		}
		return fmt.Errorf("%w: no index on %s.%s", node.ErrNotFound, coll, field)
	})
	add(http.MethodPut, one, func(w http.ResponseWriter, r *http.Request) error {
		st, created, err := ix.AddIndex(r.Context(), r.PathValue("collection"), r.PathValue("field"))
		if err != nil {
			return err
		}
		code := http.StatusOK
		if created {
			code = http.StatusAccepted
		}
		s.writeJSON(w, r, code, st)
		return nil
	})
	add(http.MethodDelete, one, func(w http.ResponseWriter, r *http.Request) error {
		coll, field := r.PathValue("collection"), r.PathValue("field")
		if err := ix.DropIndex(r.Context(), coll, field); err != nil {
			return err
		}
		s.writeJSON(w, r, http.StatusAccepted, map[string]any{"dropped": map[string]string{"collection": coll, "field": field}})
		return nil
	})
}

// indexesResponse is the body of GET /catalog/indexes.
type indexesResponse struct {
	Indexes []node.IndexStatus `json:"indexes"`
}
