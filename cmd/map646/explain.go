package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/map646/map646/appliance/metrics"
	"github.com/map646/map646/stack"
	"github.com/map646/map646/stack/xlat"
)

// explainWidth is the width explanations are wrapped to.
const explainWidth = 78

// writeExplanations writes, once per name and in the order of names, what
// the counter means and what to do about it, from table (stack's
// explanations). A name the table lacks (a daemon newer than this binary)
// says so.
func writeExplanations(w io.Writer, names []string, table []stack.Explanation) {
	var done []string
	for _, n := range names {
		if slices.Contains(done, n) {
			continue
		}
		done = append(done, n)
		i := slices.IndexFunc(table, func(e stack.Explanation) bool { return e.Name == n })
		fmt.Fprintln(w)
		if i < 0 {
			fmt.Fprintf(w, "  %s: no explanation in this map646 binary (is the daemon newer?)\n", n)
			continue
		}
		e := table[i]
		writeWrapped(w, "  "+e.Name+": ", "    ", plainText(e.Meaning))
		writeWrapped(w, "    what to do: ", "    ", plainText(e.Action))
	}
}

// plainText is an explanation's Markdown for a terminal: no code quotes.
func plainText(md string) string { return strings.ReplaceAll(md, "`", "") }

// writeWrapped writes text after first, wrapped at explainWidth, the
// following lines indented by indent.
func writeWrapped(w io.Writer, first, indent, text string) {
	line := first
	fresh := true // nothing but the prefix on line yet
	for _, word := range strings.Fields(text) {
		if !fresh && len(line)+1+len(word) > explainWidth {
			fmt.Fprintln(w, line)
			line, fresh = indent, true
		}
		if !fresh {
			line += " "
		}
		line += word
		fresh = false
	}
	fmt.Fprintln(w, line)
}

// explainedCounter is one counter of `stats --explain --json`: its stable
// name, what it means and what to do (Markdown, as in
// docs/configuration.md), and, when a daemon answered, its count; drop
// reasons also give the count per direction.
type explainedCounter struct {
	Name        string            `json:"name"`
	Meaning     string            `json:"meaning"`
	Action      string            `json:"action"`
	Count       *uint64           `json:"count,omitempty"`
	ByDirection map[string]uint64 `json:"by_direction,omitempty"`
}

// explainReport is the whole of `stats --explain --json`.
type explainReport struct {
	// Counts says the counts come from a running daemon; without one the
	// report holds the explanations alone.
	Counts         bool               `json:"counts"`
	DropReasons    []explainedCounter `json:"drop_reasons"`
	LinkCounters   []explainedCounter `json:"link_counters"`
	EngineCounters []explainedCounter `json:"engine_counters"`
}

// unknownMeaning is the meaning of a counter the daemon reports and this
// binary cannot explain (a daemon newer than the binary).
const unknownMeaning = "No explanation in this map646 binary (is the daemon newer?)."

// newExplainReport explains every drop reason, link counter and engine
// counter this binary knows, in their stable order, with the counts of st
// when it is not nil; a counter st has and the binary does not know is
// added at the end of its list.
func newExplainReport(st *metrics.Stats) *explainReport {
	r := &explainReport{Counts: st != nil}
	list := func(es []stack.Explanation) []explainedCounter {
		out := make([]explainedCounter, len(es))
		for i, e := range es {
			out[i] = explainedCounter{Name: e.Name, Meaning: e.Meaning, Action: e.Action}
		}
		return out
	}
	r.DropReasons = list(stack.DropReasons())
	r.LinkCounters = list(stack.LinkCounters())
	r.EngineCounters = list(stack.EngineCounters())
	if st == nil {
		return r
	}
	// find returns the entry of name in *l, adding one if it is unknown.
	find := func(l *[]explainedCounter, name string) *explainedCounter {
		i := slices.IndexFunc(*l, func(c explainedCounter) bool { return c.Name == name })
		if i < 0 {
			*l = append(*l, explainedCounter{Name: name, Meaning: unknownMeaning})
			i = len(*l) - 1
		}
		c := &(*l)[i]
		if c.Count == nil {
			c.Count = new(uint64)
		}
		return c
	}
	drop := func(name string) *explainedCounter {
		c := find(&r.DropReasons, name)
		if c.ByDirection == nil {
			c.ByDirection = map[string]uint64{xlat.Dir46.String(): 0, xlat.Dir64.String(): 0}
		}
		return c
	}
	for i := range r.DropReasons {
		drop(r.DropReasons[i].Name)
	}
	for _, d := range st.Drops {
		c := drop(d.Kind)
		*c.Count += d.Value
		c.ByDirection[d.Dir] += d.Value
	}
	for i := range r.LinkCounters {
		find(&r.LinkCounters, r.LinkCounters[i].Name)
	}
	for _, l := range st.Link {
		*find(&r.LinkCounters, l.Kind).Count = l.Value
	}
	for name, v := range map[string]uint64{"emitted": st.Emitted, "hairpinned": st.Hairpinned, "rate_limited": st.RateLimited} {
		*find(&r.EngineCounters, name).Count = v
	}
	return r
}
