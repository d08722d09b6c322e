package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var sampleSetups = []string{sNative6, sNative4, sTayga, sTaygaFork, sMap646, sMap646M1}

// g is a column of the GRO-on condition, n of the GRO-off one.
func g(setup string) string { return col(condGRO.Key, setup) }
func n(setup string) string { return col(condNoGRO.Key, setup) }

// sampleResults: three rounds where the whole machine slows down in round 2;
// same-run ratios stay put while the absolute numbers move. GRO off halves
// native TCP and leaves map646 as it is.
func sampleResults() *results {
	var cols []string
	for _, c := range []condition{condGRO, condNoGRO} {
		for _, s := range sampleSetups {
			cols = append(cols, col(c.Key, s))
		}
	}
	r := newResults(cols, 3)
	fill := func(s, m string, v ...float64) {
		for i, x := range v {
			r.set(s, m, i, x)
		}
	}
	fill(g(sNative6), mTCP1, 10, 5, 10)
	fill(g(sTayga), mTCP1, 1, 0.5, 1)
	fill(g(sMap646), mTCP1, 8, 4, 8)
	fill(g(sMap646M1), mTCP1, 7.9, 3.9, 8)
	fill(n(sNative6), mTCP1, 5, 2.5, 5)
	fill(n(sMap646), mTCP1, 3, 1.5, 3)
	fill(g(sNative6), mTCP4, 20, 10, 20)
	fill(g(sMap646), mTCP4, 10, 5, 10)
	fill(g(sMap646M1), mTCP4, 10, 5, 10)
	fill(g(sNative6), mUDP, 200, 100, 200)
	fill(g(sTayga), mUDP, 100, 50, 100)
	fill(g(sTaygaFork), mUDP, 100, 50, 100)
	fill(g(sMap646), mUDP, 150, 60, 120)
	fill(g(sMap646M1), mUDP, 150, 60, 120)
	fill(g(sTayga), mRTT50, 100, 100, 100)
	fill(g(sMap646), mRTT50, 90, 110, 80)
	fill(g(sTayga), mRTTSlow, 200, 200, 200)
	fill(g(sMap646), mRTTSlow, 300, 300, 300)
	fill(g(sTayga), mRTTLoad, 5000, 5000, 5000)
	fill(g(sMap646), mRTTLoad, 10000, 11000, 9000)
	fill(g(sTayga), mCPUUDP, 10, 10, 10)
	fill(g(sMap646), mCPUUDP, 7, 8, 9)
	fill(g(sMap646M1), mCPUUDP, 7.2, 8, 9)
	return r
}

func TestRatioIsMedianOfSameRunRatios(t *testing.T) {
	r := sampleResults()
	if got := r.ratio(mTCP1, g(sMap646), g(sNative6)); got != 0.8 {
		t.Errorf("map646/native = %v, want 0.8", got)
	}
	// Per round 1.5, 1.2, 1.2: median 1.2 (the ratio of medians would be 1.2 as well,
	// but not for the next one).
	if got := r.ratio(mUDP, g(sMap646), g(sTayga)); math.Abs(got-1.2) > 1e-9 {
		t.Errorf("UDP map646/tayga = %v, want 1.2", got)
	}
	// 7.9/8, 3.9/4, 8/8 -> median 7.9/8.
	if got := r.ratio(mTCP1, g(sMap646M1), g(sMap646)); math.Abs(got-7.9/8) > 1e-9 {
		t.Errorf("1M/1 = %v", got)
	}
	if !math.IsNaN(r.ratio(mTCP1, g(sMap646), "nonexistent")) {
		t.Error("ratio against an unknown setup is a number")
	}
	if got := r.median(g(sNative6), mTCP1); got != 10 {
		t.Errorf("median = %v", got)
	}
	if lo, hi := r.span(g(sNative6), mTCP1); lo != 5 || hi != 10 {
		t.Errorf("span = %v..%v", lo, hi)
	}
}

func sampleSetupList(keys ...string) []setup {
	var out []setup
	for _, k := range keys {
		out = append(out, setup{Key: k, Label: k})
	}
	return out
}

