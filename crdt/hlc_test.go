package crdt

import (
	"errors"
	"math"
	"testing"

	"pgregory.net/rapid"
)

// TestClock_NowStrictlyIncreasing: whatever the physical clock does — run
// forward, stand still, jump back — every reading is greater than the last,
// and never behind a physical time that went forward.
func TestClock_NowStrictlyIncreasing(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var c Clock
		phys := int64(1_700_000_000_000)
		var last Timestamp
		for i := range rapid.IntRange(1, 200).Draw(t, "steps") {
			switch rapid.IntRange(0, 3).Draw(t, "move") {
			case 0: // stands still
			case 1:
				phys += rapid.Int64Range(1, 1000).Draw(t, "forward")
			case 2:
				phys -= rapid.Int64Range(1, 100_000).Draw(t, "backward")
			case 3:
				if rapid.Bool().Draw(t, "observe") {
					c.Observe(last+Timestamp(rapid.Uint64Range(0, 1<<20).Draw(t, "ahead")), phys)
				}
			}
			ts := c.Now(phys)
			if ts <= last {
				t.Fatalf("step %d: Now(%d) = %s, not after %s", i, phys, ts, last)
			}
			if ts.Wall() < phys {
				t.Fatalf("step %d: Now(%d) = %s is behind the physical clock", i, phys, ts)
			}
			if ts != c.Last() {
				t.Fatalf("Last = %s, want the reading just issued %s", c.Last(), ts)
			}
			last = ts
		}
	})
}

func TestClock_NowFollowsPhysicalTime(t *testing.T) {
	var c Clock
	for _, tc := range []struct {
		phys int64
		want Timestamp
	}{
		{1000, MakeTimestamp(1000, 0)},
		{1000, MakeTimestamp(1000, 1)}, // stands still
		{999, MakeTimestamp(1000, 2)},  // goes back
		{5, MakeTimestamp(1000, 3)},
		{1001, MakeTimestamp(1001, 0)}, // catches up: the logical part resets
	} {
		if got := c.Now(tc.phys); got != tc.want {
			t.Fatalf("Now(%d) = %s, want %s", tc.phys, got, tc.want)
		}
	}
}

func TestClock_LogicalOverflowCarriesIntoWall(t *testing.T) {
	var c Clock
	c.Restore(MakeTimestamp(1000, math.MaxUint16-1))
	if got, want := c.Now(1000), MakeTimestamp(1000, math.MaxUint16); got != want {
		t.Fatalf("Now = %s, want %s", got, want)
	}
	if got, want := c.Now(1000), MakeTimestamp(1001, 0); got != want {
		t.Fatalf("after the logical counter is full: Now = %s, want %s", got, want)
	}
	if got, want := c.Now(1000), MakeTimestamp(1001, 1); got != want {
		t.Fatalf("Now = %s, want %s", got, want)
	}
}

func TestClock_ObserveMakesNextNowGreater(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var c Clock
		phys := rapid.Int64Range(1, MaxWallMillis-1).Draw(t, "phys")
		c.Restore(Timestamp(rapid.Uint64Range(0, uint64(MakeTimestamp(MaxWallMillis-1, 0))).Draw(t, "start")))
		// Within DefaultMaxOffset of the physical clock, the clock follows.
		seen := Timestamp(rapid.Uint64Range(1, uint64(MakeTimestamp(min(phys+DefaultMaxOffset, MaxWallMillis-1), 0))).Draw(t, "observed"))
		before := c.Last()
		c.Observe(seen, phys)
		if c.Last() < seen || c.Last() < before {
			t.Fatalf("after Observe(%s): Last = %s, want at least %s and %s", seen, c.Last(), seen, before)
		}
		if got := c.Now(phys); got <= seen || got <= before {
			t.Fatalf("Now(%d) = %s after observing %s (clock was %s)", phys, got, seen, before)
		}
	})
}

// TestClock_ObserveFollowsAtMostMaxOffsetAhead: a timestamp from a broken or
// forged clock far in the future cannot drag the local clock to the end of
// its range, where every local write would fail.
func TestClock_ObserveFollowsAtMostMaxOffsetAhead(t *testing.T) {
	const phys = int64(1_700_000_000_000)
	var c Clock
	if ahead := c.Observe(MakeTimestamp(MaxWallMillis, math.MaxUint16), phys); ahead == 0 {
		t.Fatal("a timestamp at the end of the range was not reported")
	}
	if got, limit := c.Last(), MakeTimestamp(phys+DefaultMaxOffset, 0); got != limit {
		t.Fatalf("Last = %s, want the follow limit %s", got, limit)
	}
	if ts := c.Now(phys); ts.Validate() != nil || ts <= MakeTimestamp(phys+DefaultMaxOffset, 0) {
		t.Fatalf("Now after a far-future observation = %s", ts)
	}
}

