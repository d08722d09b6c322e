package main

import (
	"math"
	"math/rand/v2"
	"testing"
)

func near(a, b, tol float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	return math.Abs(a-b) <= tol
}

// expAll gives the values whose ln are x, with den all 1.
func expAll(x ...float64) (num, den []float64) {
	for _, v := range x {
		num = append(num, math.Exp(v))
		den = append(den, 1)
	}
	return num, den
}

func TestCrossoverRatio(t *testing.T) {
	nan := math.NaN()
	type want struct {
		ratio, lo, hi float64
		n             int
	}
	cases := []struct {
		name     string
		num, den []float64
		want     want
	}{
		{
			// ln ratios 0.1, 0.2, 0.3, 0: orders' means 0.2 and 0.1, pooled
			// variance 0.04/2, se sqrt(0.02*(1/2+1/2)/4), t(2) 4.303.
			name: "even rounds: geometric mean, t interval with n-2 df",
			num:  []float64{math.Exp(0.1), math.Exp(0.2), math.Exp(0.3), 1},
			den:  []float64{1, 1, 1, 1},
			want: want{math.Exp(0.15), math.Exp(0.15 - 4.303*math.Sqrt(0.005)), math.Exp(0.15 + 4.303*math.Sqrt(0.005)), 4},
		},
		{
			// An order effect of ±10 % and nothing else: it cancels from
			// the estimate and does not widen the interval.
			name: "pure order effect cancels",
			num:  []float64{1.1 * 3, 2 / 1.1, 1.1 * 5, 7 / 1.1},
			den:  []float64{3, 2, 5, 7},
			want: want{1, 1, 1, 4},
		},
		{
			// Orders' means 0.05 (rounds 0 and 2) and 0.2 (round 1): the
			// estimate weighs the orders equally, not the rounds.
			name: "odd rounds: orders weighed equally",
			num:  []float64{1, math.Exp(0.2), math.Exp(0.1)},
			den:  []float64{1, 1, 1},
			want: want{math.Exp(0.125), math.Exp(0.125 - 12.706*math.Sqrt(0.005*1.5/4)), math.Exp(0.125 + 12.706*math.Sqrt(0.005*1.5/4)), 3},
		},
		{
			// Round 1 failed: rounds keep their order by index.
			name: "missing and non-positive rounds are left out",
			num:  []float64{math.Exp(0.1), nan, math.Exp(0.3), 1, 5, 0},
			den:  []float64{1, 1, 1, 1, 0, 1},
			want: want{math.Exp(0.1), math.Exp(0.1 - 12.706*math.Sqrt(0.02*1.5/4)), math.Exp(0.1 + 12.706*math.Sqrt(0.02*1.5/4)), 3},
		},
		{
			name: "two rounds: no interval",
			num:  []float64{2, 8},
			den:  []float64{1, 1},
			want: want{4, nan, nan, 2},
		},
		{
			name: "one order only: geometric mean, no interval",
			num:  []float64{2, nan, 8, nan},
			den:  []float64{1, 1, 1, 1},
			want: want{4, nan, nan, 2},
		},
		{
			name: "nothing measured",
			num:  []float64{nan, nan},
			den:  []float64{1, 1},
			want: want{nan, nan, nan, 0},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := crossoverRatio(c.num, c.den)
			if !near(e.Ratio, c.want.ratio, 1e-9) || !near(e.Lo, c.want.lo, 1e-9) || !near(e.Hi, c.want.hi, 1e-9) || e.N != c.want.n || e.Unit != unitRounds {
				t.Errorf("crossoverRatio = %+v, want ratio %v [%v, %v] over %d rounds", e, c.want.ratio, c.want.lo, c.want.hi, c.want.n)
			}
		})
	}
}

// TestCrossoverRatioCoverage draws A/A runs (true ratio 1) with lognormal
// noise and an order effect and checks that the 95 % interval covers the
// true ratio in about 95 % of them: a wrong standard error or degrees of
// freedom moves the rate out of the band.
func TestCrossoverRatioCoverage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, rounds := range []int{4, 6, 12} {
		const trials = 4000
		covered := 0
		for range trials {
			num, den := make([]float64, rounds), make([]float64, rounds)
			for i := range rounds {
				order := 0.06
				if i%2 == 1 {
					order = -0.06
				}
				den[i] = 100 * math.Exp(0.2*rng.NormFloat64())
				num[i] = den[i] * math.Exp(order+0.12*rng.NormFloat64())
			}
			e := crossoverRatio(num, den)
			if e.Lo <= 1 && 1 <= e.Hi {
				covered++
			}
		}
		rate := float64(covered) / trials
		if rate < 0.935 || rate > 0.965 {
			t.Errorf("%d rounds: interval covered the true ratio in %.3f of the runs, want about 0.95", rounds, rate)
		}
	}
}

