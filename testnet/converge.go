package testnet

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// Live returns the indexes of the peers that run and are not paused, the
// ones AwaitConverged compares.
func (c *Cluster) Live() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for _, p := range c.peers {
		if p.state == Running {
			out = append(out, p.index)
		}
	}
	return out
}

// Statuses reads GET /status of the given peers concurrently; the slice is
// in the order of peers, and the first error (if any) is returned.
func (c *Cluster) Statuses(ctx context.Context, peers []int) ([]*Status, error) {
	out := make([]*Status, len(peers))
	errs := make([]error, len(peers))
	var wg sync.WaitGroup
	for k, i := range peers {
		wg.Go(func() { out[k], errs[k] = c.Client(i).Status(ctx) })
	}
	wg.Wait()
	for k, err := range errs {
		if err != nil {
			return out, fmt.Errorf("peer %d: %w", peers[k], err)
		}
	}
	return out, nil
}

// sameVersion reports whether every status has the same applied version
// vector.
func sameVersion(sts []*Status) bool {
	for _, s := range sts[1:] {
		if !maps.Equal(s.Version, sts[0].Version) {
			return false
		}
	}
	return true
}

// countDiff describes how the item counts differ, or returns "".
func countDiff(live []int, sts []*Status) string {
	for k, s := range sts[1:] {
		if !maps.Equal(s.Items, sts[0].Items) {
			return fmt.Sprintf("item counts differ: peer %d %v, peer %d %v", live[0], sts[0].Items, live[k+1], s.Items)
		}
	}
	return ""
}

// AwaitConverged waits until every live peer (running and not paused) has
// the same applied version vector and item counts in GET /status and then
// the same full listing (every collection, metadata and conflicts), and
// returns that state. It polls every Options.PollInterval until ctx ends;
// the error then describes how the peers differ. If the peers still differ
// 20 s after their version vectors became equal (and stayed so), it
// reports a divergence at once: equal applied contexts must mean equal
// states. Each time the version vectors agree, a convergence barrier is
// recorded in the history.
func (c *Cluster) AwaitConverged(ctx context.Context) (State, error) {
	st, _, err := c.awaitConverged(ctx, true)
	return st, err
}

// AwaitVersions is AwaitConverged without the listing comparison: it
// returns when the live peers' applied version vectors and item counts
// agree, with the time the agreement was observed. Cheap enough to poll
// at a fine pace, for measuring convergence time.
func (c *Cluster) AwaitVersions(ctx context.Context) (time.Time, error) {
	_, at, err := c.awaitConverged(ctx, false)
	return at, err
}

// divergeAfter is how long AwaitConverged lets listings differ under
// equal, unchanging version vectors before it reports a divergence: the
// vectors show only the contiguous part of each applied context, so a
// difference is allowed to last for a few anti-entropy rounds (5 s each
// by default) before it counts as permanent.
const divergeAfter = 20 * time.Second

func (c *Cluster) awaitConverged(ctx context.Context, listings bool) (State, time.Time, error) {
	tick := time.NewTicker(c.opts.PollInterval)
	defer tick.Stop()
	var (
		lastErr  error
		lastSts  []*Status
		lastDiff string
		live     []int
		// The version vector under which the listings first differed, and
		// when.
		divVersion map[string]uint64
		divSince   time.Time
	)
	for {
		live = c.Live()
		if len(live) == 0 {
			return nil, time.Time{}, fmt.Errorf("testnet: no live peer to compare")
		}
		start := time.Now()
		sts, err := c.Statuses(ctx, live)
		end := time.Now()
		lastErr = err
		if err == nil {
			lastSts = sts
		}
		if err == nil && sameVersion(sts) {
			members := make([]Replica, len(live))
			for k, i := range live {
				members[k] = c.replicaOf(i)
			}
			c.hist.AddBarrier(Barrier{Start: start, End: end, Members: members})
			diff := countDiff(live, sts)
			var st State
			if diff == "" && !listings {
				return nil, end, nil
			}
			if diff == "" {
				st, diff, err = c.compareListings(ctx, live, sts[0].Collections)
				if err == nil && diff == "" {
					return st, end, nil
				}
				lastErr = err
			}
			lastDiff = diff
			switch {
			case diff == "":
			case divVersion == nil || !maps.Equal(divVersion, sts[0].Version):
				divVersion, divSince = sts[0].Version, time.Now()
			case time.Since(divSince) > divergeAfter:
				return nil, time.Time{}, c.divergence(fmt.Errorf("diverged: the peers have differed for %v under the same applied version vectors", divergeAfter), live, sts, nil, diff)
			}
		}
		select {
		case <-ctx.Done():
			return nil, time.Time{}, c.divergence(ctx.Err(), live, lastSts, lastErr, lastDiff)
		case <-tick.C:
		}
	}
}

