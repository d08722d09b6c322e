package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
)

// metric is one row of the results table. Values are stored in the unit
// shown.
type metric struct {
	Key    string
	Label  string
	Unit   string
	Higher bool // a higher value is better
	CPU    bool // a property of the translator process: not defined for native forwarding
	// MayLack: a round may have no number without the run failing (every
	// echo of a ping under a flood can be dropped).
	MayLack bool
	// Test is the measurement (-tests) that yields it; "" for every run
	// (the translator's start).
	Test string
}

const (
	mTCP1     = "tcp1"
	mTCP4     = "tcp4"
	mUDP      = "udp64"
	mRTT50    = "rtt50"     // 100 pings/s on the idle path
	mRTT99    = "rtt99"     // same pings, 99th percentile
	mRTTSlow  = "rtt50_1s"  // 1 ping/s: a parked runtime must wake up for each
	mRTTLoad  = "rtt50_udp" // 100 pings/s during the 64 B UDP flood
	mLossLoad = "loss_udp"  // their loss
	mCPUTCP1  = "cpu_tcp1"
	mCPUTCP4  = "cpu_tcp4"
	mCPUUDP   = "cpu_udp64"
	mStart    = "startup"
)

// mUDPDrop is the share of the flood's datagrams that reached the
// server's sockets and were dropped there.
const mUDPDrop = "udp_rcvbuf_drop"

// mUDPReached is the rate at which the flood's datagrams reached the
// server's sockets: what iperf3 received and what its full socket
// dropped. When the socket drops, it is the translator's delivery rate;
// the received rate is then the receiver's drain rate.
const mUDPReached = "udp64_reached"

var metrics = []metric{
	{Key: mTCP1, Label: "TCP, 1 stream", Unit: "Gbit/s", Higher: true, Test: testTCP1},
	{Key: mTCP4, Label: "TCP, 4 streams", Unit: "Gbit/s", Higher: true, Test: testTCP4},
	{Key: mUDP, Label: "UDP 64 B, received", Unit: "kpkt/s", Higher: true, Test: testUDP},
	// What reached the server and was dropped there (its socket's buffer
	// full): the received rate is the receiver's drain rate when this is
	// not 0, not the translator's (docs/datapath.md, "The UDP flood in
	// host mode").
	{Key: mUDPDrop, Label: "UDP 64 B, dropped at the server's socket", Unit: "%", Test: testUDP},
	{Key: mUDPReached, Label: "UDP 64 B, reached the server's socket (received + dropped there)", Unit: "kpkt/s", Higher: true, Test: testUDP},
	{Key: mRTT50, Label: "ping RTT 100/s, median", Unit: "µs", Test: testPing},
	{Key: mRTT99, Label: "ping RTT 100/s, p99", Unit: "µs", Test: testPing},
	{Key: mRTTSlow, Label: "ping RTT 1/s, median", Unit: "µs", Test: testPing1s},
	{Key: mRTTLoad, Label: "ping RTT 100/s during UDP 64 B flood, median", Unit: "µs", MayLack: true, Test: testUDP},
	{Key: mLossLoad, Label: "ping loss during UDP 64 B flood", Unit: "%", Test: testUDP},
	{Key: mCPUTCP1, Label: "translator CPU, TCP 1 stream", Unit: "CPU s/Gbit", CPU: true, Test: testTCP1},
	{Key: mCPUTCP4, Label: "translator CPU, TCP 4 streams", Unit: "CPU s/Gbit", CPU: true, Test: testTCP4},
	{Key: mCPUUDP, Label: "translator CPU, UDP 64 B", Unit: "CPU s/Mpkt", CPU: true, Test: testUDP},
	{Key: mStart, Label: "translator start until an echo passes", Unit: "s", CPU: true},
}

func metricByKey(k string) metric {
	for _, m := range metrics {
		if m.Key == k {
			return m
		}
	}
	return metric{Key: k, Label: k}
}

// condition is a state of the veths that a run measures every setup in.
type condition struct {
	Key   string
	Label string
	GRO   bool // GRO on on every veth
	// UDPFwd turns on rx-udp-gro-forwarding as well: GRO then also merges
	// UDP datagrams that are forwarded (not delivered to a local socket)
	// into one super-packet (SKB_GSO_UDP_L4), which a tun that accepts
	// USO (TUN_F_USO4/6) reads in one go.
	UDPFwd bool
	// FragList turns on rx-gro-list as well: GRO chains forwarded UDP
	// and TCP packets (SKB_GSO_FRAGLIST) without merging their payloads,
	// and a device without fraglist offload (a tun) gets them unchained
	// again.
	FragList bool
	// Threaded polls each veth's NAPI from a kernel thread
	// (/sys/class/net/IF/threaded) instead of the softirq that runs at
	// the end of each send: a poll then finds many packets waiting and
	// GRO can merge them.
	Threaded bool
}

