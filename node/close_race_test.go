package node

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// Close while writers keep a group commit in flight: the commit
// goroutine's last publish finds the watchers' hub closed already, and
// must not close it again.
func TestNode_CloseDuringCommitsPublishesNothingTwice(t *testing.T) {
	for round := range 20 {
		n := openMem(t, testConfig(nil))
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := range 100_000 {
					if _, err := n.Add(context.Background(), key("snapshots", fmt.Sprintf("r%d-w%d-%d", round, w, i)), mustDoc(t, `{}`)); err != nil {
						return // ErrClosed once Close ran
					}
				}
			})
		}
		waitFor(t, "commits under way", func() bool { return n.Stats().Ops >= 20 })
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
	}
}
