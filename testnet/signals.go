package testnet

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

var (
	liveMu  sync.Mutex
	live    = map[*Cluster]bool{} // clusters launched and not yet closed
	sigOnce sync.Once
)

func register(c *Cluster) {
	liveMu.Lock()
	defer liveMu.Unlock()
	live[c] = true
}

func unregister(c *Cluster) {
	liveMu.Lock()
	defer liveMu.Unlock()
	delete(live, c)
}

// CloseAll closes every cluster of this process that is still open. It is
// what CloseOnSignal runs. (The binary Build returns is shared with other
// test processes and stays; internal/testbin removes stale builds.)
func CloseAll() {
	liveMu.Lock()
	cs := make([]*Cluster, 0, len(live))
	for c := range live {
		cs = append(cs, c)
	}
	liveMu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() { _ = c.Close() })
	}
	wg.Wait()
}

// CloseOnSignal makes SIGINT, SIGTERM and SIGHUP close every open cluster
// (stopping its peers and removing its namespaces) before the process
// exits with status 1; without it, an interrupted test would leave the
// namespaces behind (the peers die with the process regardless). Call it
// once, from TestMain or main; later calls do nothing.
func CloseOnSignal() {
	sigOnce.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
		go func() {
			sig := <-ch
			fmt.Fprintf(os.Stderr, "testnet: %v: stopping the clusters\n", sig)
			CloseAll()
			os.Exit(1)
		}()
	})
}
