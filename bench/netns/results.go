package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"time"
)

// metric is one row of the results table. Values are stored in the unit
// shown.
type metric struct {
	Key    string
	Label  string
	Unit   string
	Higher bool // a higher value is better
	CPU    bool // a property of the translator process: not defined for native forwarding
}

const (
	mTCP1    = "tcp1"
	mTCP4    = "tcp4"
	mUDP     = "udp64"
	mRTT50   = "rtt50"
	mRTT99   = "rtt99"
	mCPUTCP1 = "cpu_tcp1"
	mCPUTCP4 = "cpu_tcp4"
	mCPUUDP  = "cpu_udp64"
	mStart   = "startup"
)

var metrics = []metric{
	{Key: mTCP1, Label: "TCP, 1 stream", Unit: "Gbit/s", Higher: true},
	{Key: mTCP4, Label: "TCP, 4 streams", Unit: "Gbit/s", Higher: true},
	{Key: mUDP, Label: "UDP 64 B, received", Unit: "kpkt/s", Higher: true},
	{Key: mRTT50, Label: "ping RTT, median", Unit: "µs"},
	{Key: mRTT99, Label: "ping RTT, p99", Unit: "µs"},
	{Key: mCPUTCP1, Label: "translator CPU, TCP 1 stream", Unit: "CPU s/Gbit", CPU: true},
	{Key: mCPUTCP4, Label: "translator CPU, TCP 4 streams", Unit: "CPU s/Gbit", CPU: true},
	{Key: mCPUUDP, Label: "translator CPU, UDP 64 B", Unit: "CPU s/Mpkt", CPU: true},
	{Key: mStart, Label: "translator start until an echo passes", Unit: "s", CPU: true},
}

// results holds every measurement: setup -> metric -> one value per round,
// NaN where a round has none (not yet measured, or failed).
type results struct {
	Rounds int
	Values map[string]map[string][]float64
}

func newResults(setups []string, rounds int) *results {
	r := &results{Rounds: rounds, Values: map[string]map[string][]float64{}}
	for _, s := range setups {
		r.Values[s] = map[string][]float64{}
		for _, m := range metrics {
			v := make([]float64, rounds)
			for i := range v {
				v[i] = math.NaN()
			}
			r.Values[s][m.Key] = v
		}
	}
	return r
}

func (r *results) set(setup, metric string, round int, v float64) {
	r.Values[setup][metric][round] = v
}

// median over the rounds of one setup's metric.
func (r *results) median(setup, metric string) float64 {
	return median(r.Values[setup][metric])
}

// span returns the smallest and largest value over the rounds.
func (r *results) span(setup, metric string) (lo, hi float64) {
	lo, hi = math.NaN(), math.NaN()
	for _, v := range r.Values[setup][metric] {
		if math.IsNaN(v) {
			continue
		}
		if math.IsNaN(lo) || v < lo {
			lo = v
		}
		if math.IsNaN(hi) || v > hi {
			hi = v
		}
	}
	return lo, hi
}

// ratio is the median over rounds of num/den measured in the same round, so
// that load from the rest of the machine, which shifts whole rounds, cancels.
func (r *results) ratio(metric, num, den string) float64 {
	a, b := r.Values[num][metric], r.Values[den][metric]
	if a == nil || b == nil {
		return math.NaN()
	}
	q := make([]float64, 0, len(a))
	for i := range a {
		if math.IsNaN(a[i]) || math.IsNaN(b[i]) || b[i] == 0 {
			continue
		}
		q = append(q, a[i]/b[i])
	}
	return median(q)
}

// missing lists every measurement that did not produce a number, as
// "setup/metric/round N". CPU metrics are expected only for translators.
func (r *results) missing(translated map[string]bool) []string {
	var out []string
	setups := make([]string, 0, len(r.Values))
	for s := range r.Values {
		setups = append(setups, s)
	}
	sort.Strings(setups)
	for _, s := range setups {
		for _, m := range metrics {
			if m.CPU && !translated[s] {
				continue
			}
			for i, v := range r.Values[s][m.Key] {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					out = append(out, fmt.Sprintf("%s/%s/round %d", s, m.Key, i+1))
				}
			}
		}
	}
	return out
}