func TestIssueTargets(t *testing.T) {
	r := sampleResults()
	conds := []condition{condGRO, condNoGRO}
	type want struct {
		met, ok bool
		goal    string
	}
	wants := map[string]want{
		"GRO on|map646: TCP 1 stream":                     {true, true, "≥ 0.8× native6"},  // 0.8
		"GRO off|map646: TCP 1 stream":                    {false, true, "≥ 0.8× native6"}, // 0.6
		"GRO on|map646: TCP 4 streams":                    {false, true, "≥ 0.7× native6"}, // 0.5
		"GRO off|map646: TCP 4 streams":                   {false, false, "≥ 0.7× native6"},
		"GRO on|map646: UDP 64 B rate":                    {false, true, ""},           // 1.2 < 1.5 (fork) and 0.6 >= 0.6 (native): two rows
		"GRO on|map646: ping RTT 100/s median":            {true, true, "≤ 1× tayga"},  // 0.9
		"GRO on|map646: ping RTT 1/s median":              {false, true, "≤ 1× tayga"}, // 1.5
		"GRO on|map646: CPU per Mpkt, UDP 64 B":           {false, true, "≤ 0.7× tayga"},
		"GRO on|map646-1m vs 1: TCP, 1 stream":            {true, true, "≥ 0.95× map646"},
		"GRO on|map646-1m vs 1: translator CPU, UDP 64 B": {true, true, "≤ 1.05× map646"}, // 7.2/7, 1, 1
		"GRO off|map646-1m vs 1: TCP, 1 stream":           {false, false, "≥ 0.95× map646"},
	}
	got := map[string]int{}
	for _, tg := range issueTargets(conds, sampleSetupList(sampleSetups...)) {
		k := tg.Cond + "|" + tg.Label
		got[k]++
		w, found := wants[k]
		if !found {
			continue
		}
		_, met, ok := tg.verdict(r)
		if k == "GRO on|map646: UDP 64 B rate" {
			// vs the fork 1.2 (not met), vs native 0.6 (met)
			if tg.Den == g(sTaygaFork) && (met || !ok || tg.Threshold != 1.5) || tg.Den == g(sNative6) && (!met || !ok) || tg.Den == g(sTayga) {
				t.Errorf("%s vs %s: met=%v ok=%v threshold %v", k, tg.Den, met, ok, tg.Threshold)
			}
			continue
		}
		if met != w.met || ok != w.ok || tg.Comparison != w.goal {
			t.Errorf("%s: met=%v ok=%v goal %q, want met=%v ok=%v goal %q", k, met, ok, tg.Comparison, w.met, w.ok, w.goal)
		}
	}
	for k := range wants {
		if got[k] == 0 {
			t.Errorf("no target %q", k)
		}
	}
	// 7 goals for map646 and 8 rows of 1M vs 1, in each of the 2 conditions.
	if n := len(issueTargets(conds, sampleSetupList(sampleSetups...))); n != 2*(7+8) {
		t.Errorf("%d targets", n)
	}
	// Without the fork the UDP goal is 1.6x TAYGA 0.9.2; a NIC mode gets its own rows.
	tg := issueTargets([]condition{condGRO}, sampleSetupList(sNative6, sTayga, sMap646, sMap646NIC))
	var udp []string
	for _, x := range tg {
		if x.Metric == mUDP && x.Den == g(sTayga) {
			udp = append(udp, x.Label+" "+x.Comparison)
		}
	}
	if strings.Join(udp, ",") != "map646: UDP 64 B rate ≥ 1.6× tayga,map646-nic: UDP 64 B rate ≥ 1.6× tayga" {
		t.Errorf("UDP targets without the fork: %v", udp)
	}
	empty := newResults(nil, 1)
	for _, x := range issueTargets(conds, sampleSetupList(sampleSetups...)) {
		if _, _, ok := x.verdict(empty); ok {
			t.Errorf("%s: judged without measurements", x.Label)
		}
	}
}