var (
	condGRO     = condition{Key: "gro", Label: "GRO on", GRO: true}
	condNoGRO   = condition{Key: "nogro", Label: "GRO off", GRO: false}
	condUDPGRO  = condition{Key: "udpgro", Label: "GRO + UDP GRO forwarding", GRO: true, UDPFwd: true}
	condGROList = condition{Key: "grolist", Label: "GRO + GRO list", GRO: true, FragList: true}
	condNAPI    = condition{Key: "napi", Label: "GRO + UDP GRO forwarding, threaded NAPI", GRO: true, UDPFwd: true, Threaded: true}
)

// col is the results key of one setup measured in one condition.
func col(cond, setup string) string { return cond + "/" + setup }

// results holds every measurement: column (condition/setup) -> metric -> one value per round,
// NaN where a round has none (not yet measured, or failed).
type results struct {
	Rounds int
	Values map[string]map[string][]float64
	// RTTs keeps every echo's round-trip time (ms, in arrival order) of the
	// ping tests: column -> metric -> round. A median of 10-30 sparse pings
	// per round hides how wide they scatter; the JSON keeps them for
	// quartiles over all rounds.
	RTTs map[string]map[string][][]float64
	// Ports are the client ports iperf3 reported for its data streams:
	// column -> throughput metric -> round (0: none reported).
	Ports map[string]map[string][]int
}

