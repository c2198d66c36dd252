package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"syscall"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
	"github.com/crdt-catalog/crdt-catalog/node/query"
)

// httpError is an error of the HTTP layer itself, with its status.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

var (
	errClosing  = &httpError{http.StatusServiceUnavailable, "server is shutting down"}
	errNoToken  = &httpError{http.StatusUnauthorized, "missing bearer token"}
	errBadToken = &httpError{http.StatusUnauthorized, "wrong bearer token"}
)

// statusOf maps an error to its HTTP status. It is the one place where
// domain errors meet status codes.
func statusOf(err error) int {
	var (
		he  *httpError
		mbe *http.MaxBytesError
		se  *query.SyntaxError
	)
	switch {
	case errors.As(err, &he):
		return he.code
	case errors.As(err, &mbe), errors.Is(err, crdt.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, syscall.ENOSPC):
		// The disk is full: the write was not applied; retry once space
		// is freed (GET /readyz answers 200 again).
		return http.StatusInsufficientStorage
	case errors.Is(err, node.ErrCursorExpired):
		return http.StatusGone
	case errors.Is(err, node.ErrForkSuspected), errors.Is(err, node.ErrIndexBusy),
		errors.Is(err, node.ErrIndexDeclared), errors.Is(err, node.ErrIndexLimit):
		return http.StatusConflict
	case errors.Is(err, node.ErrExists):
		// A create-only add (If-None-Match: *) of a present item.
		return http.StatusPreconditionFailed
	case errors.Is(err, node.ErrNotFound), errors.Is(err, node.ErrUnknownCollection):
		return http.StatusNotFound
	case errors.As(err, &se), errors.Is(err, crdt.ErrInvalid), errors.Is(err, crdt.ErrVersion):
		return http.StatusBadRequest
	case errors.Is(err, io.ErrUnexpectedEOF):
		// A body that ends before its own format says it does: a full
		// state without its trailer.
		return http.StatusBadRequest
	case errors.Is(err, node.ErrClosed), errors.Is(err, node.ErrFailed):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// The client went away or the request timed out; a write it
		// started still commits.
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// errorBody is the JSON body of every error response.
type errorBody struct {
	Error string `json:"error"`
}

// writeError writes err as a JSON error with the status statusOf gives.
// The message of a 500 stays in the log.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := statusOf(err)
	msg := err.Error()
	var mbe *http.MaxBytesError
	switch {
	case code == http.StatusInternalServerError:
		s.log.Error("http request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		msg = "internal error"
	case code == http.StatusUnauthorized:
		if errors.Is(err, errBadToken) {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		} else {
			w.Header().Set("WWW-Authenticate", "Bearer")
		}
	case errors.As(err, &mbe):
		msg = fmt.Sprintf("request body is larger than %d bytes", mbe.Limit)
	}
	if unread(r) {
		// The body was not read (or not all of it): do not wait for the
		// rest to keep the connection; close it after answering.
		w.Header().Set("Connection", "close")
	}
	s.writeJSON(w, r, code, errorBody{msg})
}

// writeJSON writes v as the JSON body of a response with status code. It
// encodes before writing, so a value that does not encode becomes a clean
// 500 rather than half a body. HTML characters are not escaped: metadata
// values are stored JSON and travel byte for byte.
func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		s.log.Error("http response does not encode", "method", r.Method, "path", r.URL.Path, "err", err)
		code = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"internal error"}` + "\n")
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// handlerFunc is a handler that returns its error for writeError.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// wrap adapts a handlerFunc to http.Handler.
func (s *Server) wrap(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// Media types a body may have.
const (
	mediaJSON       = "application/json"
	mediaMergePatch = "application/merge-patch+json"
	// mediaState is the full-state stream of GET and POST /crdt/state:
	// uvarint-length-prefixed CBOR frames (node.ExportState's format), not
	// one CBOR item, hence a type of its own rather than application/cbor.
	mediaState = "application/vnd.crdt-catalog.state"
	// mediaOctets is also accepted by POST /crdt/state, for clients that
	// send files as they are.
	mediaOctets = "application/octet-stream"
)

// readBody checks the request's Content-Type against types and reads its
// body, at most Config.MaxBodyBytes of it. With emptyOK, a request without
// a Content-Type is accepted when its body is empty (or only white space);
// the body is then returned empty.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, emptyOK bool, types ...string) ([]byte, error) {
	return s.readBodyUpTo(w, r, s.cfg.MaxBodyBytes, emptyOK, types...)
}

// readBodyUpTo is readBody with a limit of its own.
func (s *Server) readBodyUpTo(w http.ResponseWriter, r *http.Request, limit int64, emptyOK bool, types ...string) ([]byte, error) {
	ct := r.Header.Get("Content-Type")
	if ct == "" && (!emptyOK || r.ContentLength > 0) {
		return nil, unsupportedMedia(types)
	}
	if ct != "" {
		if err := checkMediaType(ct, types); err != nil {
			return nil, err
		}
	}
	if r.ContentLength > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return nil, bodyError(err)
	}
	body = trimJSONSpace(body)
	if ct == "" && len(body) > 0 {
		return nil, unsupportedMedia(types)
	}
	return body, nil
}

// checkMediaType accepts a Content-Type whose media type is one of types,
// with any parameters except a charset other than UTF-8.
func checkMediaType(ct string, types []string) error {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || !slices.Contains(types, mt) {
		return unsupportedMedia(types)
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return &httpError{http.StatusUnsupportedMediaType, fmt.Sprintf("unsupported charset %q: JSON bodies are UTF-8", cs)}
	}
	return nil
}

func unsupportedMedia(types []string) error {
	return &httpError{http.StatusUnsupportedMediaType, "Content-Type must be " + strings.Join(types, " or ")}
}

// trimJSONSpace removes JSON white space from both ends of b.
func trimJSONSpace(b []byte) []byte {
	return bytes.Trim(b, " \t\r\n")
}

// decodeStrict decodes a JSON object into v, refusing unknown fields and
// anything after the object.
func decodeStrict(b []byte, v any) error {
	if len(b) == 0 || b[0] != '{' {
		return badRequest("body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("malformed JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("malformed JSON: data after the object")
	}
	return nil
}