// compareListings reads every peer's listing and describes the first
// differences, or returns the common state.
func (c *Cluster) compareListings(ctx context.Context, peers []int, colls []string) (State, string, error) {
	sts := make([]State, len(peers))
	errs := make([]error, len(peers))
	var wg sync.WaitGroup
	for k, i := range peers {
		wg.Go(func() { sts[k], errs[k] = c.Client(i).Listing(ctx, colls) })
	}
	wg.Wait()
	for k, err := range errs {
		if err != nil {
			return nil, "", fmt.Errorf("peer %d: %w", peers[k], err)
		}
	}
	var b strings.Builder
	for k := 1; k < len(sts); k++ {
		if d := diffStates(sts[0], sts[k], 5); d != "" {
			fmt.Fprintf(&b, "peer %d vs peer %d: %s\n", peers[0], peers[k], d)
		}
	}
	return sts[0], b.String(), nil
}

// diffStates describes up to limit keys on which a and b differ.
func diffStates(a, b State, limit int) string {
	keys := map[Key]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	var diffs []string
	for _, k := range slices.SortedFunc(maps.Keys(keys), func(x, y Key) int { return strings.Compare(x.String(), y.String()) }) {
		ia, oka := a[k]
		ib, okb := b[k]
		switch {
		case oka && okb && ia.Raw == ib.Raw:
			continue
		case !oka:
			diffs = append(diffs, fmt.Sprintf("%s only in the second: %s", k, ib.Raw))
		case !okb:
			diffs = append(diffs, fmt.Sprintf("%s only in the first: %s", k, ia.Raw))
		default:
			diffs = append(diffs, fmt.Sprintf("%s differs: %s vs %s", k, ia.Raw, ib.Raw))
		}
	}
	if len(diffs) == 0 {
		return ""
	}
	if len(diffs) > limit {
		diffs = append(diffs[:limit], fmt.Sprintf("... %d keys differ in all", len(diffs)))
	}
	return strings.Join(diffs, "; ")
}

// divergence builds AwaitConverged's error.
func (c *Cluster) divergence(cause error, live []int, sts []*Status, lastErr error, diff string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "testnet: peers %v did not converge: %v", live, cause)
	if lastErr != nil {
		fmt.Fprintf(&b, "; last error: %v", lastErr)
	}
	for k, s := range sts {
		if s != nil && k < len(live) {
			fmt.Fprintf(&b, "\n  peer %d replica %s items %v peers %d version %v", live[k], s.Replica, s.Items, len(s.Peers), s.Version)
		}
	}
	if diff != "" {
		fmt.Fprintf(&b, "\n  the peers differ although their version vectors agree:\n%s", diff)
	}
	return fmt.Errorf("%s", b.String())
}

// AwaitConnected waits until every live peer reports at least want
// connected peers in GET /status, or ctx ends.
func (c *Cluster) AwaitConnected(ctx context.Context, want int) error {
	tick := time.NewTicker(c.opts.PollInterval)
	defer tick.Stop()
	for {
		live := c.Live()
		sts, err := c.Statuses(ctx, live)
		if err == nil {
			ok := true
			for _, s := range sts {
				ok = ok && len(s.Peers) >= want
			}
			if ok {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			counts := make([]int, len(sts))
			for k, s := range sts {
				if s != nil {
					counts[k] = len(s.Peers)
				}
			}
			return fmt.Errorf("testnet: peers %v have %v connections, want %d each: %v (last error %v)", live, counts, want, ctx.Err(), err)
		case <-tick.C:
		}
	}
}
