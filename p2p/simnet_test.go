package p2p

import (
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	flow "github.com/libp2p/go-flow-metrics"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	"github.com/marcopolo/simnet"
	"github.com/quic-go/quic-go"
	"go.uber.org/fx"
)

// A simulated network for tests whose waits are long (AutoRelay's
// backoffs, hole punch retries): the peers' QUIC sockets are go-libp2p's
// simulated ones (github.com/marcopolo/simnet), so no packet leaves the
// process, and the test runs in a synctest bubble (simTest), where time
// is simulated too.

// blockingRouter is a SimpleFirewallRouter that also drops the packets for
// which drop says so.
type blockingRouter struct {
	simnet.SimpleFirewallRouter
	drop atomic.Pointer[func(from, to net.Addr) bool]
}

func (r *blockingRouter) RecvPacket(p *simnet.Packet) {
	if f := r.drop.Load(); f != nil && (*f)(p.From, p.To) {
		return
	}
	r.SimpleFirewallRouter.RecvPacket(p)
}

type sourceIP struct{ ip atomic.Pointer[net.IP] }

func (s *sourceIP) PreferredSourceIPForDestination(*net.UDPAddr) (net.IP, error) {
	return *s.ip.Load(), nil
}

// simQUIC makes a host's QUIC sockets simulated ones on router.
func simQUIC(router *blockingRouter, public bool) libp2p.Option {
	src := &sourceIP{}
	// libp2p closes a connection manager it made itself, not one from a
	// constructor passed in: stop it with the host, as go-libp2p's
	// x/simlibp2p does, or its goroutines outlive the test's bubble.
	newCM := func(l fx.Lifecycle, reset quic.StatelessResetKey, token quic.TokenGeneratorKey, opts ...quicreuse.Option) (*quicreuse.ConnManager, error) {
		cm, err := quicreuse.NewConnManager(reset, token, opts...)
		if err == nil {
			l.Append(fx.StopHook(cm.Close))
		}
		return cm, err
	}
	return libp2p.QUICReuse(newCM,
		quicreuse.OverrideSourceIPSelector(func() (quicreuse.SourceIPSelector, error) { return src, nil }),
		quicreuse.OverrideListenUDP(func(_ string, addr *net.UDPAddr) (net.PacketConn, error) {
			src.ip.Store(&addr.IP)
			if public {
				router.SetAddrPubliclyReachable(addr)
			}
			c := simnet.NewSimConn(addr)
			c.SetUpPacketReceiver(router)
			router.AddNode(addr, c)
			return c, nil
		}))
}

// simTest runs f in a synctest bubble: time in it is simulated, and moves
// on whenever every goroutine of the bubble waits, so the peers' timers
// (AutoRelay's backoffs, hole punch retries, anti-entropy rounds) and the
// test's own waits cost no real time. Nothing in the bubble may use a real
// socket: the peers' QUIC runs on simnet and the DHT on top of it.
func simTest(t *testing.T, f func(t *testing.T)) {
	// go-flow-metrics (the peers' bandwidth counters) starts one sweeper
	// goroutine per process, at first use; started in the bubble, it would
	// outlive it.
	flow.NewMeter().Mark(1)
	synctest.Test(t, func(t *testing.T) {
		// Runs last, once every peer and node has closed: goleveldb's
		// Close leaves a goroutine waiting up to a second for its memory
		// pool, and the bubble's clock stops once the test returns.
		t.Cleanup(func() {
			time.Sleep(time.Second)
			synctest.Wait()
		})
		f(t)
	})
}

type simNet struct {
	t          *testing.T
	router     *blockingRouter
	punchRetry time.Duration // the peers' Config.HolePunchRetry
}
