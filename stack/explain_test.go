package stack

import (
	"flag"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/map646/map646/stack/xlat"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite docs/configuration.md's drop reason and link counter tables from the explanations")

// TestEveryCounterIsExplained: every engine drop reason and every link
// counter has a meaning and an action, under its stable name.
func TestEveryCounterIsExplained(t *testing.T) {
	reasons := DropReasons()
	if len(reasons) != int(xlat.NumReasons)-1 {
		t.Fatalf("%d reasons explained, the engine has %d", len(reasons), xlat.NumReasons-1)
	}
	for i, e := range reasons {
		if r := xlat.Reason(i + 1); e.Name != r.String() {
			t.Errorf("reason %d named %q, want %q", r, e.Name, r)
		}
		if e.Meaning == "" || e.Action == "" {
			t.Errorf("drop reason %s has no explanation: %+v", e.Name, e)
		}
	}
	for r := range reasonTexts {
		if r == xlat.ReasonNone || r >= xlat.NumReasons {
			t.Errorf("text for reason %d, which the engine does not have", r)
		}
	}

	// Every counter of the engine without labels (neither a translated
	// packet count nor a drop) is explained, in the order Visit gives them.
	var tot xlat.Totals
	var unlabelled []string
	tot.Visit(func(metric string, labels [][2]string, _ uint64) {
		if len(labels) == 0 {
			unlabelled = append(unlabelled, metric)
		}
	})
	var explained []string
	for _, e := range EngineCounters() {
		explained = append(explained, e.Name)
		if e.Meaning == "" || e.Action == "" {
			t.Errorf("engine counter %s has no explanation: %+v", e.Name, e)
		}
	}
	if !slices.Equal(explained, unlabelled) {
		t.Errorf("engine counters explained %v, the engine has %v", explained, unlabelled)
	}

	// Every LinkStats field is visited once, under its own name.
	var s LinkStats
	v := reflect.ValueOf(&s).Elem()
	for i := range v.NumField() {
		v.Field(i).SetUint(uint64(i + 1))
	}
	seen := map[uint64]string{}
	VisitLinkStats(&s, func(name string, n uint64) {
		if prev, ok := seen[n]; ok {
			t.Errorf("%s and %s read the same field", prev, name)
		}
		seen[n] = name
	})
	if len(seen) != v.NumField() {
		t.Errorf("%d link counters visited, LinkStats has %d fields", len(seen), v.NumField())
	}
	for i, e := range LinkCounters() {
		if e.Name == "" || e.Meaning == "" || e.Action == "" {
			t.Errorf("link counter %d has no explanation: %+v", i, e)
		}
		if got := seen[linkCounters[i].get(&s)]; got != e.Name {
			t.Errorf("link counter %s visited as %s", e.Name, got)
		}
	}
}

// explainTable is the Markdown table of explanations.
func explainTable(head string, es []Explanation) string {
	var b strings.Builder
	b.WriteString(head + "\n|---|---|---|\n")
	for _, e := range es {
		b.WriteString("| `" + e.Name + "` | " + e.Meaning + " | " + e.Action + " |\n")
	}
	return b.String()
}

// TestDocsExplainEveryCounter: docs/configuration.md's drop reason and
// link counter tables are exactly the explanations (go test -run
// TestDocsExplainEveryCounter -update-docs ./stack rewrites them).
func TestDocsExplainEveryCounter(t *testing.T) {
	const path = "../docs/configuration.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, tc := range []struct {
		head  string
		table string
	}{
		{"| reason | the packet was not translated because | what to do |", explainTable("| reason | the packet was not translated because | what to do |", DropReasons())},
		{"| counter | meaning | what to do |", explainTable("| counter | meaning | what to do |", LinkCounters())},
		{"| engine counter | meaning | what to do |", explainTable("| engine counter | meaning | what to do |", EngineCounters())},
	} {
		start := strings.Index(doc, tc.head+"\n")
		if start < 0 {
			t.Errorf("%s: no table headed %q", path, tc.head)
			continue
		}
		end := strings.Index(doc[start:], "\n\n")
		if end < 0 {
			end = len(doc) - start
		}
		got := doc[start : start+end+1]
		if got == tc.table {
			continue
		}
		if *updateDocs {
			doc = doc[:start] + tc.table + doc[start+end+1:]
			continue
		}
		t.Errorf("%s: the table headed %q differs from the explanations in stack/explain.go; want\n%s", path, tc.head, tc.table)
	}
	if *updateDocs && doc != string(b) {
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
