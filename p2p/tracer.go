package p2p

import (
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"
)

// gossipTracer records what GossipSub's API does not show: the peers in the
// mesh (those this peer forwards every message to), duplicate messages
// received, RPCs dropped on full queues, and the bytes of messages and of
// control traffic (IHAVE, IWANT, IDONTWANT, GRAFT, PRUNE) queued for
// sending. GossipSub calls it synchronously from its event loop, so every
// method only updates counters.
type gossipTracer struct {
	mu   sync.Mutex
	mesh map[peer.ID]bool // one topic is joined, so one mesh

	duplicates   atomic.Uint64
	droppedRPCs  atomic.Uint64
	messageBytes atomic.Uint64
	controlBytes atomic.Uint64
}

var _ pubsub.RawTracer = (*gossipTracer)(nil)

func (t *gossipTracer) DuplicateMessage(*pubsub.Message) { t.duplicates.Add(1) }
func (t *gossipTracer) DropRPC(*pubsub.RPC, peer.ID)     { t.droppedRPCs.Add(1) }

func (t *gossipTracer) SendRPC(rpc *pubsub.RPC, _ peer.ID) {
	for _, m := range rpc.Publish {
		t.messageBytes.Add(uint64(proto.Size(m)))
	}
	if rpc.Control != nil {
		t.controlBytes.Add(uint64(proto.Size(rpc.Control)))
	}
}

func (t *gossipTracer) Graft(p peer.ID, _ string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mesh == nil {
		t.mesh = map[peer.ID]bool{}
	}
	t.mesh[p] = true
}

func (t *gossipTracer) Prune(p peer.ID, _ string) { t.leave(p) }

// OnClosedOutboundStream is how GossipSub drops a disconnected peer from
// its mesh, without a Prune.
func (t *gossipTracer) OnClosedOutboundStream(p peer.ID) { t.leave(p) }

func (t *gossipTracer) leave(p peer.ID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.mesh, p)
}

// meshPeers returns the number of peers in the mesh.
func (t *gossipTracer) meshPeers() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.mesh)
}

// inMesh reports whether p is in the mesh.
func (t *gossipTracer) inMesh(p peer.ID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mesh[p]
}

func (t *gossipTracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (t *gossipTracer) Join(string)                                          {}
func (t *gossipTracer) Leave(string)                                         {}
func (t *gossipTracer) ValidateMessage(*pubsub.Message)                      {}
func (t *gossipTracer) DeliverMessage(*pubsub.Message)                       {}
func (t *gossipTracer) RejectMessage(*pubsub.Message, string)                {}
func (t *gossipTracer) ThrottlePeer(peer.ID)                                 {}
func (t *gossipTracer) RecvRPC(*pubsub.RPC)                                  {}
func (t *gossipTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
func (t *gossipTracer) UndeliverableMessage(*pubsub.Message)                 {}
