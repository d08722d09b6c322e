package main

import (
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestMergeRuns: two runs' rounds pooled in order, a run of an odd number
// of rounds followed by an empty round so that parity keeps telling the
// setups' order; the echoes come along; an A/A run does not merge with a
// real one.
func TestMergeRuns(t *testing.T) {
	dir := t.TempDir()
	cols := []string{g(sMap646), g(sMap646M1), n(sMap646), n(sMap646M1)}
	info := testInfo()
	info.Setups = []setup{{Key: sMap646, Label: "map646 tun"}, {Key: sMap646M1, Label: "map646 tun, 1M mappings"}}

	a := newResults(cols, 3)
	for i, v := range []float64{5, 6, 7} {
		a.set(g(sMap646), mCPUUDP, i, v)
		a.set(g(sMap646M1), mCPUUDP, i, v*1.01)
	}
	a.setRTTs(n(sMap646M1), mRTTSlow, 2, []float64{0.2, 0.3})
	b := newResults(cols, 2)
	for i, v := range []float64{8, 9} {
		b.set(g(sMap646), mCPUUDP, i, v)
		b.set(g(sMap646M1), mCPUUDP, i, v*1.02)
	}
	info.Flows = []flowIDs{{Port: 41000, PingID: 700}, {Port: 42000, PingID: 800}, {Port: 43000, PingID: 900}}
	pa, pb := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")
	if err := writeJSON(pa, info, a); err != nil {
		t.Fatal(err)
	}
	info2 := info
	info2.Rounds = 2
	info2.Flows = info.Flows[:2]
	if err := writeJSON(pb, info2, b); err != nil {
		t.Fatal(err)
	}

	mi, r, err := mergeRuns([]string{pa, pb})
	if err != nil {
		t.Fatal(err)
	}
	nan := math.NaN()
	want := []float64{5, 6, 7, nan, 8, 9}
	got := r.Values[g(sMap646)][mCPUUDP]
	if r.Rounds != 6 || !slices.EqualFunc(got, want, func(x, y float64) bool { return x == y || math.IsNaN(x) && math.IsNaN(y) }) {
		t.Errorf("merged rounds %d, values %v, want 6 rounds %v", r.Rounds, got, want)
	}
	if e := r.RTTs[n(sMap646M1)][mRTTSlow]; len(e) != 6 || !slices.Equal(e[2], []float64{0.2, 0.3}) {
		t.Errorf("merged echoes %v, want round 3's two echoes", e)
	}
	var keys []string
	for _, s := range mi.Setups {
		keys = append(keys, s.Key+"="+s.Label)
	}
	if len(mi.Flows) != 6 || mi.Flows[3].Port != 0 || mi.Flows[4].Port != 41000 {
		t.Errorf("merged flows %v, want each run's with an empty round after the odd one", mi.Flows)
	}
	if strings.Join(keys, ",") != "map646=map646 tun,map646-1m=map646 tun, 1M mappings" || len(mi.Conds) != 2 || mi.Conds[0] != condGRO {
		t.Errorf("merged setups %v, conditions %v", keys, mi.Conds)
	}
	md := mergedNote([]string{pa, pb}, r.Rounds) + renderMarkdown(mi, r)
	for _, s := range []string{
		"Merged from 2 runs (`a.json`, `b.json`): 6 rounds in all",
		"| translator CPU, UDP 64 B | GRO on | ≤ 1.05× map646 tun | 1.01× (1.01×–1.02×) |",
		"geo-mean of 5 rounds",
		// What the runs were, not what a merge's zero values say.
		"200 pings at 100/s and 10 at 1/s per round",
		"Every setup of a round sends from the same client ports",
	} {
		if !strings.Contains(md, s) {
			t.Errorf("merged report lacks %q:\n%s", s, md)
		}
	}

	aa := info2
	aa.Mappings = 1
	pc := filepath.Join(dir, "aa.json")
	if err := writeJSON(pc, aa, b); err != nil {
		t.Fatal(err)
	}
	if _, _, err := mergeRuns([]string{pa, pc}); err == nil || !strings.Contains(err.Error(), "A/A") {
		t.Errorf("merging a real run with an A/A run: err %v, want one that names A/A", err)
	}
	if _, _, err := mergeRuns([]string{filepath.Join(dir, "missing.json")}); err == nil {
		t.Error("merging a missing file: no error")
	}
}