func newResults(cols []string, rounds int) *results {
	r := &results{Rounds: rounds, Values: map[string]map[string][]float64{}, RTTs: map[string]map[string][][]float64{}}
	for _, s := range cols {
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

// setRTTs keeps the single round-trip times (ms) behind a ping metric.
func (r *results) setRTTs(setup, metric string, round int, rtts []float64) {
	if r.RTTs == nil {
		r.RTTs = map[string]map[string][][]float64{}
	}
	if r.RTTs[setup] == nil {
		r.RTTs[setup] = map[string][][]float64{}
	}
	if r.RTTs[setup][metric] == nil {
		r.RTTs[setup][metric] = make([][]float64, r.Rounds)
	}
	r.RTTs[setup][metric][round] = slices.Clone(rtts)
}

// setPort keeps the client port iperf3 used for a throughput metric.
func (r *results) setPort(setup, metric string, round, port int) {
	if r.Ports == nil {
		r.Ports = map[string]map[string][]int{}
	}
	if r.Ports[setup] == nil {
		r.Ports[setup] = map[string][]int{}
	}
	if r.Ports[setup][metric] == nil {
		r.Ports[setup][metric] = make([]int, r.Rounds)
	}
	r.Ports[setup][metric][round] = port
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
	return median(r.roundRatios(metric, num, den))
}

// roundRatios is num/den of each round that measured both.
func (r *results) roundRatios(metric, num, den string) []float64 {
	a, b := r.Values[num][metric], r.Values[den][metric]
	if a == nil || b == nil {
		return nil
	}
	q := make([]float64, 0, len(a))
	for i := range a {
		if math.IsNaN(a[i]) || math.IsNaN(b[i]) || b[i] == 0 {
			continue
		}
		q = append(q, a[i]/b[i])
	}
	return q
}

// missing lists every measurement that did not produce a number, as
// "condition/setup/metric/round N". CPU metrics are expected only for
// translators (translated is keyed by column), and only the metrics of the
// tests that ran (nil: all of them).
func (r *results) missing(translated map[string]bool, tests testSet) []string {
	var out []string
	setups := make([]string, 0, len(r.Values))
	for s := range r.Values {
		setups = append(setups, s)
	}
	sort.Strings(setups)
	for _, s := range setups {
		for _, m := range metrics {
			if m.CPU && !translated[s] || m.MayLack || m.Test != "" && !tests.has(m.Test) {
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

// target is one goal of the issue, stated as a same-run ratio between two
// columns measured in the same condition.
type target struct {
	Label      string
	Cond       string // condition label
	Metric     string
	Num, Den   string  // column keys
	AtLeast    bool    // ratio >= Threshold; otherwise ratio <= Threshold
	Threshold  float64 // on the ratio
	Comparison string  // human form, e.g. "≥ 0.8× native IPv6"
	// Within: a goal of staying within a few percent of another setup
	// (the 1M table against one mapping), judged on a confidence
	// interval (estimate) instead of the median alone.
	Within bool
	// NumSetup is the setup key of the numerator (Num is its column).
	NumSetup string
}

// goal is one of issue 12's targets for a map646 link mode, against a
// reference setup.
type goal struct {
	What      string // "TCP 1 stream"
	Metric    string
	Den       string // reference setup key
	AtLeast   bool
	Threshold float64
}

// issueTargets lists issue 12's targets for the conditions and setups of a
// run (setups maps key -> label): for every map646 link mode measured, TCP 1
// stream >= 0.8x and 4 streams >= 0.7x native IPv6, 64 B UDP >= 1.5x the
// TAYGA fork (1.6x TAYGA 0.9.2 without the fork) and >= 0.6x native IPv6,
// ping RTT medians at 100/s and 1/s <= TAYGA 0.9.2's, CPU per Mpkt <= 0.7x
// TAYGA 0.9.2's; and the 1M-mapping table within 5% of one mapping on every
// row the targets use. Each holds in every condition (GRO on and off).
func issueTargets(conds []condition, setups []setup) []target {
	label := map[string]string{}
	for _, s := range setups {
		label[s.Key] = s.Label
	}
	udp := goal{"UDP 64 B rate", mUDP, sTayga, true, 1.6}
	if label[sTaygaFork] != "" {
		udp = goal{"UDP 64 B rate", mUDP, sTaygaFork, true, 1.5}
	}
	goals := []goal{
		{"TCP 1 stream", mTCP1, sNative6, true, 0.8},
		{"TCP 4 streams", mTCP4, sNative6, true, 0.7},
		udp,
		{"UDP 64 B rate", mUDP, sNative6, true, 0.6},
		{"ping RTT 100/s median", mRTT50, sTayga, false, 1},
		{"ping RTT 1/s median", mRTTSlow, sTayga, false, 1},
		{"CPU per Mpkt, UDP 64 B", mCPUUDP, sTayga, false, 0.7},
	}
	var out []target
	for _, c := range conds {
		for _, mode := range []string{sMap646, sMap646NIC, sMap646FD} {
			if label[mode] == "" {
				continue
			}
			for _, g := range goals {
				out = append(out, newTarget(label[mode]+": "+g.What, c, g.Metric, mode, g.Den, label[g.Den], g.AtLeast, g.Threshold))
			}
		}
		if label[sMap646] == "" {
			continue
		}
		// The 1M table against one mapping, and the A/A twin judged the
		// same way beside it.
		for _, num := range []struct{ key, vs string }{{sMap646M1, " vs 1: "}, {sMap646AA, " vs " + label[sMap646] + ": "}} {
			if label[num.key] == "" {
				continue
			}
			for _, k := range []string{mTCP1, mTCP4, mUDP, mRTT50, mRTTSlow, mCPUTCP1, mCPUTCP4, mCPUUDP} {
				m := metricByKey(k)
				th, higher := 0.95, true
				// Lower is better for times and CPU: "within 5%" is at most 1.05x.
				if !m.Higher {
					th, higher = 1.05, false
				}
				t := newTarget(label[num.key]+num.vs+m.Label, c, k, num.key, sMap646, label[sMap646], higher, th)
				t.Within = true
				out = append(out, t)
			}
		}
	}
	return out
}

func newTarget(what string, c condition, metric, num, den, denLabel string, atLeast bool, th float64) target {
	op := "≤"
	if atLeast {
		op = "≥"
	}
	if denLabel == "" {
		denLabel = den
	}
	return target{Label: what, Cond: c.Label, Metric: metric, Num: col(c.Key, num), Den: col(c.Key, den), NumSetup: num,
		AtLeast: atLeast, Threshold: th, Comparison: fmt.Sprintf("%s %g× %s", op, th, denLabel)}
}

// verdict evaluates a target on the results: the ratio, and whether it is
// met; ok is false when either side was not measured in this run.
func (t target) verdict(r *results) (ratio float64, met, ok bool) {
	ratio = r.ratio(t.Metric, t.Num, t.Den)
	if math.IsNaN(ratio) {
		return ratio, false, false
	}
	return ratio, t.meets(ratio), true
}

func (t target) meets(ratio float64) bool {
	if t.AtLeast {
		return ratio >= t.Threshold
	}
	return ratio <= t.Threshold
}

// spread is the lowest and highest per-round ratio of the target and
// whether the rounds disagree (some meet the goal, some do not): a goal
// within the run-to-run noise, as the 5% ones of the 1M table are on a
// loaded machine, is then decided by the median alone, and the reader
// should know it.
func (t target) spread(r *results) (lo, hi float64, split bool) {
	q := r.roundRatios(t.Metric, t.Num, t.Den)
	if len(q) == 0 {
		return math.NaN(), math.NaN(), false
	}
	lo, hi = slices.Min(q), slices.Max(q)
	return lo, hi, t.meets(lo) != t.meets(hi)
}

// estimate is the target's ratio with a 95 % confidence interval: over
// every echo of both setups for the idle ping metrics, whose rounds hold
// a few echoes each (pooledEchoRatio), and over the rounds otherwise
// (crossoverRatio).
func (t target) estimate(r *results) ratioEstimate {
	return r.estimate(t.Metric, t.Num, t.Den)
}

// estimate is num/den of a metric with its 95 % confidence interval; see
// target.estimate.
func (r *results) estimate(metric, num, den string) ratioEstimate {
	if a, b := r.RTTs[num][metric], r.RTTs[den][metric]; len(a) > 0 && len(b) > 0 {
		return pooledEchoRatio(a, b)
	}
	return crossoverRatio(r.Values[num][metric], r.Values[den][metric])
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
	doc := savedRun{info.Date, info.Kernel, info.CPUModel, info.Cores, info.Rounds, info.Duration.Seconds(), info.Pings, info.Mappings, info.Interleave, vals, r.RTTs, info.Flows, r.Ports, info.Pings1s}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
