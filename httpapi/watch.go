package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/crdt-catalog/crdt-catalog/node"
	"github.com/crdt-catalog/crdt-catalog/node/query"
)

// GET /catalog/watch streams the changes of one collection's items (the
// node's change feed, node.Watch) as Server-Sent Events, or as NDJSON
// when the request accepts application/x-ndjson. Every message is one
// JSON object (watchEvent) whose "type" is also the SSE event name:
//
//	item          with initial=true: a matching item as of the snapshot
//	initial_end   the snapshot is complete; "seq" is the change it
//	              corresponds to: the changes that follow are those after it
//	change        "seq", "kind" (added, updated, removed), "collection",
//	              "id", "item" (absent for removed), "origin"
//	heartbeat     nothing happened for Config.WatchHeartbeat; "seq" is the
//	              watcher's position (changes up to it that do not match the
//	              filter were skipped)
//	error         the last message: why the stream ends and "resume", the
//	              parameters to reconnect with
//
// In SSE, change, initial_end and heartbeat carry their seq as the event
// id, so an EventSource that reconnects sends it back as Last-Event-ID,
// which resumes after it (and wins over initial=true).

// watchBatch is how many changes a watcher takes from the node at once.
const watchBatch = 256

// watchEvent is one message of a watch stream.
type watchEvent struct {
	Type       string      `json:"type"`
	Seq        uint64      `json:"seq,omitempty"`
	Kind       string      `json:"kind,omitempty"`
	Collection string      `json:"collection,omitempty"`
	ID         string      `json:"id,omitempty"`
	Item       *itemJSON   `json:"item,omitempty"`
	Origin     *originJSON `json:"origin,omitempty"`
	Error      string      `json:"error,omitempty"`
	Resume     string      `json:"resume,omitempty"`
}

// originJSON says where a change came from: "local" (a write on this
// node), "delta" (a remote delta: gossip or anti-entropy), "state" (a
// full-state import, without a dot) or "equivocation" (a proof that the
// replica signed two histories, from the counter on), and the dot.
type originJSON struct {
	Via     string `json:"via"`
	Replica string `json:"replica,omitempty"`
	Counter uint64 `json:"counter,omitempty"`
}

// watchStream writes the messages of one watch.
type watchStream struct {
	w      *bufio.Writer
	ctl    *http.ResponseController
	sse    bool
	coll   string
	q      *query.Query
	confl  bool
	pos    uint64 // the last change handled
	buf    []byte
	wdline time.Duration
	sent   time.Time // when the last message was buffered
	group  string    // the key of its watch group (watchgroup.go)
}

// send buffers one message; id sets the SSE event id.
func (ws *watchStream) send(ev watchEvent, id bool) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	return ws.write(ev.Type, ev.Seq, b, id)
}

// write buffers one message of type typ whose JSON is b; id sets the SSE
// event id to seq.
func (ws *watchStream) write(typ string, seq uint64, b []byte, id bool) error {
	ws.buf = ws.buf[:0]
	if ws.sse {
		if id {
			ws.buf = append(append(ws.buf, "id: "...), strconv.FormatUint(seq, 10)...)
			ws.buf = append(ws.buf, '\n')
		}
		ws.buf = append(append(append(ws.buf, "event: "...), typ...), '\n')
		ws.buf = append(append(append(ws.buf, "data: "...), b...), "\n\n"...)
	} else {
		ws.buf = append(append(ws.buf, b...), '\n')
	}
	ws.sent = time.Now()
	_, err := ws.w.Write(ws.buf)
	return err
}

// flush writes what is buffered to the client, within the write timeout.
func (ws *watchStream) flush() error {
	_ = ws.ctl.SetWriteDeadline(time.Now().Add(ws.wdline))
	if err := ws.w.Flush(); err != nil {
		return err
	}
	return ws.ctl.Flush()
}

// change sends what e means to this watcher.
func (ws *watchStream) change(e *node.ItemEvent) error {
	ws.pos = e.Seq
	b, err := changeMessage(e, ws.coll, ws.q, ws.confl)
	if b == nil || err != nil {
		return err
	}
	return ws.write("change", e.Seq, b, true)
}