func TestClock_ObserveReportsTimestampBeyondMaxOffset(t *testing.T) {
	const phys = int64(1_700_000_000_000)
	for _, tc := range []struct {
		name      string
		maxOffset int64
		ahead     int64 // of the observed timestamp over phys, ms
		want      int64
	}{
		{"default-within", 0, DefaultMaxOffset, 0},
		{"default-beyond", 0, DefaultMaxOffset + 1, DefaultMaxOffset + 1},
		{"default-far-beyond", 0, 3_600_000, 3_600_000},
		{"behind", 0, -5_000, 0},
		{"custom-within", 10, 10, 0},
		{"custom-beyond", 10, 11, 11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Clock{MaxOffset: tc.maxOffset}
			c.Now(phys)
			seen := MakeTimestamp(phys+tc.ahead, 7)
			if got := c.Observe(seen, phys); got != tc.want {
				t.Fatalf("Observe(%s) = %d, want %d", seen, got, tc.want)
			}
			// Within the offset the clock moves past it; beyond, it moves
			// only to the offset, so local writes stay within it of real
			// time.
			next := c.Now(phys)
			if tc.want == 0 && next <= seen {
				t.Fatalf("Now = %s, not after the observed %s", next, seen)
			}
			limit := tc.maxOffset
			if limit == 0 {
				limit = DefaultMaxOffset
			}
			if tc.want != 0 && (next.Wall() != phys+limit || next <= MakeTimestamp(phys+limit, 0)) {
				t.Fatalf("Now = %s after a timestamp beyond the offset, want just past %s", next, MakeTimestamp(phys+limit, 0))
			}
		})
	}
}

func TestClock_RestoreNeverGoesBack(t *testing.T) {
	var c Clock
	c.Restore(MakeTimestamp(2000, 5))
	c.Restore(MakeTimestamp(1000, 0))
	if got, want := c.Last(), MakeTimestamp(2000, 5); got != want {
		t.Fatalf("Last = %s, want %s", got, want)
	}
	if got, want := c.Now(1500), MakeTimestamp(2000, 6); got != want {
		t.Fatalf("Now after restore = %s, want %s", got, want)
	}
}

func TestTimestamp_Parts(t *testing.T) {
	ts := MakeTimestamp(t0, 42)
	if ts.Wall() != t0 || ts.Logical() != 42 {
		t.Fatalf("MakeTimestamp(%d, 42) has parts (%d, %d)", t0, ts.Wall(), ts.Logical())
	}
	if got, want := ts.String(), "2023-12-07T10:30:45.000Z/42"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
	if !MakeTimestamp(t0, 1).Time().Equal(MakeTimestamp(t0, 0).Time()) {
		t.Fatal("the logical part changed Time")
	}
	if MakeTimestamp(t0, math.MaxUint16) >= MakeTimestamp(t0+1, 0) {
		t.Fatal("timestamps do not order by wall time first")
	}
}

func TestTimestamp_TextRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ts := MakeTimestamp(rapid.Int64Range(0, MaxWallMillis).Draw(t, "wall"), rapid.Uint16().Draw(t, "logical"))
		b, err := ts.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var got Timestamp
		if err := got.UnmarshalText(b); err != nil {
			t.Fatalf("UnmarshalText(%q): %v", b, err)
		}
		if got != ts {
			t.Fatalf("%q decoded as %s (%d), want %d", b, got, uint64(got), uint64(ts))
		}
	})
}

func TestTimestamp_UnmarshalTextErrors(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"no-logical", "2023-12-07T10:30:45.000Z"},
		{"empty-logical", "2023-12-07T10:30:45.000Z/"},
		{"negative-logical", "2023-12-07T10:30:45.000Z/-1"},
		{"logical-overflow", "2023-12-07T10:30:45.000Z/65536"},
		{"logical-not-a-number", "2023-12-07T10:30:45.000Z/x"},
		{"two-slashes", "2023-12-07T10:30:45.000Z/1/2"},
		{"not-a-time", "yesterday/0"},
		{"date-only", "2023-12-07/0"},
		{"no-zone", "2023-12-07T10:30:45.000/0"},
		{"before-epoch", "1969-12-31T23:59:59.999Z/0"},
		{"unix-millis", "1701945045000/0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := MakeTimestamp(t0, 9)
			err := ts.UnmarshalText([]byte(tc.in))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("UnmarshalText(%q) = %v, want ErrInvalid", tc.in, err)
			}
			if ts != MakeTimestamp(t0, 9) {
				t.Fatalf("failed UnmarshalText changed the timestamp to %s", ts)
			}
		})
	}
}

func TestTimestamp_Validate(t *testing.T) {
	if err := Timestamp(0).Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("zero timestamp: %v, want ErrInvalid", err)
	}
	if err := MakeTimestamp(MaxWallMillis+1, 0).Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("timestamp past year 9999: %v, want ErrInvalid", err)
	}
	for _, ts := range []Timestamp{1, MakeTimestamp(t0, 0), MakeTimestamp(MaxWallMillis, math.MaxUint16)} {
		if err := ts.Validate(); err != nil {
			t.Fatalf("%s: %v", ts, err)
		}
	}
}
