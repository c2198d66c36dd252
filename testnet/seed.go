package testnet

import (
	"hash/fnv"
	"math/rand/v2"
	"os"
	"strconv"
	"time"
)

// SeedEnv is the environment variable that sets the seed when no flag
// does.
const SeedEnv = "TESTNET_SEED"

// ResolveSeed returns flagValue if it is not 0, else the value of
// TESTNET_SEED if set and valid, else a seed from the clock. The caller
// prints it so that a red run can be replayed.
func ResolveSeed(flagValue int64) int64 {
	if flagValue != 0 {
		return flagValue
	}
	if v, err := strconv.ParseInt(os.Getenv(SeedEnv), 10, 64); err == nil && v != 0 {
		return v
	}
	return time.Now().UnixNano() & (1<<62 - 1)
}

// Rand returns a generator drawn from seed and a stream name, so that each
// test (and each writer in it) gets its own reproducible sequence from the
// one seed. A *rand.Rand is not safe for concurrent use: give each
// goroutine its own stream.
func Rand(seed int64, stream string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(stream))
	return rand.New(rand.NewPCG(uint64(seed), h.Sum64()))
}
