package main

import (
	"strings"
	"testing"
	"time"

	"github.com/map646/map646/appliance/metrics"
	"github.com/map646/map646/stack"
)

// unwrap joins wrapped lines: runs of white space become one space.
func unwrap(s string) string { return strings.Join(strings.Fields(plainText(s)), " ") }

// TestStatsExplain: with --explain, every drop reason that occurred and
// every link counter shown is followed by its meaning and what to do,
// once; reasons that did not occur are not; a name this binary does not
// know says so. Without it, no explanation is printed.
func TestStatsExplain(t *testing.T) {
	if newStatsCmd().Flags().Lookup("explain") == nil {
		t.Fatal("stats has no --explain flag")
	}
	st := &metrics.Stats{
		Version: "test", Started: time.Unix(0, 0),
		Drops: []metrics.Count{
			{Dir: "4to6", Kind: "src_illegal", Value: 1},
			{Dir: "6to4", Kind: "src_illegal", Value: 2},
			{Dir: "4to6", Kind: "dst_unmapped", Value: 0},
			{Dir: "4to6", Kind: "too_big", Value: 3},
			{Dir: "6to4", Kind: "from_the_future", Value: 4},
		},
		Link: []metrics.Count{{Kind: "reads", Value: 9}, {Kind: "link_chatter", Value: 2}},
	}
	find := func(es []stack.Explanation, name string) stack.Explanation {
		for _, e := range es {
			if e.Name == name {
				return e
			}
		}
		t.Fatalf("no explanation of %s", name)
		return stack.Explanation{}
	}

	var plain strings.Builder
	if err := printStats(&plain, st, time.Unix(10, 0), false); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(plain.String(), "what to do") {
		t.Errorf("explanations without --explain:\n%s", plain.String())
	}

	var b strings.Builder
	if err := printStats(&b, st, time.Unix(10, 0), true); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	flat := unwrap(out)
	for _, e := range []stack.Explanation{
		find(stack.DropReasons(), "src_illegal"), find(stack.DropReasons(), "too_big"),
		find(stack.LinkCounters(), "reads"), find(stack.LinkCounters(), "link_chatter"),
	} {
		want := e.Name + ": " + unwrap(e.Meaning) + " what to do: " + unwrap(e.Action)
		if n := strings.Count(flat, want); n != 1 {
			t.Errorf("%s explained %d times, want once:\n%s", e.Name, n, out)
		}
	}
	if unmapped := find(stack.DropReasons(), "dst_unmapped"); strings.Contains(flat, unwrap(unmapped.Meaning)) {
		t.Errorf("dst_unmapped explained though none were dropped:\n%s", out)
	}
	if !strings.Contains(out, "from_the_future: no explanation in this map646 binary") {
		t.Errorf("an unknown reason is not flagged:\n%s", out)
	}
	for l := range strings.SplitSeq(out, "\n") {
		if len(l) > explainWidth && !strings.Contains(l, " ") {
			continue // one long word cannot be wrapped
		}
		if len(l) > explainWidth && strings.HasPrefix(l, "    ") {
			t.Errorf("explanation line longer than %d: %q", explainWidth, l)
		}
	}
}
