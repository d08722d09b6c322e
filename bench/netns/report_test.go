package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sampleResults: three rounds where the whole machine slows down in round 2;
// same-run ratios stay put while the absolute numbers move.
func sampleResults() *results {
	r := newResults(allSetups, 3)
	fill := func(s, m string, v ...float64) {
		for i, x := range v {
			r.set(s, m, i, x)
		}
	}
	fill(sNative6, mTCP1, 10, 5, 10)
	fill(sTayga, mTCP1, 1, 0.5, 1)
	fill(sMap646, mTCP1, 6, 3, 6)
	fill(sMap646M1, mTCP1, 5.5, 2.9, 6)
	fill(sNative6, mTCP4, 20, 10, 20)
	fill(sMap646, mTCP4, 10, 5, 10)
	fill(sMap646M1, mTCP4, 10, 5, 10)
	fill(sTayga, mUDP, 100, 50, 100)
	fill(sMap646, mUDP, 150, 60, 120)
	fill(sMap646M1, mUDP, 150, 60, 120)
	fill(sTayga, mRTT50, 100, 100, 100)
	fill(sMap646, mRTT50, 90, 110, 80)
	return r
}

func TestRatioIsMedianOfSameRunRatios(t *testing.T) {
	r := sampleResults()
	if got := r.ratio(mTCP1, sMap646, sNative6); got != 0.6 {
		t.Errorf("map646/native = %v, want 0.6", got)
	}
	// Per round 1.5, 1.2, 1.2: median 1.2 (the ratio of medians would be 1.2 as well,
	// but not for the next one).
	if got := r.ratio(mUDP, sMap646, sTayga); math.Abs(got-1.2) > 1e-9 {
		t.Errorf("UDP map646/tayga = %v, want 1.2", got)
	}
	// 5.5/6, 2.9/3, 6/6 -> median 2.9/3.
	if got := r.ratio(mTCP1, sMap646M1, sMap646); math.Abs(got-2.9/3) > 1e-9 {
		t.Errorf("1M/1 = %v", got)
	}
	if !math.IsNaN(r.ratio(mTCP1, sMap646, "nonexistent")) {
		t.Error("ratio against an unknown setup is a number")
	}
	if got := r.median(sNative6, mTCP1); got != 10 {
		t.Errorf("median = %v", got)
	}
	if lo, hi := r.span(sNative6, mTCP1); lo != 5 || hi != 10 {
		t.Errorf("span = %v..%v", lo, hi)
	}
}

func TestTargetsVerdicts(t *testing.T) {
	r := sampleResults()
	want := map[string]struct {
		met, ok bool
	}{
		"TCP 1 stream vs native IPv6":     {true, true},  // 0.6 >= 0.5
		"TCP 1 stream vs TAYGA":           {false, true}, // 6 < 8
		"TCP 4 streams vs native IPv6":    {false, true}, // 0.5 < 0.6
		"UDP 64 B rate vs TAYGA":          {false, true}, // 1.2 < 1.3
		"RTT median vs TAYGA":             {true, true},  // 0.9 <= 1
		"1M mappings vs 1: TCP 1 stream":  {true, true},  // 0.967 >= 0.95
		"1M mappings vs 1: TCP 4 streams": {true, true},
		"1M mappings vs 1: UDP 64 B rate": {true, true},
	}
	for _, tg := range targets {
		_, met, ok := tg.verdict(r)
		w, found := want[tg.Label]
		if !found {
			t.Errorf("target %q has no expectation here", tg.Label)
			continue
		}
		if met != w.met || ok != w.ok {
			t.Errorf("%s: met=%v ok=%v, want met=%v ok=%v", tg.Label, met, ok, w.met, w.ok)
		}
	}
	empty := newResults(allSetups, 1)
	for _, tg := range targets {
		if _, _, ok := tg.verdict(empty); ok {
			t.Errorf("%s: judged without measurements", tg.Label)
		}
	}
}

func TestMissing(t *testing.T) {
	r := newResults([]string{sNative6, sTayga}, 1)
	for _, m := range metrics {
		r.set(sTayga, m.Key, 0, 1)
		if !m.CPU {
			r.set(sNative6, m.Key, 0, 1)
		}
	}
	translated := map[string]bool{sTayga: true}
	if miss := r.missing(translated); len(miss) != 0 {
		t.Errorf("complete results reported missing: %v", miss)
	}
	r.set(sTayga, mCPUUDP, 0, math.NaN())
	r.set(sNative6, mRTT99, 0, math.Inf(1))
	miss := r.missing(translated)
	if strings.Join(miss, ",") != "native6/rtt99/round 1,tayga/cpu_udp64/round 1" {
		t.Errorf("missing = %v", miss)
	}
}

func testInfo() runInfo {
	return runInfo{
		Date: time.Date(2026, 11, 25, 23, 30, 0, 0, time.UTC), Kernel: "6.18.44", CPUModel: "AMD EPYC", Cores: 2,
		Rounds: 3, Duration: 10 * time.Second, Pings: 200, Mappings: 1_000_000, Iperf: "iperf 3.12",
		Setups: []setup{
			{Key: sNative6, Label: "native IPv6"}, {Key: sNative4, Label: "native IPv4"}, {Key: sTayga, Label: "TAYGA"},
			{Key: sMap646, Label: "map646"}, {Key: sMap646M1, Label: "map646, 1M mappings"},
		},
		Translated: map[string]bool{sTayga: true, sMap646: true, sMap646M1: true},
		Offloads:   map[string]map[string]string{"router/rtr4": {"tcp-segmentation-offload": "on"}},
	}
}

func TestRenderMarkdown(t *testing.T) {
	md := renderMarkdown(testInfo(), sampleResults())
	for _, want := range []string{
		"## netns harness",
		"Linux 6.18.44, AMD EPYC, 2 cores; 3 round(s) of 10s",
		"| TCP, 1 stream | Gbit/s | 10.0 (5.00–10.0) | n/a | 1.00 (0.50–1.00) | 6.00 (3.00–6.00) |",
		"| TCP 1 stream vs native IPv6 | ≥ 0.5× | 0.60× | met |",
		"| TCP 1 stream vs TAYGA | ≥ 8× | 6.00× | **not met** |",
		"| RTT median vs TAYGA | ≤ 1.0× | 0.90× | met |",
		"| map646 / native IPv6 |",
		"| router/rtr4 | — | — | on |",
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
		n := strings.Count(line, "|")
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
	if err := writeJSON(jp, testInfo(), sampleResults()); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Rounds int
		Values map[string]map[string][]*float64
	}
	b, _ = os.ReadFile(jp)
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	v := doc.Values[sNative6][mTCP1]
	if doc.Rounds != 3 || len(v) != 3 || v[1] == nil || *v[1] != 5 || doc.Values[sNative4][mTCP1][0] != nil {
		t.Errorf("json: %s", b)
	}
}