// target is one goal of the issue, stated as a same-run ratio.
type target struct {
	Label      string
	Metric     string
	Num, Den   string  // setup keys
	AtLeast    bool    // ratio >= Threshold; otherwise ratio <= Threshold
	Threshold  float64 // on the ratio
	Comparison string  // human form, e.g. "≥ 0.5× native IPv6"
}

const (
	sNative6  = "native6"
	sNative4  = "native4"
	sTayga    = "tayga"
	sMap646   = "map646"
	sMap646M1 = "map646-1m"
)

var targets = []target{
	{Label: "TCP 1 stream vs native IPv6", Metric: mTCP1, Num: sMap646, Den: sNative6, AtLeast: true, Threshold: 0.5, Comparison: "≥ 0.5×"},
	{Label: "TCP 1 stream vs TAYGA", Metric: mTCP1, Num: sMap646, Den: sTayga, AtLeast: true, Threshold: 8, Comparison: "≥ 8×"},
	{Label: "TCP 4 streams vs native IPv6", Metric: mTCP4, Num: sMap646, Den: sNative6, AtLeast: true, Threshold: 0.6, Comparison: "≥ 0.6×"},
	{Label: "UDP 64 B rate vs TAYGA", Metric: mUDP, Num: sMap646, Den: sTayga, AtLeast: true, Threshold: 1.3, Comparison: "≥ 1.3×"},
	{Label: "RTT median vs TAYGA", Metric: mRTT50, Num: sMap646, Den: sTayga, AtLeast: false, Threshold: 1.0, Comparison: "≤ 1.0×"},
	{Label: "1M mappings vs 1: TCP 1 stream", Metric: mTCP1, Num: sMap646M1, Den: sMap646, AtLeast: true, Threshold: 0.95, Comparison: "≥ 0.95×"},
	{Label: "1M mappings vs 1: TCP 4 streams", Metric: mTCP4, Num: sMap646M1, Den: sMap646, AtLeast: true, Threshold: 0.95, Comparison: "≥ 0.95×"},
	{Label: "1M mappings vs 1: UDP 64 B rate", Metric: mUDP, Num: sMap646M1, Den: sMap646, AtLeast: true, Threshold: 0.95, Comparison: "≥ 0.95×"},
}

// verdict evaluates a target on the results: the ratio, and whether it is
// met; ok is false when either side was not measured in this run.
func (t target) verdict(r *results) (ratio float64, met, ok bool) {
	ratio = r.ratio(t.Metric, t.Num, t.Den)
	if math.IsNaN(ratio) {
		return ratio, false, false
	}
	if t.AtLeast {
		return ratio, ratio >= t.Threshold, true
	}
	return ratio, ratio <= t.Threshold, true
}

// writeJSON saves every per-round value (null where none) with the run's
// parameters, for a later look at the spread.
func writeJSON(path string, info runInfo, r *results) error {
	vals := map[string]map[string][]*float64{}
	for s, ms := range r.Values {
		vals[s] = map[string][]*float64{}
		for m, vs := range ms {
			out := make([]*float64, len(vs))
			for i, v := range vs {
				if !math.IsNaN(v) && !math.IsInf(v, 0) {
					v := v
					out[i] = &v
				}
			}
			vals[s][m] = out
		}
	}
	doc := struct {
		Date     time.Time                        `json:"date"`
		Kernel   string                           `json:"kernel"`
		CPU      string                           `json:"cpu"`
		Cores    int                              `json:"cores"`
		Rounds   int                              `json:"rounds"`
		Seconds  float64                          `json:"seconds_per_test"`
		Pings    int                              `json:"pings"`
		Mappings int                              `json:"mappings"`
		Values   map[string]map[string][]*float64 `json:"values"`
	}{info.Date, info.Kernel, info.CPUModel, info.Cores, info.Rounds, info.Duration.Seconds(), info.Pings, info.Mappings, vals}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