func TestMissing(t *testing.T) {
	r := newResults([]string{g(sNative6), g(sTayga)}, 1)
	for _, m := range metrics {
		r.set(g(sTayga), m.Key, 0, 1)
		if !m.CPU {
			r.set(g(sNative6), m.Key, 0, 1)
		}
	}
	translated := map[string]bool{g(sTayga): true}
	if miss := r.missing(translated, nil); len(miss) != 0 {
		t.Errorf("complete results reported missing: %v", miss)
	}
	r.set(g(sTayga), mCPUUDP, 0, math.NaN())
	r.set(g(sNative6), mRTT99, 0, math.Inf(1))
	// Every echo lost during the flood: no median, but not a failed run.
	r.set(g(sTayga), mRTTLoad, 0, math.NaN())
	miss := r.missing(translated, nil)
	if strings.Join(miss, ",") != "gro/native6/rtt99/round 1,gro/tayga/cpu_udp64/round 1" {
		t.Errorf("missing = %v", miss)
	}
	// -tests: what was not asked for is not missing.
	for _, c := range []struct {
		tests testSet
		want  string
	}{
		{testSet{testPing: true}, "gro/native6/rtt99/round 1"},
		{testSet{testUDP: true, testTCP1: true}, "gro/tayga/cpu_udp64/round 1"},
		{testSet{testPing1s: true}, ""},
	} {
		if got := strings.Join(r.missing(translated, c.tests), ","); got != c.want {
			t.Errorf("missing with -tests %v = %q, want %q", c.tests, got, c.want)
		}
	}
}

func testInfo() runInfo {
	info := runInfo{
		Date: time.Date(2026, 11, 25, 23, 30, 0, 0, time.UTC), Kernel: "6.18.44", CPUModel: "AMD EPYC", Cores: 2,
		Rounds: 3, Duration: 10 * time.Second, Pings: 200, Pings1s: 10, Mappings: 1_000_000, Iperf: "iperf 3.12",
		Setups: []setup{
			{Key: sNative6, Label: "native IPv6"}, {Key: sNative4, Label: "native IPv4"}, {Key: sTayga, Label: "TAYGA 0.9.2"},
			{Key: sTaygaFork, Label: "TAYGA fork"}, {Key: sMap646, Label: "map646 tun"}, {Key: sMap646M1, Label: "map646 tun, 1M mappings"},
		},
		Conds:       []condition{condGRO, condNoGRO},
		Unsupported: map[string]string{sMap646NIC: "check-nic.hcl:14:3: Unsupported block type | x"},
		Translated:  map[string]bool{},
		Offloads:    map[string]map[string]string{"GRO on: router/rtr4": {"tcp-segmentation-offload": "on"}},
		Tuns:        map[string]string{"map646/bn-map646": "2 tx queue(s), txqueuelen 500, qdisc mq (2 children)"},
	}
	for _, c := range info.Conds {
		for _, s := range []string{sTayga, sTaygaFork, sMap646, sMap646M1} {
			info.Translated[col(c.Key, s)] = true
		}
	}
	return info
}