// changeMessage returns the JSON of the change message that e means to a
// watcher of collection coll with filter q, or nil if none: the filter is
// evaluated on the item before and after the change, so an item that
// enters it is added and one that leaves it removed.
func changeMessage(e *node.ItemEvent, coll string, q *query.Query, conflicts bool) ([]byte, error) {
	if e.Key.Collection != coll {
		return nil, nil
	}
	before, after, err := e.Match(q)
	if err != nil {
		return nil, err
	}
	ev := watchEvent{Type: "change", Seq: e.Seq, Collection: e.Key.Collection, ID: e.Key.ID,
		Origin: &originJSON{Via: e.Via.String(), Replica: string(e.Dot.Replica), Counter: e.Dot.Counter}}
	switch {
	case after:
		ev.Kind = node.ChangeUpdated.String()
		if !before {
			ev.Kind = node.ChangeAdded.String()
		}
		it, _, err := e.Item()
		if err != nil {
			return nil, err
		}
		j := toItem(it, conflicts)
		ev.Item = &j
	case before:
		ev.Kind = node.ChangeRemoved.String()
	default:
		return nil, nil
	}
	return json.Marshal(ev)
}

// handleWatch serves GET /catalog/watch?type=&q=&since=&initial=&conflicts=
// (and after=, timeout= as every read).
func (s *Server) handleWatch(w http.ResponseWriter, r *http.Request) error {
	params := r.URL.Query()
	coll := params.Get("type")
	if coll == "" {
		return badRequest(`query parameter "type" (the collection) is required`)
	}
	if !s.colls[coll] {
		return fmt.Errorf("%w: %q", node.ErrUnknownCollection, coll)
	}
	q, err := query.Parse(params.Get("q"))
	if err != nil {
		return err
	}
	initial, err := boolParam(params, "initial")
	if err != nil {
		return err
	}
	conflicts, err := boolParam(params, "conflicts")
	if err != nil {
		return err
	}
	since, hasSince := uint64(0), false
	if v := params.Get("since"); v != "" {
		if initial {
			return badRequest(`"since" resumes a watch and "initial" starts one from a snapshot: give one of them`)
		}
		if since, err = strconv.ParseUint(v, 10, 64); err != nil {
			return badRequest(`"since" must be a change sequence number, got %q`, v)
		}
		hasSince = true
	} else if v := r.Header.Get("Last-Event-ID"); v != "" {
		// An EventSource reconnecting: resume, even if the URL asks for
		// the initial snapshot it already had.
		if since, err = strconv.ParseUint(strings.TrimSpace(v), 10, 64); err != nil {
			return badRequest(`Last-Event-ID must be a change sequence number, got %q`, v)
		}
		hasSince, initial = true, false
	}
	if err := s.waitAfter(r); err != nil {
		return err
	}
	if n := s.watchers.Add(1); n > int64(s.cfg.MaxWatchers) {
		s.watchers.Add(-1)
		w.Header().Set("Retry-After", "5")
		return &httpError{http.StatusServiceUnavailable, fmt.Sprintf("too many watchers on this node (limit %d, -max-watchers); retry later", s.cfg.MaxWatchers)}
	}
	defer s.watchers.Add(-1)

	var watcher *node.Watcher
	if !initial {
		if !hasSince {
			_, since = s.c.ChangeBounds()
		}
		if watcher, err = s.c.Watch(since); err != nil {
			if errors.Is(err, node.ErrHistoryTrimmed) {
				return &httpError{http.StatusGone, err.Error() + `; resynchronise with initial=true (the matching items, then the changes after them)`}
			}
			return err
		}
	}

	sse := !acceptsNDJSON(r)
	ct := "text/event-stream"
	if !sse {
		ct = "application/x-ndjson"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no") // a proxy must not hold the stream back
	w.WriteHeader(http.StatusOK)
	ctl := http.NewResponseController(w)
	ws := &watchStream{w: bufio.NewWriterSize(deadlineWriter{w, ctl, s.cfg.WriteTimeout}, 16<<10), ctl: ctl,
		sse: sse, coll: coll, q: q, confl: conflicts, wdline: s.cfg.WriteTimeout, group: groupKey(coll, params.Get("q"), conflicts)}
	err = s.stream(r.Context(), ws, watcher)
	if err != nil && r.Context().Err() == nil {
		s.log.Debug("watch ended", "collection", coll, "at", ws.pos, "err", err)
	}
	return nil
}

// stream writes the initial snapshot if watcher is nil, then the changes,
// until the client goes, the node or the server closes, or the watcher
// falls behind; it ends with an error message when it still can.
func (s *Server) stream(ctx context.Context, ws *watchStream, watcher *node.Watcher) error {
	if watcher == nil {
		var err error
		watcher, err = s.c.WatchInitial(ctx, ws.coll, ws.q, func(it node.Item) error {
			j := toItem(it, ws.confl)
			return ws.send(watchEvent{Type: "item", Item: &j}, false)
		})
		if err != nil {
			return ws.end(err, "initial=true")
		}
		ws.pos = watcher.Position()
		if err := ws.send(watchEvent{Type: "initial_end", Seq: ws.pos}, true); err != nil {
			return err
		}
	} else {
		ws.pos = watcher.Position()
	}
	if err := ws.flush(); err != nil {
		return err
	}
	stop := s.watchStop()
	hb := time.NewTimer(s.cfg.WatchHeartbeat)
	defer hb.Stop()
	var m *member // nil while the stream reads its own watcher
	defer func() {
		if m != nil {
			s.leave(m)
		}
	}()
	for {
		var ready <-chan struct{}
		if m != nil {
			ready = m.ready()
		} else {
			ready = watcher.Ready()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-stop:
			return ws.end(errClosing, "")
		case <-hb.C:
			// Reset only here, not per message: a stream that sent
			// something lately waits for the rest of the interval.
			if quiet := time.Since(ws.sent); quiet < s.cfg.WatchHeartbeat {
				hb.Reset(s.cfg.WatchHeartbeat - quiet)
				continue
			}
			hb.Reset(s.cfg.WatchHeartbeat)
			if m != nil {
				// Where the group stands, past changes it did not send.
				if err := s.readGroup(ws, m); err != nil {
					return err
				}
			}
			if err := ws.send(watchEvent{Type: "heartbeat", Seq: ws.pos}, true); err != nil {
				return err
			}
		case <-ready:
			if m != nil {
				if err := s.readGroup(ws, m); err != nil {
					return err
				}
				break
			}
			evs, err := watcher.Next(ctx, watchBatch)
			switch {
			case err == nil:
			case ctx.Err() != nil:
				return ctx.Err()
			case errors.Is(err, node.ErrHistoryTrimmed):
				return ws.end(err, "initial=true")
			default:
				return ws.end(err, "")
			}
			for _, e := range evs {
				if err := ws.change(e); err != nil {
					return ws.end(err, "")
				}
			}
			if caughtUp(watcher) {
				m = s.join(ws.group, ws.coll, ws.q, ws.confl, ws.pos)
			}
		}
		if ws.w.Buffered() > 0 {
			if err := ws.flush(); err != nil {
				return err
			}
		}
	}
}

// readGroup writes the stream's next messages from its group.
func (s *Server) readGroup(ws *watchStream, m *member) error {
	msgs, pos, err := m.read(watchBatch)
	if err != nil {
		resume := ""
		if errors.Is(err, node.ErrHistoryTrimmed) {
			resume = "initial=true"
		}
		return ws.end(err, resume)
	}
	for _, msg := range msgs {
		if err := ws.write("change", msg.seq, msg.b, true); err != nil {
			return err
		}
	}
	ws.pos = pos
	return nil
}

// caughtUp reports whether w has read every durable change.
func caughtUp(w *node.Watcher) bool {
	select {
	case <-w.Ready():
		return false
	default:
		return true
	}
}

// end sends the stream's last message: cause, and how to resume (resume,
// or from the watcher's position).
func (ws *watchStream) end(cause error, resume string) error {
	if resume == "" {
		resume = "since=" + strconv.FormatUint(ws.pos, 10)
	}
	msg := cause.Error()
	if errors.Is(cause, node.ErrWatchTooSlow) {
		msg = "disconnected: this watcher did not read its changes fast enough (" + msg + ")"
	}
	if err := ws.send(watchEvent{Type: "error", Seq: ws.pos, Error: msg, Resume: resume}, false); err != nil {
		return err
	}
	if err := ws.flush(); err != nil {
		return err
	}
	return cause
}

// acceptsNDJSON reports whether the request asks for NDJSON rather than
// Server-Sent Events.
func acceptsNDJSON(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(mt), "application/x-ndjson") {
				return true
			}
		}
	}
	return false
}

// watchStop returns a channel closed when the server starts closing
// (SetClosing, or the http.Server's Shutdown), which ends every watch.
func (s *Server) watchStop() <-chan struct{} {
	s.stopMu.Lock()
	defer s.stopMu.Unlock()
	return s.stopWatches
}

// endWatches ends every watch stream, with an error message naming the
// position to resume from.
func (s *Server) endWatches(stop bool) {
	s.stopMu.Lock()
	defer s.stopMu.Unlock()
	select {
	case <-s.stopWatches:
		if !stop {
			s.stopWatches = make(chan struct{})
		}
	default:
		if stop {
			close(s.stopWatches)
		}
	}
}
