package p2p

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// ErrStalled marks a sync stream dropped because no byte moved on it for
// Config.SyncIdleTimeout: the other side sent nothing, or took nothing of
// what this side sent.
var ErrStalled = errors.New("sync stream stalled")

// errPastDeadline marks a sync stream that kept moving but ran past the
// deadline of its phase (Config.SyncTimeout or Config.FullStateTimeout).
var errPastDeadline = errors.New("sync stream past its deadline")

// idleStream moves a stream's deadlines along as bytes move: each Read or
// Write may wait at most idle for the stream, and none past end. It turns
// the stream's timeouts into ErrStalled (the idle wait ran out) or
// errPastDeadline (end passed). Not safe for concurrent use: one goroutine
// reads and writes it, and moves end with setEnd.
type idleStream struct {
	s    network.Stream
	idle time.Duration
	end  time.Time
}

func newIdleStream(s network.Stream, idle, phase time.Duration) *idleStream {
	return &idleStream{s: s, idle: idle, end: time.Now().Add(phase)}
}

// setEnd starts a phase that must end within d from now.
func (d *idleStream) setEnd(phase time.Duration) { d.end = time.Now().Add(phase) }

// deadline returns the deadline for the next operation and whether it is
// the idle one.
func (d *idleStream) deadline() (time.Time, bool) {
	idle := time.Now().Add(d.idle)
	if d.end.Before(idle) {
		return d.end, false
	}
	return idle, true
}

func (d *idleStream) Read(b []byte) (int, error) {
	dl, idle := d.deadline()
	_ = d.s.SetReadDeadline(dl)
	n, err := d.s.Read(b)
	return n, d.wrap(err, idle, "receiving")
}

func (d *idleStream) Write(b []byte) (int, error) {
	dl, idle := d.deadline()
	_ = d.s.SetWriteDeadline(dl)
	n, err := d.s.Write(b)
	return n, d.wrap(err, idle, "sending")
}

func (d *idleStream) wrap(err error, idle bool, what string) error {
	if err == nil || !isTimeout(err) {
		return err
	}
	if idle {
		return fmt.Errorf("%w: nothing moved for %v while %s", ErrStalled, d.idle, what)
	}
	return fmt.Errorf("%w while %s: %v", errPastDeadline, what, err)
}

// isTimeout reports whether err is a stream's deadline passing: yamux and
// the other muxers report a net.Error whose Timeout is true.
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}