func TestRenderMarkdown(t *testing.T) {
	md := renderMarkdown(testInfo(), sampleResults())
	for _, want := range []string{
		"## netns harness",
		"Linux 6.18.44, AMD EPYC, 2 cores; 3 round(s) of 10s per iperf3 test, 200 pings at 100/s and 10 at 1/s",
		"### GRO on on the veths: medians over rounds (min–max)",
		"### GRO off on the veths: medians over rounds (min–max)",
		"| TCP, 1 stream | Gbit/s | 10.0 (5.00–10.0) | n/a | 1.00 (0.50–1.00) | n/a | 8.00 (4.00–8.00) |",
		"| TCP, 1 stream | Gbit/s | 5.00 (2.50–5.00) | n/a | n/a | n/a | 3.00 (1.50–3.00) |",
		// Every round 0.8: no spread, so the t interval is the point.
		"| map646 tun: TCP 1 stream | GRO on | ≥ 0.8× native IPv6 | 0.80× (0.80×–0.80×) | met | 0.80× [0.80–0.80×] | met |",
		"| map646 tun: TCP 1 stream | GRO off | ≥ 0.8× native IPv6 | 0.60× (0.60×–0.60×) | **not met** | 0.60× [0.60–0.60×] | **not met** |",
		// Per round 1.5, 1.2, 1.2: the first round met the goal.
		"| map646 tun: UDP 64 B rate | GRO on | ≥ 1.5× TAYGA fork | 1.20× (1.20×–1.50×) | **not met**, not in every round |",
		// 0.9, 1.1, 0.8.
		"| map646 tun: ping RTT 100/s median | GRO on | ≤ 1× TAYGA 0.9.2 | 0.90× (0.80×–1.10×) | met, not in every round |",
		// Per round 0.9875, 0.975, 1: geo-mean of the two orders 0.984,
		// its interval (1 df) 0.918–1.054 spans the goal's 0.95.
		"| map646 tun, 1M mappings vs 1: TCP, 1 stream | GRO on | ≥ 0.95× map646 tun | 0.99× (0.97×–1.00×) | met | 0.98× [0.92–1.05×] | **undecided (CI spans the line)** |",
		"| TCP, 1 stream | GRO on | ≥ 0.95× map646 tun | 0.99× (0.97×–1.00×) | 0.98× [0.92–1.05×] | geo-mean of 3 rounds | undecided (CI spans the line) |",
		"The last two columns judge the same ratio on a 95 % confidence interval",
		"| map646 tun: TCP 4 streams | GRO off | ≥ 0.7× native IPv6 | n/a | not measured |",
		"the median of the per-round ratios, shown with the rounds' lowest and highest ratio",
		"a result \"not in every round\" by the median is decided by the median of the rounds alone",
		"the same comparison with one mapping on both sides (`-setups map646,map646-1m -mappings 1`)",
		// How the pairs were ordered, and what the rounds' min–max is worth.
		"one test at a time for every setup in turn before the next test (`-interleave test`)",
		"in rounds 1, 3, ... and in reverse in rounds 2, 4, ... (A B, B A, ...)",
		"With 3 rounds the lowest and highest per-round ratio bound the pair's true median ratio with 75 % confidence",
		"| map646 tun / native IPv6 |",
		"| TAYGA fork / TAYGA 0.9.2 |",
		"- `map646-nic`: unsupported: check-nic.hcl:14:3: Unsupported block type \\| x",
		"| GRO on | 100/s, during the flood | 5000 µs, n/a% lost | n/a (n/a µs, n/a% lost) | 2.00× (10000 µs, n/a% lost) |",
		"| map646/bn-map646 | 2 tx queue(s), txqueuelen 500, qdisc mq (2 children) |",
		"| GRO on: router/rtr4 | — | — | on |",
		"translator CPU, TCP 1 stream | CPU s/Gbit | — | — |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	// Every table row has as many cells as its header.
	var cols int
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "|") {
			cols = 0
			continue
		}
		n := strings.Count(line, "|") - strings.Count(line, "\\|")
		if cols == 0 {
			cols = n
		} else if n != cols {
			t.Errorf("row has %d separators, header %d: %s", n, cols, line)
		}
	}
}

func TestReplaceSection(t *testing.T) {
	sec := "## netns harness\n\nnew numbers\n"
	block := sectionBegin + "\n## netns harness\n\nnew numbers\n" + sectionEnd + "\n"
	tests := []struct {
		name, doc, want string
		wantErr         bool
	}{
		{name: "new file", doc: "", want: "# Benchmarks\n\n" + block},
		{name: "append", doc: "# Benchmarks\n\n## micro\ntext", want: "# Benchmarks\n\n## micro\ntext\n\n" + block},
		{
			name: "replace only our section",
			doc:  "# B\n\n## before\n" + sectionBegin + "\nold\nnumbers\n" + sectionEnd + "\n## after\nkeep\n",
			want: "# B\n\n## before\n" + block + "## after\nkeep\n",
		},
		{name: "end marker only", doc: "x\n" + sectionEnd + "\n", wantErr: true},
		{name: "end before begin", doc: sectionEnd + "\n" + sectionBegin + "\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := replaceSection(tt.doc, sec)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if got != tt.want {
				t.Errorf("got\n%q\nwant\n%q", got, tt.want)
			}
			if err == nil {
				again, _ := replaceSection(got, sec)
				if again != got {
					t.Error("replacing twice changed the document")
				}
			}
		})
	}
}

// TestRenderMarkdownInterleaveSetup: a run ordered -interleave setup says
// so in its Method text.
func TestRenderMarkdownInterleaveSetup(t *testing.T) {
	info := testInfo()
	info.Interleave = interleaveSetup
	md := renderMarkdown(info, sampleResults())
	if !strings.Contains(md, "all its tests with one start of its translator (`-interleave setup`)") || strings.Contains(md, "`-interleave test`") {
		t.Errorf("Method text does not describe -interleave setup:\n%s", md)
	}
}

