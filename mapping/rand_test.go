package mapping

import "math/rand/v2"

// testRand is a seeded generator so failures reproduce.
type testRand struct{ *rand.Rand }

func newRand(seed uint64) testRand { return testRand{rand.New(rand.NewPCG(seed, seed^0x9e3779b9))} }

func (r testRand) fill(b []byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

func (r testRand) intn(n int) int { return r.IntN(n) }
