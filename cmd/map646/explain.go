package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/map646/map646/stack"
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
