package httpapi

import (
	"context"
	"fmt"
	"sync"

	"github.com/crdt-catalog/crdt-catalog/node"
	"github.com/crdt-catalog/crdt-catalog/node/query"
)

// Watch groups: the streams that watch one collection with one filter
// (and one conflicts setting) share one reader of the change feed, which
// evaluates the filter once per change and encodes each matching change's
// message once. A stream wakes only for the changes it sends, so a
// thousand streams whose filter matches nothing cost the node one
// evaluation per change, not a thousand.
//
// A stream starts on its own watcher (it may start from a snapshot or
// from far back) and joins its group once it has caught up with it: when
// the group's ring holds every message after the stream's position. From
// then on it reads the group's ring; one that falls behind the ring is too
// slow and ends as a stream on its own watcher would.

// groupRing bounds the messages a group keeps for its streams
// (Server.groupRing, lower in tests).
const groupRing = 4096

// watchGroup is the shared reader of one (collection, filter, conflicts).
type watchGroup struct {
	key    string
	coll   string
	q      *query.Query
	confl  bool
	cancel context.CancelFunc

	mu      sync.Mutex
	from    uint64     // msgs holds every message of the changes after from, up to pos
	pos     uint64     // the last change evaluated
	msgs    []groupMsg // the matching changes' messages, oldest first
	base    uint64     // the number of msgs[0] among all messages of the group
	wake    chan struct{}
	err     error // why the group ended; its streams end with it
	members int
}

// groupMsg is one change message: its change and its JSON.
type groupMsg struct {
	seq uint64
	b   []byte
}

// member is one stream's place in its group.
type member struct {
	g      *watchGroup
	cursor uint64 // the number of the next message to read
}

// groupKey names the group of a stream.
func groupKey(coll, q string, conflicts bool) string {
	return fmt.Sprintf("%s\x00%s\x00%t", coll, q, conflicts)
}

// join makes the stream at position pos a member of its group, creating
// the group if there is none and pos is the node's last change; nil when
// the stream cannot join yet (it is behind or ahead of the group).
func (s *Server) join(key, coll string, q *query.Query, confl bool, pos uint64) *member {
	s.groupsMu.Lock()
	defer s.groupsMu.Unlock()
	g := s.groups[key]
	if g == nil {
		if _, last := s.c.ChangeBounds(); last != pos {
			return nil
		}
		w, err := s.c.Watch(pos)
		if err != nil {
			return nil
		}
		ctx, cancel := context.WithCancel(context.Background())
		g = &watchGroup{key: key, coll: coll, q: q, confl: confl, cancel: cancel, from: pos, pos: pos, wake: make(chan struct{})}
		s.groups[key] = g
		go s.runGroup(ctx, g, w)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil || pos < g.from || pos > g.pos {
		return nil
	}
	m := &member{g: g, cursor: g.base + uint64(len(g.msgs))}
	for m.cursor > g.base && g.msgs[m.cursor-1-g.base].seq > pos {
		m.cursor--
	}
	g.members++
	return m
}

// leave takes m out of its group, and ends the group with its last member.
func (s *Server) leave(m *member) {
	s.groupsMu.Lock()
	defer s.groupsMu.Unlock()
	g := m.g
	g.mu.Lock()
	g.members--
	last := g.members == 0
	g.mu.Unlock()
	if last {
		g.cancel()
		if s.groups[g.key] == g {
			delete(s.groups, g.key)
		}
	}
}

// runGroup reads the change feed for g until its last member leaves.
func (s *Server) runGroup(ctx context.Context, g *watchGroup, w *node.Watcher) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.Ready():
		}
		evs, err := w.Next(ctx, watchBatch)
		if err != nil {
			if ctx.Err() == nil {
				s.failGroup(g, err)
			}
			return
		}
		var add []groupMsg
		for _, e := range evs {
			b, err := changeMessage(e, g.coll, g.q, g.confl)
			if err != nil {
				s.failGroup(g, err)
				return
			}
			if b != nil {
				add = append(add, groupMsg{e.Seq, b})
			}
		}
		g.mu.Lock()
		g.msgs = append(g.msgs, add...)
		if drop := len(g.msgs) - s.groupRing; drop > 0 {
			g.from = g.msgs[drop-1].seq
			clear(g.msgs[:drop])
			g.msgs = g.msgs[drop:]
			g.base += uint64(drop)
		}
		g.pos = evs[len(evs)-1].Seq
		if len(add) > 0 {
			close(g.wake)
			g.wake = make(chan struct{})
		}
		g.mu.Unlock()
	}
}

// failGroup ends g: its members end with err; new streams start a new
// group.
func (s *Server) failGroup(g *watchGroup, err error) {
	s.groupsMu.Lock()
	if s.groups[g.key] == g {
		delete(s.groups, g.key)
	}
	s.groupsMu.Unlock()
	g.mu.Lock()
	g.err = err
	close(g.wake)
	g.mu.Unlock()
}

// ready returns a channel closed once m has a message to read, or its
// group ended.
func (m *member) ready() <-chan struct{} {
	g := m.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil || m.cursor < g.base+uint64(len(g.msgs)) {
		return closedChan
	}
	return g.wake
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// read returns m's next messages (at most limit) and the position the
// stream stands at once it has sent them.
func (m *member) read(limit int) ([]groupMsg, uint64, error) {
	g := m.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return nil, 0, g.err
	}
	if m.cursor < g.base {
		return nil, 0, fmt.Errorf("%w: more than %d messages behind", node.ErrWatchTooSlow, len(g.msgs))
	}
	i := int(m.cursor - g.base)
	out := append([]groupMsg(nil), g.msgs[i:min(len(g.msgs), i+limit)]...)
	m.cursor += uint64(len(out))
	if m.cursor == g.base+uint64(len(g.msgs)) {
		return out, g.pos, nil
	}
	return out, out[len(out)-1].seq, nil
}
