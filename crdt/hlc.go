package crdt

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Timestamp is a hybrid logical clock reading: physical milliseconds since
// the Unix epoch in the upper 48 bits and a logical counter in the lower 16.
// Timestamps compare as plain integers.
type Timestamp uint64

const logicalBits = 16

// MaxWallMillis is the latest wall time a Timestamp may carry: the end of
// year 9999, so every timestamp has an RFC 3339 form.
const MaxWallMillis = 253402300799999

// MakeTimestamp builds a timestamp from wall milliseconds and a logical count.
func MakeTimestamp(wallMillis int64, logical uint16) Timestamp {
	return Timestamp(uint64(wallMillis)<<logicalBits | uint64(logical))
}

// Wall returns the physical part in milliseconds since the Unix epoch.
func (t Timestamp) Wall() int64 { return int64(t >> logicalBits) }

// Logical returns the logical counter.
func (t Timestamp) Logical() uint16 { return uint16(t) }

// Time returns the physical part as a time.Time in UTC.
func (t Timestamp) Time() time.Time { return time.UnixMilli(t.Wall()).UTC() }

// Validate reports whether t is a usable write timestamp: not zero and not
// past MaxWallMillis.
func (t Timestamp) Validate() error {
	if t == 0 {
		return fmt.Errorf("%w: timestamp is zero", ErrInvalid)
	}
	if t.Wall() > MaxWallMillis {
		return fmt.Errorf("%w: timestamp wall time %d ms is beyond year 9999", ErrInvalid, t.Wall())
	}
	return nil
}

const tsLayout = "2006-01-02T15:04:05.000Z"

// String formats t as RFC 3339 UTC with milliseconds, then "/" and the
// logical counter, e.g. "2023-12-07T10:30:45.000Z/0".
func (t Timestamp) String() string {
	return t.Time().Format(tsLayout) + "/" + strconv.Itoa(int(t.Logical()))
}

// MarshalText implements encoding.TextMarshaler with String's format.
func (t Timestamp) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText parses String's format.
func (t *Timestamp) UnmarshalText(b []byte) error {
	s := string(b)
	wall, logical, ok := strings.Cut(s, "/")
	if !ok {
		return fmt.Errorf("%w: timestamp %q: want RFC3339/logical", ErrInvalid, s)
	}
	tm, err := time.Parse(time.RFC3339Nano, wall)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q: %v", ErrInvalid, s, err)
	}
	l, err := strconv.ParseUint(logical, 10, 16)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q: logical part: %v", ErrInvalid, s, err)
	}
	ms := tm.UnixMilli()
	if ms < 0 || ms > MaxWallMillis {
		return fmt.Errorf("%w: timestamp %q out of range", ErrInvalid, s)
	}
	*t = MakeTimestamp(ms, uint16(l))
	return nil
}

// Clock is a hybrid logical clock (Kulkarni et al., 2014). The caller passes
// the physical time to every call, so the clock itself reads nothing.
// Every timestamp it returns is greater than every timestamp it has issued
// or observed before. Not safe for concurrent use.
type Clock struct {
	last Timestamp
	// MaxOffset is how far, in milliseconds, an observed timestamp may run
	// ahead of the physical clock before Observe reports it, and how far
	// past the physical clock Observe moves the clock at most. Zero means
	// DefaultMaxOffset.
	MaxOffset int64
}

// DefaultMaxOffset is the default Clock.MaxOffset: one minute.
const DefaultMaxOffset = 60_000

// Last returns the greatest timestamp issued or observed.
func (c *Clock) Last() Timestamp { return c.last }

// Restore sets the clock to at least t, as after a restart.
func (c *Clock) Restore(t Timestamp) { c.last = max(c.last, t) }

// Now returns the timestamp of a local event at physical time physMillis
// (the HLC send rule).
func (c *Clock) Now(physMillis int64) Timestamp {
	c.last = c.next(c.last, physMillis)
	return c.last
}

// Observe advances the clock past a timestamp received from another
// replica (the HLC receive rule). A timestamp further ahead of physMillis
// than MaxOffset is still accepted (convergence comes first) but Observe
// returns how far ahead it is, in milliseconds; it returns 0 otherwise.
//
// The clock follows t at most MaxOffset past physMillis. A timestamp
// further ahead (a peer with a broken clock, or a forged one) is still
// joined, but local writes do not inherit it, so no peer can make this
// clock stamp writes more than MaxOffset ahead of real time. Causality does
// not suffer: a local write that overwrites such an entry has observed its
// dot and supersedes it whatever the timestamps say; only a write
// concurrent with it loses to it, until real time catches up.
func (c *Clock) Observe(t Timestamp, physMillis int64) (aheadMillis int64) {
	limit := c.MaxOffset
	if limit == 0 {
		limit = DefaultMaxOffset
	}
	follow := t
	if top := min(physMillis+limit, MaxWallMillis); t.Wall() > top {
		follow = MakeTimestamp(top, 0)
	}
	c.last = max(c.last, follow)
	if d := t.Wall() - physMillis; d > limit {
		return d
	}
	return 0
}

// next returns the smallest timestamp after last that is not behind the
// physical clock.
func (c *Clock) next(last Timestamp, physMillis int64) Timestamp {
	if physMillis > last.Wall() && physMillis <= MaxWallMillis {
		return MakeTimestamp(physMillis, 0)
	}
	if last.Logical() == 1<<logicalBits-1 {
		return MakeTimestamp(last.Wall()+1, 0)
	}
	return last + 1
}
