// Package httpapi is the local REST facade over a catalog node: the seed's
// endpoints plus status, health and metrics, on the standard library's
// net/http with Go 1.22 method patterns.
//
// # Routes
//
// For each collection C the node serves (by default snapshots and images):
//
//	POST   /C/add/{id}        add with a metadata object (empty body: {}) -> 201 item
//	                          an upsert: a present item's metadata becomes the body;
//	                          with If-None-Match: *, only if absent on this node, else 412
//	DELETE /C/remove/{id}     remove                                       -> 200 {"removed": id}
//	PUT    /C/metadata/{id}   replace the metadata                         -> 200 item
//	PATCH  /C/metadata/{id}   JSON merge patch (RFC 7396)                  -> 200 item
//	GET    /C/{id}            one item; ?conflicts=true adds the losers    -> 200 item
//
// and, once:
//
//	GET  /catalog/query?type=C&q=...&limit=...&cursor=...  -> 200 {"items": [...], "next_cursor": "..."}
//	GET    /catalog/indexes                      -> 200 {"indexes": [...]}
//	GET    /catalog/indexes/{collection}/{field} -> 200 one index's status
//	PUT    /catalog/indexes/{collection}/{field} -> 202 added, built in the background (200 if it exists)
//	DELETE /catalog/indexes/{collection}/{field} -> 202 dropped, entries deleted in the background
//	GET  /catalog/watch?type=C&q=...&since=N&initial=true  -> 200 stream of changes (SSE, or NDJSON; see watch.go)
//	GET  /crdt/delta?limit=...     pending local deltas    -> 200 {"deltas": [...], "cursor": N, "more": bool}
//	POST /crdt/delta               one delta or an array   -> 200 {"new", "duplicate", "waiting", "refused"}
//	POST /crdt/delta/clear         {"cursor": N} or empty  -> 200 {"cleared": N}
//	GET  /crdt/state               this node's full state  -> 200 stream, header Crdt-Delta-Cursor: N
//	POST /crdt/state               join another's state    -> 200 {"items": n, "changed": m}
//	GET  /status                   replica, applied_version_vector, counts, indexes, StatusFunc fields
//	GET  /healthz                  liveness: 200 {"status": "ok"}
//	GET  /readyz                   200 {"status": "ready"}, 503 while closing or while the store refuses writes
//	GET  /metrics                  Prometheus text exposition
//
// An item is {"id": ..., "collection": ..., "metadata": {...}}, with
// "conflicts": {"field": [{"value": ..., "ts": ..., "replica": ...}]} when
// asked for. Deltas travel in the JSON form of crdt.Delta.
//
// # Full state
//
// GET /crdt/state streams node.ExportState's format, uvarint-length-prefixed
// CBOR frames (a header with the contexts, the items in key order, a
// trailer with their count), as application/vnd.crdt-catalog.state: not
// one CBOR item, hence not application/cbor. Its Crdt-Delta-Cursor header
// is the pending-delta cursor the state covers. It is the way back for an
// external-gossip consumer that GET /crdt/delta answers 410: post the
// state to the receiver's POST /crdt/state, then POST /crdt/delta/clear
// with {"cursor": N}. An export that fails midway drops the connection,
// so the client sees a stream without its trailer.
//
// POST /crdt/state takes that stream (as application/vnd.crdt-catalog.state
// or application/octet-stream), at most Config.MaxStateBytes of it. The
// node checks it in pieces of 1 MiB, each before joining any of it (see
// node.ImportState): a malformed stream, one cut short or of an unknown
// format version is a 400, one too large a 413; a body of one piece is so
// all or nothing, a longer one keeps the pieces before the bad one joined
// (valid items, without the sender's contexts: post the state again).
//
// # Errors
//
// Every error, including an unknown route (404) and a wrong method on a
// known path (405, with an Allow header), is a JSON body {"error": "..."}:
// 400 malformed input, 401 missing or wrong bearer token, 404 unknown item
// or collection (or index), 408 body not received within
// Config.BodyTimeout, 409 a suspected fork (node.ErrForkSuspected), or an
// index that cannot be added or dropped now (one being dropped, one the
// configuration declares, node.MaxIndexesPerCollection reached), 410 pending deltas dropped from
// the log (take a full state) or a watch's since older than the change
// history (start again with initial=true), 412 a create-only add (If-None-Match: *)
// of an item present on this node, 413 body too large, 415 wrong
// Content-Type, 503 node closed or shutting down, or its store failing
// writes (node.ErrFailed), 507 the disk is full (an error wrapping
// syscall.ENOSPC), 500 anything else (logged). An error answered before
// the request's body was read to its end closes the connection.
//
// # Store failures
//
// While the node's store refuses writes (node.Node.Writable), every write
// is answered 507 or 503 at once, GET /readyz answers 503 with the
// reason, /status shows "writable": false and /metrics
// catalog_store_writable 0. The node resumes writes by itself.
//
// # Slow clients
//
// HTTPServer and LimitListener bound what slow or hostile clients hold:
// Config.ReadHeaderTimeout for headers, Config.BodyTimeout for bodies
// (POST /crdt/state: per MiB received), Config.WriteTimeout for responses
// (GET /crdt/state: per write of its stream), Config.IdleTimeout between
// requests, and Config.MaxConns connections at once.
//
// # Authentication
//
// With Config.Token set, every request except GET and HEAD must carry
// "Authorization: Bearer <token>"; with Config.TokenForReads, GET and HEAD
// must too. /healthz and /readyz never need the token, so probes work
// without it. The token is checked before any of the body is read: a
// request without it is answered 401 at once and its connection closed.
package httpapi