func TestTQuantile975(t *testing.T) {
	for _, c := range []struct {
		df   int
		want float64
	}{{1, 12.706}, {2, 4.303}, {10, 2.228}, {30, 2.042}, {31, 2.040}, {40, 2.021}, {60, 2.000}, {120, 1.980}, {100000, 1.960}} {
		if got := tQuantile975(c.df); !near(got, c.want, 1.5e-3) {
			t.Errorf("tQuantile975(%d) = %.4f, want %.3f", c.df, got, c.want)
		}
	}
	if !math.IsNaN(tQuantile975(0)) {
		t.Error("tQuantile975(0) is a number, want NaN")
	}
}

func TestJudge(t *testing.T) {
	atLeast := target{AtLeast: true, Threshold: 0.95, Within: true}
	atMost := target{AtLeast: false, Threshold: 1.05, Within: true}
	// A goal that is not "within 5 % of another setup" is met or not met.
	faster := target{AtLeast: false, Threshold: 1}
	nan := math.NaN()
	for _, c := range []struct {
		t      target
		lo, hi float64
		want   string
	}{
		{atLeast, 0.96, 1.10, verdictWithin},
		{atLeast, 0.95, 1.10, verdictWithin},
		{atLeast, 0.80, 0.94, verdictOutside},
		{atLeast, 0.90, 1.10, verdictUndecided},
		{atMost, 0.90, 1.04, verdictWithin},
		{atMost, 1.06, 1.20, verdictOutside},
		{atMost, 0.98, 1.07, verdictUndecided},
		{atMost, nan, nan, verdictUndecided},
		{faster, 0.80, 0.99, verdictMet},
		{faster, 1.01, 1.20, verdictNotMet},
		{faster, 0.95, 1.05, verdictUndecided},
	} {
		e := ratioEstimate{Ratio: 1, Lo: c.lo, Hi: c.hi}
		if got := e.judge(c.t); got != c.want {
			t.Errorf("judge([%v, %v] against %v %v) = %q, want %q", c.lo, c.hi, c.t.AtLeast, c.t.Threshold, got, c.want)
		}
	}
}

// constRounds gives rounds of n echoes each, all of round i equal to v[i].
func constRounds(n int, v ...float64) [][]float64 {
	out := make([][]float64, len(v))
	for i, x := range v {
		for range n {
			out[i] = append(out[i], x)
		}
	}
	return out
}

func TestPooledEchoRatio(t *testing.T) {
	t.Run("ratio of the pooled medians", func(t *testing.T) {
		e := pooledEchoRatio([][]float64{{1, 2, 3}, {4, 5}}, [][]float64{{2, 2}, {2, 1, 9}})
		if e.Ratio != 1.5 || e.N != 10 || e.Unit != unitEchoes {
			t.Errorf("got %+v, want ratio 1.5 (medians 3 and 2) of 10 echoes", e)
		}
	})
	t.Run("constant rounds, 10 % slower: a point interval", func(t *testing.T) {
		// Every replicate draws the same rounds for both setups and as
		// many echoes of each, so its pooled medians differ by 1.1×.
		e := pooledEchoRatio(constRounds(10, 0.22, 0.33, 0.11), constRounds(10, 0.2, 0.3, 0.1))
		if !near(e.Ratio, 1.1, 1e-9) || !near(e.Lo, 1.1, 1e-9) || !near(e.Hi, 1.1, 1e-9) || e.N != 60 {
			t.Errorf("got %+v, want 1.1 [1.1, 1.1] over 60 echoes", e)
		}
	})
	t.Run("rounds that disagree widen the interval", func(t *testing.T) {
		// Within a round both setups' echoes are alike; the rounds'
		// ratios are 0.8, 1 and 1.3. Resampling echoes alone would give
		// an interval around the pooled ratio far narrower than that.
		num := [][]float64{{0.16, 0.17, 0.15}, {0.2, 0.21, 0.19}, {0.26, 0.27, 0.25}}
		den := [][]float64{{0.2, 0.21, 0.19}, {0.2, 0.21, 0.19}, {0.2, 0.21, 0.19}}
		e := pooledEchoRatio(num, den)
		if !(e.Lo < 0.9 && e.Hi > 1.15) {
			t.Errorf("got %+v, want an interval reaching below 0.9 and above 1.15", e)
		}
		if again := pooledEchoRatio(num, den); again != e {
			t.Errorf("second computation %+v differs from the first %+v: the bootstrap must be reproducible", again, e)
		}
	})
	t.Run("one usable round: no interval", func(t *testing.T) {
		e := pooledEchoRatio([][]float64{{1, 2, 3}, nil, {4}}, [][]float64{{2}, {2}, nil})
		if e.Ratio != 1 || !math.IsNaN(e.Lo) || !math.IsNaN(e.Hi) || e.N != 4 {
			t.Errorf("got %+v, want ratio 1 without interval over 4 echoes", e)
		}
	})
	t.Run("nothing", func(t *testing.T) {
		e := pooledEchoRatio(nil, nil)
		if !math.IsNaN(e.Ratio) || e.N != 0 {
			t.Errorf("got %+v, want NaN over 0 echoes", e)
		}
	})
}
