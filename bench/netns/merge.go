package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// savedRun is what writeJSON saves and -merge reads back: one type for
// both, so a field added to the one is read back by the other.
type savedRun struct {
	Date     time.Time `json:"date"`
	Kernel   string    `json:"kernel"`
	CPU      string    `json:"cpu"`
	Cores    int       `json:"cores"`
	Rounds   int       `json:"rounds"`
	Seconds  float64   `json:"seconds_per_test"`
	Pings    int       `json:"pings"`
	Mappings int       `json:"mappings"`
	// Interleave is the measuring order (-interleave).
	Interleave string                           `json:"interleave"`
	Values     map[string]map[string][]*float64 `json:"values"`
	// RTTs: column -> ping metric -> round -> every echo's RTT, ms.
	RTTs map[string]map[string][][]float64 `json:"rtts_ms"`
	// Flows: each round's ports and ping identifiers given to every
	// setup; Ports: column -> metric -> round -> the client port
	// iperf3 reported.
	Flows []flowIDs                   `json:"flows"`
	Ports map[string]map[string][]int `json:"client_ports"`
	// Pings1s is -pings-1s; files written before it was saved lack it,
	// and a merge then counts the echoes instead.
	Pings1s int `json:"pings_1s,omitempty"`
}

// mergeRuns reads the JSON files of several runs of the same setups and
// tests (a long A/B split into runs short enough to hold the heavy lock)
// and renders one report over all their rounds. The rounds keep their
// order by parity: a run of an odd number of rounds is followed by an
// empty round, so that every round of the merged results stands at an
// index of its run's parity and crossoverRatio sees the setups' order
// right (schedule reverses it every other round of a run).
func mergeRuns(paths []string) (runInfo, *results, error) {
	var runs []savedRun
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return runInfo{}, nil, err
		}
		var s savedRun
		if err := json.Unmarshal(b, &s); err != nil {
			return runInfo{}, nil, fmt.Errorf("%s: %w", p, err)
		}
		if s.Rounds < 1 {
			return runInfo{}, nil, fmt.Errorf("%s: no rounds", p)
		}
		if len(runs) > 0 && s.Mappings != runs[0].Mappings {
			return runInfo{}, nil, fmt.Errorf("%s: %d mappings, %s has %d: an A/A run and a real one do not merge", p, s.Mappings, paths[0], runs[0].Mappings)
		}
		runs = append(runs, s)
	}
	if len(runs) == 0 {
		return runInfo{}, nil, fmt.Errorf("-merge: no files")
	}
	total := 0
	for _, s := range runs {
		total += s.Rounds + s.Rounds%2
	}
	cols := map[string]bool{}
	for _, s := range runs {
		for c := range s.Values {
			cols[c] = true
		}
	}
	r := newResults(sortedKeys(cols), total)
	base := 0
	var flows []flowIDs
	for _, s := range runs {
		// Each run's flows, and none for the empty round after an odd
		// run: the report tells from them whether the setups of a round
		// shared their client ports and ping identifiers.
		f := slices.Clone(s.Flows)
		if len(f) > s.Rounds {
			f = f[:s.Rounds]
		}
		f = append(f, make([]flowIDs, s.Rounds+s.Rounds%2-len(f))...)
		flows = append(flows, f...)
		for c, ms := range s.Values {
			for m, vs := range ms {
				if r.Values[c][m] == nil {
					continue // a metric this harness no longer knows
				}
				for i, v := range vs {
					if v != nil && i < s.Rounds {
						r.set(c, m, base+i, *v)
					}
				}
			}
		}
		for c, ms := range s.RTTs {
			for m, rounds := range ms {
				for i, rtts := range rounds {
					if len(rtts) > 0 && i < s.Rounds {
						r.setRTTs(c, m, base+i, rtts)
					}
				}
			}
		}
		base += s.Rounds + s.Rounds%2
	}
	// Conditions and setups from the columns, in their usual order.
	var conds []condition
	for _, c := range []condition{condGRO, condNoGRO, condUDPGRO, condGROList, condNAPI} {
		for k := range cols {
			if strings.HasPrefix(k, c.Key+"/") {
				conds = append(conds, c)
				break
			}
		}
	}
	var keys []string
	for _, k := range knownSetups {
		for _, c := range conds {
			if cols[col(c.Key, k)] {
				keys = append(keys, k)
				break
			}
		}
	}
	first := runs[0]
	pings1s := first.Pings1s
	if pings1s == 0 {
		for _, ms := range r.RTTs {
			for _, round := range ms[mRTTSlow] {
				pings1s = max(pings1s, len(round))
			}
		}
	}
	o := options{Setups: keys, Mappings: first.Mappings, TaygaFork: "merged"}
	setups, err := buildSetups(o, "")
	if err != nil {
		return runInfo{}, nil, err
	}
	info := runInfo{Date: first.Date, Kernel: first.Kernel, CPUModel: first.CPU, Cores: first.Cores,
		Rounds: total, Duration: time.Duration(first.Seconds * float64(time.Second)), Pings: first.Pings, Pings1s: pings1s, Flows: flows,
		Mappings: first.Mappings, Setups: setups, Conds: conds, Interleave: first.Interleave,
		Translated: map[string]bool{}}
	for c := range cols {
		k := c[strings.Index(c, "/")+1:]
		if k != sNative6 && k != sNative4 {
			info.Translated[c] = true
		}
	}
	return info, r, nil
}

// mergedNote heads a merged report: which runs it pooled.
func mergedNote(paths []string, rounds int) string {
	var n []string
	for _, p := range paths {
		n = append(n, "`"+filepath.Base(p)+"`")
	}
	return fmt.Sprintf("Merged from %d runs (%s): %d rounds in all, counting the empty round that follows a run of an odd number of rounds to keep the setups' order by round parity.\n\n", len(paths), strings.Join(n, ", "), rounds)
}