func TestConfidencePercent(t *testing.T) {
	// Rounded down, never up to a certainty the rounds do not give.
	for n, want := range map[int]string{2: "50 %", 3: "75 %", 4: "87.5 %", 5: "93.75 %", 6: "96.87 %", 16: "99.99 %"} {
		if got := confidencePercent(n); got != want {
			t.Errorf("confidencePercent(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestWriteSectionAndJSON(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "benchmarks.md")
	if err := os.WriteFile(p, []byte("# Benchmarks\n\n## Go micro-benchmarks\nby someone else\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	md := renderMarkdown(testInfo(), sampleResults())
	if err := writeSection(p, md); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(p, md); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if !strings.Contains(string(b), "by someone else") || strings.Count(string(b), sectionBegin) != 1 {
		t.Errorf("file after two writes:\n%s", b)
	}

	jp := filepath.Join(dir, "raw.json")
	res := sampleResults()
	res.setRTTs(g(sMap646), mRTTSlow, 1, []float64{0.25, 0.2, 0.31})
	if err := writeJSON(jp, testInfo(), res); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Rounds int
		Values map[string]map[string][]*float64
		RTTs   map[string]map[string][][]float64 `json:"rtts_ms"`
	}
	b, _ = os.ReadFile(jp)
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	v := doc.Values[g(sNative6)][mTCP1]
	if doc.Rounds != 3 || len(v) != 3 || v[1] == nil || *v[1] != 5 || doc.Values[g(sNative4)][mTCP1][0] != nil {
		t.Errorf("json: %s", b)
	}
	// Every echo of a ping test is kept per round, in arrival order.
	if r := doc.RTTs[g(sMap646)][mRTTSlow]; len(r) != 3 || r[0] != nil || !slices.Equal(r[1], []float64{0.25, 0.2, 0.31}) {
		t.Errorf("json rtts_ms: %v", doc.RTTs)
	}
}

// TestRenderEchoSpread: the idle pings' echoes of every round are pooled
// per setup and condition into a median and quartiles, with their count;
// a setup without echoes (a round that failed, a test not run) shows "—".
func TestRenderEchoSpread(t *testing.T) {
	r := sampleResults()
	md := renderMarkdown(testInfo(), r)
	if strings.Contains(md, "every echo of every round") {
		t.Errorf("echo table rendered without echoes:\n%s", md)
	}
	r.setRTTs(g(sTayga), mRTTSlow, 0, []float64{0.2, 0.3})
	r.setRTTs(g(sTayga), mRTTSlow, 1, []float64{0.1})
	r.setRTTs(g(sTayga), mRTTSlow, 2, []float64{0.5, 0.4})
	r.setRTTs(g(sMap646), mRTTSlow, 2, []float64{0.15})
	r.setRTTs(n(sMap646), mRTT50, 0, []float64{0.1, 0.1, 0.1, 0.1})
	md = renderMarkdown(testInfo(), r)
	for _, want := range []string{
		"### Idle pings, every echo of every round: median (p25–p75) µs, echoes",
		"| GRO on | 1/s | — | — | 300 (200–400), 5 | — | 150 (150–150), 1 | — |",
		"| GRO off | 100/s | — | — | — | — | 100 (100–100), 4 | — |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

// TestRenderWithin: the 1M rows' paired estimates and verdicts, from the
// rounds for throughput and CPU and from every echo for the idle pings.
func TestRenderWithin(t *testing.T) {
	cols := []string{g(sMap646), g(sMap646M1)}
	r := newResults(cols, 6)
	fill := func(s, m string, v ...float64) {
		for i, x := range v {
			r.set(s, m, i, x)
		}
	}
	// CPU per Mpkt: 1M costs 1-2 % in every round: within 5 %.
	fill(g(sMap646), mCPUUDP, 5, 6, 5.5, 5, 6, 5.5)
	fill(g(sMap646M1), mCPUUDP, 5.05, 6.12, 5.55, 5.1, 6.06, 5.61)
	// UDP rate: 1M delivers 20 % less in every round, give or take 1 %:
	// outside.
	fill(g(sMap646), mUDP, 100, 90, 95, 100, 90, 95)
	fill(g(sMap646M1), mUDP, 80, 73, 75, 81, 71, 76)
	// TCP 1 stream: rounds scatter ±20 % around 1: undecided.
	fill(g(sMap646), mTCP1, 10, 10, 10, 10, 10, 10)
	fill(g(sMap646M1), mTCP1, 12, 8, 9, 11, 8.5, 12)
	// Ping 1/s: 10 echoes per round, the same in both setups.
	for i := range 6 {
		echoes := []float64{0.18, 0.19, 0.2, 0.21, 0.22, 0.19, 0.2, 0.2, 0.21, 0.2}
		r.setRTTs(g(sMap646), mRTTSlow, i, echoes)
		r.setRTTs(g(sMap646M1), mRTTSlow, i, echoes)
		r.set(g(sMap646), mRTTSlow, i, 200)
		r.set(g(sMap646M1), mRTTSlow, i, 200)
	}
	info := testInfo()
	info.Conds = []condition{condGRO}
	var b strings.Builder
	renderWithin(func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }, info, r)
	md := b.String()
	for _, want := range []string{
		"### map646 tun, 1M mappings against map646 tun: paired estimate with 95 % confidence",
		"| translator CPU, UDP 64 B | GRO on | ≤ 1.05× map646 tun | 1.02× (1.01×–1.02×) | 1.01× [1.01–1.02×] | geo-mean of 6 rounds | within 5 % |",
		"| UDP 64 B, received | GRO on | ≥ 0.95× map646 tun | 0.80× (0.79×–0.81×) | 0.80× [0.79–0.81×] | geo-mean of 6 rounds | outside 5 % |",
		"| TCP, 1 stream | GRO on | ≥ 0.95× map646 tun | 1.00× (0.80×–1.20×) |",
		"| geo-mean of 6 rounds | undecided (CI spans the line) |",
		"| ping RTT 1/s, median | GRO on | ≤ 1.05× map646 tun |",
		"| ping RTT 1/s, median | GRO on | ≤ 1.05× map646 tun | 1.00× (1.00×–1.00×) | 1.00× [1.00–1.00×] | pooled medians of 120 echoes | within 5 % |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "| TCP, 4 streams |") {
		t.Errorf("a row that was not measured is in the table:\n%s", md)
	}
	if strings.Contains(md, "A/A twin") {
		t.Errorf("a setup that did not run has a table:\n%s", md)
	}
}

// TestRenderWithinAATwin: the A/A twin (map646-aa) beside the 1M table
// gets its own paired table and targets, judged the same way, each row
// against map646 alone: the twin that matches map646 is within 5 %, the
// 1M table that is 20 % slower is outside, in the same run.
func TestRenderWithinAATwin(t *testing.T) {
	cols := []string{g(sMap646), g(sMap646M1), g(sMap646AA)}
	r := newResults(cols, 6)
	fill := func(s, m string, v ...float64) {
		for i, x := range v {
			r.set(s, m, i, x)
		}
	}
	fill(g(sMap646), mUDP, 100, 90, 95, 100, 90, 95)
	fill(g(sMap646M1), mUDP, 80, 73, 75, 81, 71, 76)
	fill(g(sMap646AA), mUDP, 101, 89, 96, 99, 91, 95)
	info := testInfo()
	info.Conds = []condition{condGRO}
	info.Setups = append(info.Setups, setup{Key: sMap646AA, Label: "map646 tun, A/A twin"})
	var b strings.Builder
	renderWithin(func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }, info, r)
	md := b.String()
	oneM, twin, ok := strings.Cut(md, "### map646 tun, A/A twin against map646 tun: paired estimate with 95 % confidence")
	if !ok {
		t.Fatalf("no A/A twin table:\n%s", md)
	}
	if !strings.Contains(oneM, "| UDP 64 B, received | GRO on | ≥ 0.95× map646 tun | 0.80× (0.79×–0.81×) | 0.80× [0.79–0.81×] | geo-mean of 6 rounds | outside 5 % |") {
		t.Errorf("1M table:\n%s", oneM)
	}
	if !strings.Contains(twin, "| UDP 64 B, received | GRO on | ≥ 0.95× map646 tun | 1.00× (0.99×–1.01×) |") || !strings.Contains(twin, "| within 5 % |") {
		t.Errorf("A/A twin table:\n%s", twin)
	}
	var labels []string
	for _, tg := range issueTargets(info.Conds, info.Setups) {
		if tg.Within && tg.Metric == mUDP {
			labels = append(labels, tg.Label)
		}
	}
	if want := []string{"map646 tun, 1M mappings vs 1: UDP 64 B, received", "map646 tun, A/A twin vs map646 tun: UDP 64 B, received"}; !slices.Equal(labels, want) {
		t.Errorf("within targets %q, want %q", labels, want)
	}
}
