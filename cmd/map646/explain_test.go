package main

import (
	"encoding/json"
	"net"
	"path/filepath"
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
		find(stack.EngineCounters(), "emitted"), find(stack.EngineCounters(), "rate_limited"),
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

// fakeDaemon answers one "stats" request on a Unix socket with st, as the
// daemon's control socket does, and returns the socket's path.
func fakeDaemon(t *testing.T, st *metrics.Stats) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var req struct{ Command string }
		if json.NewDecoder(c).Decode(&req) != nil || req.Command != "stats" {
			return
		}
		json.NewEncoder(c).Encode(map[string]any{"ok": true, "stats": st})
	}()
	return sock
}

// runStatsCmd runs `map646 stats` with args and returns its stdout and
// stderr.
func runStatsCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := newStatsCmd()
	var out, errOut strings.Builder
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

// Issue 10: `stats --explain --json` gives every drop reason, link counter
// and engine counter with its meaning and what to do, and the current
// counts when a daemon answers (drops also per direction); a counter the
// binary does not know is listed, flagged. Without a daemon, the
// explanations alone, and stderr says why there are no counts.
func TestStatsExplainJSON(t *testing.T) {
	st := &metrics.Stats{
		Version: "test", Started: time.Unix(0, 0),
		Drops: []metrics.Count{
			{Dir: "4to6", Kind: "src_illegal", Value: 1},
			{Dir: "6to4", Kind: "src_illegal", Value: 2},
			{Dir: "6to4", Kind: "from_the_future", Value: 4},
		},
		Link:        []metrics.Count{{Kind: "reads", Value: 9}, {Kind: "link_chatter", Value: 2}},
		Emitted:     5,
		Hairpinned:  6,
		RateLimited: 7,
	}
	type counter struct {
		Name, Meaning, Action string
		Count                 *uint64
		ByDirection           map[string]uint64 `json:"by_direction"`
	}
	type report struct {
		Counts         bool
		DropReasons    []counter `json:"drop_reasons"`
		LinkCounters   []counter `json:"link_counters"`
		EngineCounters []counter `json:"engine_counters"`
	}
	decode := func(s string) report {
		t.Helper()
		var r report
		dec := json.NewDecoder(strings.NewReader(s))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("not the JSON report: %v\n%s", err, s)
		}
		return r
	}
	// Every explanation of the binary, in order, then the unknown ones.
	same := func(what string, got []counter, want []stack.Explanation, extra int) {
		t.Helper()
		if len(got) != len(want)+extra {
			t.Fatalf("%s: %d entries, want %d + %d", what, len(got), len(want), extra)
		}
		for i, e := range want {
			if g := got[i]; g.Name != e.Name || g.Meaning != e.Meaning || g.Action != e.Action {
				t.Errorf("%s %d: %+v, want %+v", what, i, g, e)
			}
		}
	}
	count := func(l []counter, name string) (uint64, map[string]uint64) {
		t.Helper()
		for _, c := range l {
			if c.Name == name {
				if c.Count == nil {
					t.Fatalf("%s has no count", name)
				}
				return *c.Count, c.ByDirection
			}
		}
		t.Fatalf("no entry %s", name)
		return 0, nil
	}

	out, errOut, err := runStatsCmd(t, "--explain", "--json", "--control-socket", fakeDaemon(t, st))
	if err != nil || errOut != "" {
		t.Fatalf("with a daemon: %v, stderr %q", err, errOut)
	}
	r := decode(out)
	if !r.Counts {
		t.Error("counts false with a daemon")
	}
	same("drop_reasons", r.DropReasons, stack.DropReasons(), 1)
	same("link_counters", r.LinkCounters, stack.LinkCounters(), 0)
	same("engine_counters", r.EngineCounters, stack.EngineCounters(), 0)
	if n, by := count(r.DropReasons, "src_illegal"); n != 3 || by["4to6"] != 1 || by["6to4"] != 2 {
		t.Errorf("src_illegal %d %v, want 3 {4to6:1 6to4:2}", n, by)
	}
	if n, by := count(r.DropReasons, "too_big"); n != 0 || len(by) != 2 {
		t.Errorf("too_big %d %v, want 0 in both directions", n, by)
	}
	if last := r.DropReasons[len(r.DropReasons)-1]; last.Name != "from_the_future" || last.Meaning != unknownMeaning || *last.Count != 4 {
		t.Errorf("the unknown reason: %+v", last)
	}
	if n, _ := count(r.LinkCounters, "reads"); n != 9 {
		t.Errorf("reads %d", n)
	}
	for name, want := range map[string]uint64{"emitted": 5, "hairpinned": 6, "rate_limited": 7} {
		if n, _ := count(r.EngineCounters, name); n != want {
			t.Errorf("%s %d, want %d", name, n, want)
		}
	}

	out, errOut, err = runStatsCmd(t, "--explain", "--json", "--control-socket", filepath.Join(t.TempDir(), "none.sock"))
	if err != nil || !strings.Contains(errOut, "without counts: no running map646") {
		t.Fatalf("without a daemon: %v, stderr %q", err, errOut)
	}
	r = decode(out)
	if r.Counts || strings.Contains(out, `"count"`) || strings.Contains(out, "by_direction") {
		t.Errorf("counts without a daemon:\n%s", out)
	}
	same("drop_reasons", r.DropReasons, stack.DropReasons(), 0)
	same("link_counters", r.LinkCounters, stack.LinkCounters(), 0)
	same("engine_counters", r.EngineCounters, stack.EngineCounters(), 0)

	// --json alone still needs the daemon.
	if _, _, err := runStatsCmd(t, "--json", "--control-socket", filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Error("stats --json without a daemon succeeded")
	}
}
