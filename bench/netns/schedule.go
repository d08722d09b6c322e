package main

import (
	"fmt"
	"slices"
)

// Orders in which -interleave runs a round's measurements.
const (
	// interleaveTest runs one test at a time for every setup: TCP 1 stream
	// of A, of B, then UDP of A, of B. The two members of a compared pair
	// are measured back to back, seconds apart, under the same machine
	// state, each with its translator started for that test alone.
	interleaveTest = "test"
	// interleaveSetup runs every test of a setup before the next setup
	// (A: TCP 1 stream, UDP; then B: ...), one translator start per setup
	// and round: the pair's members of one test are a whole setup's tests
	// apart.
	interleaveSetup = "setup"
)

// unit is one measurement the harness makes in namespaces built anew: one
// setup's translator, started for the tests named, in one condition and
// round.
type unit struct {
	Round int
	Cond  condition
	Setup int     // index into the run's setups
	Tests testSet // never nil: the tests this unit runs
}

// schedule returns a run's measurements in the order they are made.
// Within each round and condition, the setups run in the order given in
// even rounds (0, 2, ...) and in reverse in odd ones (A B, B A, A B, ...):
// a drift of the machine's load over a round then favours the first member
// of a pair in one round and the second in the next, and with an even
// number of rounds a linear drift cancels from the median of the per-round
// ratios instead of biasing every ratio the same way, as a fixed order did.
// With interleaveTest each test is a unit of its own and all setups run it
// before the next test starts; with interleaveSetup a setup runs all its
// tests in one unit. tests nil means every test.
func schedule(rounds int, conds []condition, setups int, tests testSet, interleave string) ([]unit, error) {
	var selected []string
	for _, t := range allTests {
		if tests.has(t) {
			selected = append(selected, t)
		}
	}
	var groups []testSet
	switch interleave {
	case interleaveTest:
		for _, t := range selected {
			groups = append(groups, testSet{t: true})
		}
	case interleaveSetup:
		all := testSet{}
		for _, t := range selected {
			all[t] = true
		}
		groups = []testSet{all}
	default:
		return nil, fmt.Errorf("-interleave %q: want %s or %s", interleave, interleaveTest, interleaveSetup)
	}
	order := make([]int, setups)
	for i := range order {
		order[i] = i
	}
	var out []unit
	for r := 0; r < rounds; r++ {
		o := order
		if r%2 == 1 {
			o = slices.Clone(order)
			slices.Reverse(o)
		}
		for _, c := range conds {
			for _, g := range groups {
				for _, s := range o {
					out = append(out, unit{Round: r, Cond: c, Setup: s, Tests: g})
				}
			}
		}
	}
	return out, nil
}

// names lists the unit's tests in allTests order (for logs and tests).
func (u unit) names() []string {
	var out []string
	for _, t := range allTests {
		if u.Tests[t] {
			out = append(out, t)
		}
	}
	return out
}
