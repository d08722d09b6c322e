package main

import (
	"math"
	"math/rand/v2"
	"slices"
)

// ratioEstimate is a same-run ratio of two setups with its 95 %
// confidence interval. Lo and Hi are NaN when the data cannot bound it
// (too few rounds, or rounds of one order only).
type ratioEstimate struct {
	Ratio, Lo, Hi float64
	N             int    // the samples behind it: rounds, or echoes of both setups
	Unit          string // unitRounds or unitEchoes
}

const (
	unitRounds = "rounds"
	unitEchoes = "echoes"
)

// verdicts of a ratio's confidence interval against a one-sided goal: a
// goal of staying within 5 % of another setup (target.Within) is within
// or outside, any other goal met or not met.
const (
	verdictWithin    = "within 5 %"
	verdictOutside   = "outside 5 %"
	verdictMet       = "met"
	verdictNotMet    = "not met"
	verdictUndecided = "undecided (CI spans the line)"
)

// judge compares the interval with the goal's line: within (met) when the
// whole interval meets the goal, outside (not met) when none of it does,
// undecided when the line lies inside it (or there is no interval).
func (e ratioEstimate) judge(t target) string {
	yes, no := verdictMet, verdictNotMet
	if t.Within {
		yes, no = verdictWithin, verdictOutside
	}
	switch {
	case math.IsNaN(e.Lo) || math.IsNaN(e.Hi):
		return verdictUndecided
	case t.meets(e.Lo) && t.meets(e.Hi):
		return yes
	case !t.meets(e.Lo) && !t.meets(e.Hi):
		return no
	}
	return verdictUndecided
}

// crossoverRatio estimates num/den from per-round values measured as an
// AB/BA crossover: the harness measures the two setups back to back, in
// one order in even rounds (index 0, 2, ...) and in the other in odd ones
// (schedule). Each round's ln(num/den) is taken as the true log ratio,
// plus an effect of the order (whichever setup goes second gains or loses
// a little: session 7 measured up to 7 %), plus noise. The estimate is
// the mean of the two orders' mean log ratios, which cancels the order's
// effect; with as many rounds of each order (an even number of rounds) it
// is the geometric mean of the per-round ratios. The 95 % interval is a t
// interval from the pooled within-order variance with n-2 degrees of
// freedom, so that a systematic order effect does not widen it. Rounds
// where either value is missing or not positive are left out; fewer than
// three usable rounds, or rounds of one order only, give no interval.
func crossoverRatio(num, den []float64) ratioEstimate {
	var byOrder [2][]float64
	for i := range min(len(num), len(den)) {
		a, b := num[i], den[i]
		if math.IsNaN(a) || math.IsNaN(b) || a <= 0 || b <= 0 || math.IsInf(a, 0) || math.IsInf(b, 0) {
			continue
		}
		byOrder[i%2] = append(byOrder[i%2], math.Log(a/b))
	}
	n0, n1 := len(byOrder[0]), len(byOrder[1])
	e := ratioEstimate{Ratio: math.NaN(), Lo: math.NaN(), Hi: math.NaN(), N: n0 + n1, Unit: unitRounds}
	switch {
	case n0+n1 == 0:
		return e
	case n0 == 0 || n1 == 0:
		// One order only: the geometric mean, without an interval, since
		// the order's effect cannot be told from the ratio.
		if n0 == 0 {
			e.Ratio = math.Exp(mean(byOrder[1]))
		} else {
			e.Ratio = math.Exp(mean(byOrder[0]))
		}
		return e
	}
	m0, m1 := mean(byOrder[0]), mean(byOrder[1])
	mu := (m0 + m1) / 2
	e.Ratio = math.Exp(mu)
	df := n0 + n1 - 2
	if df < 1 {
		return e
	}
	var ss float64
	for _, x := range byOrder[0] {
		ss += (x - m0) * (x - m0)
	}
	for _, x := range byOrder[1] {
		ss += (x - m1) * (x - m1)
	}
	s2 := ss / float64(df)
	se := math.Sqrt(s2 * (1/float64(n0) + 1/float64(n1)) / 4)
	h := tQuantile975(df) * se
	e.Lo, e.Hi = math.Exp(mu-h), math.Exp(mu+h)
	return e
}

