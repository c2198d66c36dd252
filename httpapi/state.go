package httpapi

import (
	"io"
	"net/http"
	"strconv"
)

// headerCursor carries, on GET /crdt/state, the delta-log cursor the
// state covers (node.StateExport.Cursor): after delivering the state, an
// external-gossip consumer clears its pending deltas up to it.
const headerCursor = "Crdt-Delta-Cursor"

// handleExportState serves GET /crdt/state: the node's full state as a
// stream (node.ExportState's format), for an external-gossip consumer
// whose cursor fell behind the trimmed log. Errors found before the first
// byte get the usual JSON error; an export that fails midway cuts the
// response short (the connection is dropped), which the stream's trailer
// makes detectable and POST /crdt/state rejects.
func (s *Server) handleExportState(w http.ResponseWriter, r *http.Request) error {
	e, err := s.c.BeginExport(r.Context())
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", mediaState)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set(headerCursor, strconv.FormatUint(e.Cursor, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	// The stream lasts as long as the client keeps reading it.
	dw := deadlineWriter{w: w, ctl: http.NewResponseController(w), timeout: s.cfg.WriteTimeout}
	if err := e.Stream(r.Context(), dw); err != nil {
		if r.Context().Err() == nil {
			s.log.Warn("GET /crdt/state: export failed midway (or the client went away); response cut short", "err", err)
		}
		panic(http.ErrAbortHandler)
	}
	return nil
}

// importResponse is the body of POST /crdt/state.
type importResponse struct {
	Items   int `json:"items"`   // items in the stream
	Changed int `json:"changed"` // local items the join changed
}

// handleImportState serves POST /crdt/state: joins a full state produced
// by GET /crdt/state of another node. The node checks each piece of the
// body before applying any of it (node.ImportState), so a bad body (400),
// one too large (413) or of an unknown format version (400) changes
// nothing beyond the valid pieces before the bad one.
func (s *Server) handleImportState(w http.ResponseWriter, r *http.Request) error {
	if err := checkMediaType(r.Header.Get("Content-Type"), []string{mediaState, mediaOctets}); err != nil {
		return err
	}
	limit := s.cfg.MaxStateBytes
	if r.ContentLength > limit {
		return &http.MaxBytesError{Limit: limit}
	}
	body := bodyReader{http.MaxBytesReader(w, r.Body, limit)}
	res, err := s.c.ImportState(r.Context(), body)
	if err != nil {
		return err
	}
	s.writeJSON(w, r, http.StatusOK, importResponse{Items: res.Items, Changed: res.Changed})
	return nil
}

// bodyReader reads a request body for a streaming decoder: a failure to
// read it becomes the error bodyError gives, as in readBody.
type bodyReader struct{ r io.Reader }

func (b bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = bodyError(err)
	}
	return n, err
}
