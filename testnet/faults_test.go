package testnet

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestFaults_KillDuringWrites SIGKILLs a peer in the middle of a write
// burst and restarts it on the same data directory: every write it
// acknowledged is on it right after the restart, and everywhere after
// convergence.
func TestFaults_KillDuringWrites(t *testing.T) {
	skipShort(t)
	seed := seedFor(t)
	rng := Rand(seed, "nemesis")
	c := Start(t, Options{Binary: Build(t), N: 3, Seed: seed})
	ctx := ctxFor(t, 90*time.Second)
	if err := c.AwaitConnected(ctx, 2); err != nil {
		t.Fatal(err)
	}
	const victim = 1
	replicaBefore := c.Peer(victim).Replica

	wctx := ctxFor(t, 6*time.Second)
	l := newLoad(c, seed, 20000)
	for p := range 3 {
		for w := range 2 {
			// Keys per peer: only the victim writes the victim's keys, so
			// its own listing must account for them right after the restart.
			l.start(wctx, p, writerName(p, w, 0), ids(keyPrefix(p), 30), p == victim)
		}
	}
	sleepCtx(ctx, time.Duration(300+rng.IntN(1200))*time.Millisecond)
	before := c.History().Record().Counts()
	if err := c.Kill(victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed peer %d after %d acknowledged writes in all", victim, before[OK])
	sleepCtx(ctx, time.Duration(500+rng.IntN(1000))*time.Millisecond)
	if err := c.Restart(ctx, victim); err != nil {
		t.Fatal(err)
	}
	if got := c.Peer(victim).Replica; got != replicaBefore {
		t.Errorf("replica after restart %s, want %s (same store)", got, replicaBefore)
	}

	// The victim's own writes, on the victim, before anything else touches
	// its keys.
	own, err := c.Client(victim).Listing(ctx, []string{testColl})
	if err != nil {
		t.Fatal(err)
	}
	rep := Check(c.History().Record(), own, func(k Key) bool { return strings.HasPrefix(k.ID, keyPrefix(victim)) })
	t.Logf("victim's own keys on the victim after restart: %s", rep.Summary())
	if !rep.OK() {
		t.Errorf("acknowledged writes of the killed peer, on itself after restart:\n%s", rep)
	}
	if n := rep.Counts[Unknown]; n == 0 {
		t.Logf("no write was in flight at the kill (all outcomes known)")
	}

	for w := range 2 {
		l.start(wctx, victim, writerName(victim, w, 1), ids(keyPrefix(victim), 30), false)
	}
	l.wait()
	checkAll(t, c, converge(t, c, 60*time.Second), nil)
}

// writerName names a writer's random stream: peer, writer, generation.
func writerName(p, w, gen int) string { return fmt.Sprintf("p%dw%dg%d", p, w, gen) }

// keyPrefix is the prefix of the keys only peer p writes.
func keyPrefix(p int) string { return fmt.Sprintf("p%d-", p) }

// TestFaults_LateJoinerAndWipe adds a peer with an empty store, which
// catches up, then wipes a peer's store: it comes back as a new replica,
// catches up, and nothing the others held is lost.
func TestFaults_LateJoinerAndWipe(t *testing.T) {
	skipShort(t)
	seed := seedFor(t)
	c := Start(t, Options{Binary: Build(t), N: 3, Seed: seed})
	ctx := ctxFor(t, 120*time.Second)
	if err := c.AwaitConnected(ctx, 2); err != nil {
		t.Fatal(err)
	}
	l := newLoad(c, seed, 3000)
	wctx := ctxFor(t, 2*time.Second)
	keys := ids("k", 60)
	for p := range 3 {
		l.start(wctx, p, writerName(p, 0, 0), keys, false)
	}
	l.wait()
	s1 := converge(t, c, 60*time.Second)
	checkAll(t, c, s1, nil)

	late, err := c.AddPeer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s2 := converge(t, c, 60*time.Second)
	if d := diffStates(s1, s2, 5); d != "" {
		t.Errorf("late joiner: the state changed without writes: %s", d)
	}
	st, err := c.Client(late).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("late joiner %d: replica %s, %d items, version %v", late, st.Replica, st.Items[testColl], st.Version)

	const wiped = 1
	old := c.Peer(wiped).Replica
	if err := c.Wipe(wiped); err != nil {
		t.Fatal(err)
	}
	// Writes while the wiped peer is down.
	wctx = ctxFor(t, time.Second)
	for _, p := range []int{0, 2, late} {
		l.start(wctx, p, writerName(p, 0, 1), keys, false)
	}
	l.wait()
	held := converge(t, c, 60*time.Second) // what the others hold
	if err := c.Restart(ctx, wiped); err != nil {
		t.Fatal(err)
	}
	if got := c.Peer(wiped).Replica; got == old || got == "" {
		t.Errorf("wiped peer came back as replica %q, want a new one (was %s)", got, old)
	}
	s3 := converge(t, c, 60*time.Second)
	if d := diffStates(held, s3, 5); d != "" {
		t.Errorf("after the wiped peer rejoined, the state differs from what the others held: %s", d)
	}
	st, err = c.Client(wiped).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.Version[old]; !ok && len(s1) > 0 {
		t.Errorf("the new replica's version vector %v lacks the old replica %s's writes", st.Version, old)
	}
	checkAll(t, c, s3, nil)
}

// TestFaults_PauseResume freezes a peer with SIGSTOP while the others
// write (one write sent to the frozen peer times out with an unknown
// outcome), then resumes it: all converge.
func TestFaults_PauseResume(t *testing.T) {
	skipShort(t)
	seed := seedFor(t)
	c := Start(t, Options{Binary: Build(t), N: 3, Seed: seed})
	ctx := ctxFor(t, 90*time.Second)
	if err := c.AwaitConnected(ctx, 2); err != nil {
		t.Fatal(err)
	}
	const frozen = 2
	if err := c.Pause(frozen); err != nil {
		t.Fatal(err)
	}
	short := ctxFor(t, 300*time.Millisecond)
	if r := c.Client(frozen).Add(short, testColl, "to-frozen", nil); r.Outcome != Unknown {
		t.Errorf("a write to a paused peer: %+v, want an unknown outcome", r)
	}
	l := newLoad(c, seed, 5000)
	wctx := ctxFor(t, 3*time.Second)
	keys := ids("k", 50)
	for p := range 2 {
		l.start(wctx, p, writerName(p, 0, 0), keys, false)
		l.start(wctx, p, writerName(p, 1, 0), keys, false)
	}
	l.wait()
	if err := c.Resume(frozen); err != nil {
		t.Fatal(err)
	}
	st := converge(t, c, 60*time.Second)
	checkAll(t, c, st, nil)
}

// TestFaults_PartitionHeal splits five peers 3|2, writes on both sides
// (adds, removes, conflicting metadata), heals, and checks that all
// converge with add-wins, removes that hold and one metadata winner.
func TestFaults_PartitionHeal(t *testing.T) {
	skipShort(t)
	if err := NetnsAvailable(); err != nil {
		t.Skipf("skipped: partitions need netns mode, which is unavailable here: %v", err)
	}
	seed := seedFor(t)
	c := Start(t, Options{Binary: Build(t), N: 5, Seed: seed, Netns: true})
	ctx := ctxFor(t, 150*time.Second)
	if err := c.AwaitConnected(ctx, 4); err != nil {
		t.Fatal(err)
	}
	keys := ids("k", 40)
	for k, id := range keys {
		if r := c.Client(k%5).Add(ctx, testColl, id, map[string]any{"v": 0}); r.Outcome != OK {
			t.Fatalf("pre-populating %s: %+v", id, r)
		}
	}
	for _, id := range []string{"remove-vs-add", "put-vs-put", "removed-both", "remove-vs-put"} {
		if r := c.Client(0).Add(ctx, testColl, id, map[string]any{"v": 0}); r.Outcome != OK {
			t.Fatalf("pre-populating %s: %+v", id, r)
		}
	}
	converge(t, c, 60*time.Second)

	left, right := []int{0, 1, 2}, []int{3, 4}
	if err := c.Partition(left, right); err != nil {
		t.Fatal(err)
	}
	// Scripted conflicts with a known expected outcome.
	must := func(r Result, what string) {
		if r.Outcome != OK {
			t.Fatalf("%s: %+v", what, r)
		}
	}
	must(c.Client(0).Remove(ctx, testColl, "remove-vs-add"), "remove on the left")
	must(c.Client(3).Add(ctx, testColl, "remove-vs-add", map[string]any{"side": "right"}), "add on the right")
	must(c.Client(1).Put(ctx, testColl, "put-vs-put", map[string]any{"side": "left"}), "put on the left")
	must(c.Client(4).Put(ctx, testColl, "put-vs-put", map[string]any{"side": "right"}), "put on the right")
	must(c.Client(2).Remove(ctx, testColl, "removed-both"), "remove on the left")
	must(c.Client(3).Remove(ctx, testColl, "removed-both"), "remove on the right")
	must(c.Client(1).Remove(ctx, testColl, "remove-vs-put"), "remove on the left")
	must(c.Client(4).Put(ctx, testColl, "remove-vs-put", map[string]any{"side": "right"}), "put on the right")

	// Random writes on both sides over the shared keys, so that removes on
	// one side meet adds and puts on the other.
	l := newLoad(c, seed, 6000)
	wctx := ctxFor(t, 3*time.Second)
	for p := range 5 {
		l.start(wctx, p, writerName(p, 0, 0), keys, false)
	}
	l.wait()
	// Nothing crossed the cut.
	if _, ok, err := c.Client(0).Get(ctx, testColl, "remove-vs-add"); err != nil || ok {
		t.Errorf("the right side's add crossed the partition (present on peer 0: %v, err %v)", ok, err)
	}
	if err := c.Heal(); err != nil {
		t.Fatal(err)
	}
	st := converge(t, c, 90*time.Second)

	if !st.Present(testColl, "remove-vs-add") {
		t.Errorf("remove-vs-add: absent, want present (the concurrent add wins)")
	}
	if st.Present(testColl, "removed-both") {
		t.Errorf("removed-both: present, want absent")
	}
	if st.Present(testColl, "remove-vs-put") {
		t.Errorf("remove-vs-put: present, want absent (a metadata write does not resurrect)")
	}
	it, ok := st[Key{testColl, "put-vs-put"}]
	if !ok {
		t.Errorf("put-vs-put: absent")
	} else {
		t.Logf("put-vs-put winner everywhere: %s", it.Raw)
		if !strings.Contains(it.Raw, "conflicts") {
			t.Logf("put-vs-put shows no conflicts field (a winner took over without a visible conflict)")
		}
	}
	checkAll(t, c, st, nil)
}

// TestFaults_Soak runs writers on every peer for a minute (TESTNET_SOAK
// sets another duration) while a nemesis kills, stops, pauses, wipes and
// (in netns mode) partitions peers at random; then everything is healed
// and checked. Runs with -long or TESTNET_LONG=1.
func TestFaults_Soak(t *testing.T) {
	skipShort(t)
	if !long() {
		t.Skip("soak: run with -long or TESTNET_LONG=1")
	}
	dur := time.Minute
	if d, err := time.ParseDuration(os.Getenv("TESTNET_SOAK")); err == nil {
		dur = d
	}
	seed := seedFor(t)
	rng := Rand(seed, "nemesis")
	netns := NetnsAvailable() == nil
	if !netns {
		t.Logf("netns unavailable (%v): the soak runs without partitions", NetnsAvailable())
	}
	const n = 5
	c := Start(t, Options{Binary: Build(t), N: n, Seed: seed, Netns: netns})
	ctx := ctxFor(t, dur+5*time.Minute)
	if err := c.AwaitConnected(ctx, n-1); err != nil {
		t.Fatal(err)
	}
	l := newLoad(c, seed, 1_000_000)
	wctx := ctxFor(t, dur)
	keys := ids("k", 200)
	for p := range n {
		l.start(wctx, p, writerName(p, 0, 0), keys, false)
	}
	actions := map[string]int{}
	for wctx.Err() == nil {
		sleepCtx(wctx, time.Duration(500+rng.IntN(2500))*time.Millisecond)
		if wctx.Err() != nil {
			break
		}
		p := rng.IntN(n)
		info := c.Peer(p)
		var act string
		var err error
		switch x := rng.IntN(100); {
		case info.State == Paused:
			act, err = "resume", c.Resume(p)
		case info.State == Stopped:
			act, err = "restart", c.Restart(ctx, p)
		case x < 25:
			act, err = "kill", c.Kill(p)
		case x < 40:
			act, err = "stop", c.Stop(p)
		case x < 55:
			act, err = "pause", c.Pause(p)
		case x < 60:
			// Wipe only what the live peers all hold (a wipe of writes
			// nobody else has is data loss by definition): hold every
			// writer, heal, wait for convergence, then wipe and restart.
			act = "wipe"
			for q := range n {
				l.pause(q)
			}
			if netns {
				err = c.Heal()
			}
			if err == nil {
				_, err = c.AwaitVersions(ctxFor(t, 60*time.Second))
			}
			if err == nil {
				err = c.Wipe(p)
			}
			for q := range n {
				l.resume(q)
			}
			if err == nil {
				err = c.Restart(ctx, p)
			}
		case x < 80 && netns:
			perm := rng.Perm(n)
			k := 1 + rng.IntN(n-1)
			act, err = "partition", c.Partition(perm[:k], perm[k:])
		case netns:
			act, err = "heal", c.Heal()
		default:
			act = "none"
		}
		actions[act]++
		if err != nil {
			t.Fatalf("nemesis %s peer %d: %v", act, p, err)
		}
	}
	l.wait()
	if netns {
		if err := c.Heal(); err != nil {
			t.Fatal(err)
		}
	}
	for _, info := range c.Peers() {
		switch info.State {
		case Paused:
			if err := c.Resume(info.Index); err != nil {
				t.Fatal(err)
			}
		case Stopped:
			if err := c.Restart(ctx, info.Index); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("nemesis actions: %v", actions)
	st := converge(t, c, 3*time.Minute)
	checkAll(t, c, st, nil)
}

// TestFaults_LongPartition keeps a 3|2 partition for longer than libp2p
// keeps a silent connection (40 s; TESTNET_PARTITION sets another
// duration), so that the peers must redial after the heal, and logs how
// long they take to converge. Runs with -long or TESTNET_LONG=1, in netns
// mode.
func TestFaults_LongPartition(t *testing.T) {
	skipShort(t)
	if !long() {
		t.Skip("long partition: run with -long or TESTNET_LONG=1")
	}
	if err := NetnsAvailable(); err != nil {
		t.Skipf("skipped: partitions need netns mode, which is unavailable here: %v", err)
	}
	dur := 40 * time.Second
	if d, err := time.ParseDuration(os.Getenv("TESTNET_PARTITION")); err == nil {
		dur = d
	}
	seed := seedFor(t)
	c := Start(t, Options{Binary: Build(t), N: 5, Seed: seed, Netns: true})
	ctx := ctxFor(t, dur+3*time.Minute)
	if err := c.AwaitConnected(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if err := c.Partition([]int{0, 1, 2}, []int{3, 4}); err != nil {
		t.Fatal(err)
	}
	l := newLoad(c, seed, 200_000)
	wctx := ctxFor(t, dur)
	keys := ids("k", 100)
	for p := range 5 {
		l.start(wctx, p, writerName(p, 0, 0), keys, false)
	}
	l.wait()
	sts, err := c.Statuses(ctx, c.Live())
	if err == nil {
		for i, s := range sts {
			t.Logf("peer %d has %d connections before the heal", i, len(s.Peers))
		}
	}
	if err := c.Heal(); err != nil {
		t.Fatal(err)
	}
	checkAll(t, c, converge(t, c, 2*time.Minute), nil)
}