func mean(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	var s float64
	for _, v := range x {
		s += v
	}
	return s / float64(len(x))
}

// t975 holds the 97.5th percentiles of Student's t distribution for 1 to
// 30 degrees of freedom (the two-sided 95 % critical values of any
// statistics table).
var t975 = [...]float64{
	12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
	2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
	2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
}

// tQuantile975 is the 97.5th percentile of Student's t with df degrees of
// freedom: the table up to 30, beyond it the Cornish-Fisher expansion
// around the normal quantile (error below 1e-4 there).
func tQuantile975(df int) float64 {
	if df < 1 {
		return math.NaN()
	}
	if df <= len(t975) {
		return t975[df-1]
	}
	const z = 1.959964
	v := float64(df)
	return z + (z*z*z+z)/(4*v) + (5*z*z*z*z*z+16*z*z*z+3*z)/(96*v*v)
}

// echoBootstrapSeed makes the report's intervals the same for the same
// data: the bootstrap is a computation on the results, not a measurement.
const echoBootstrapSeed = 646

// echoBootstrapResamples is the number of bootstrap replicates: enough
// that the 2.5th and 97.5th percentiles move by well under a percent of
// the ratio between seeds.
const echoBootstrapResamples = 2000

// pooledEchoRatio estimates num/den for a ping metric from every echo: the
// ratio of the pooled medians over all rounds (num[r] and den[r] are round
// r's round-trip times of each setup), with a 95 % percentile interval
// from a two-level bootstrap. A round of 10 sparse pings gives a noisy
// median, so the median of three such medians per setup wastes most of
// the echoes; the echoes are not independent, though (a round's machine
// state shifts all its echoes), so each replicate draws rounds with
// replacement, pairing both setups' echoes of a drawn round as the harness
// measured them, and then draws echoes with replacement within each drawn
// round and setup. Rounds where either setup has no echo are left out;
// fewer than two usable rounds give no interval.
func pooledEchoRatio(num, den [][]float64) ratioEstimate {
	type pair struct{ a, b []float64 }
	var rounds []pair
	var all [2][]float64
	for i := range min(len(num), len(den)) {
		if len(num[i]) == 0 || len(den[i]) == 0 {
			continue
		}
		rounds = append(rounds, pair{num[i], den[i]})
		all[0] = append(all[0], num[i]...)
		all[1] = append(all[1], den[i]...)
	}
	e := ratioEstimate{Ratio: math.NaN(), Lo: math.NaN(), Hi: math.NaN(), N: len(all[0]) + len(all[1]), Unit: unitEchoes}
	if len(rounds) == 0 {
		return e
	}
	e.Ratio = sortedMedian(all[0]) / sortedMedian(all[1])
	if len(rounds) < 2 {
		return e
	}
	rng := rand.New(rand.NewPCG(echoBootstrapSeed, uint64(len(all[0])<<32|len(all[1]))))
	reps := make([]float64, 0, echoBootstrapResamples)
	bufA := make([]float64, 0, len(all[0])*2)
	bufB := make([]float64, 0, len(all[1])*2)
	for range echoBootstrapResamples {
		bufA, bufB = bufA[:0], bufB[:0]
		for range rounds {
			p := rounds[rng.IntN(len(rounds))]
			for range p.a {
				bufA = append(bufA, p.a[rng.IntN(len(p.a))])
			}
			for range p.b {
				bufB = append(bufB, p.b[rng.IntN(len(p.b))])
			}
		}
		d := sortedMedian(bufB)
		if d > 0 {
			reps = append(reps, sortedMedian(bufA)/d)
		}
	}
	if len(reps) < echoBootstrapResamples/2 {
		return e
	}
	slices.Sort(reps)
	e.Lo, e.Hi = quantile(reps, 0.025), quantile(reps, 0.975)
	return e
}

// sortedMedian sorts x in place and returns its median.
func sortedMedian(x []float64) float64 {
	slices.Sort(x)
	return quantile(x, 0.5)
}
