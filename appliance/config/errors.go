package config

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// Error is the error Parse and Load return for an invalid configuration: all
// the diagnostics found, not just the first. errors.As(err, &diags) with an
// hcl.Diagnostics works too, for callers that render them with HCL's own
// writers (Files holds the sources for those).
type Error struct {
	Diagnostics hcl.Diagnostics
	Files       map[string]*hcl.File // sources by file name (the HCL file and the mappings file)
}

// Error formats one diagnostic per line as "file:line:col: summary: detail".
func (e *Error) Error() string {
	var b strings.Builder
	for i, d := range e.Diagnostics {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(FormatDiagnostic(d))
	}
	return b.String()
}

// Unwrap gives the diagnostics to errors.As.
func (e *Error) Unwrap() error { return e.Diagnostics }

// FormatDiagnostic renders d on one line: "file:line:col: summary: detail",
// with "warning: " before the summary for warnings.
func FormatDiagnostic(d *hcl.Diagnostic) string {
	var b strings.Builder
	if d.Subject != nil {
		fmt.Fprintf(&b, "%s:%d:%d: ", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
	}
	if d.Severity == hcl.DiagWarning {
		b.WriteString("warning: ")
	}
	b.WriteString(clipWords(d.Summary))
	if d.Detail != "" {
		b.WriteString(": ")
		b.WriteString(clipWords(strings.Join(strings.Fields(d.Detail), " ")))
	}
	return b.String()
}

// maxQuote is the most of one word or source line a diagnostic quotes: a
// hostile or broken file (a 5 MB CSV line) must not be echoed whole.
const maxQuote = 120

// clipWords shortens each space-separated word longer than maxQuote runes
// to its first maxQuote runes and an ellipsis.
func clipWords(s string) string {
	if len(s) <= maxQuote {
		return s
	}
	words := strings.Split(s, " ")
	for i, w := range words {
		if r := []rune(w); len(r) > maxQuote {
			words[i] = string(r[:maxQuote]) + "…"
		}
	}
	return strings.Join(words, " ")
}

// WriteDiagnostics writes each diagnostic as its one-line form followed by
// the source line it points at with the offending range marked by carets,
// the way compilers do:
//
//	map646.hcl:3:12: Invalid RFC 6052 prefix: ...
//	    3 |   prefix = "2001:db8:64::/97"
//	      |            ^^^^^^^^^^^^^^^^^^
func WriteDiagnostics(w io.Writer, diags hcl.Diagnostics, files map[string]*hcl.File) error {
	bw := bufio.NewWriter(w)
	for _, d := range diags {
		fmt.Fprintln(bw, FormatDiagnostic(d))
		if d.Subject != nil {
			if f := files[d.Subject.Filename]; f != nil {
				writeSnippet(bw, f.Bytes, *d.Subject)
			}
		}
	}
	return bw.Flush()
}

// writeSnippet prints the first line of r and marks r's columns on it.
func writeSnippet(w io.Writer, src []byte, r hcl.Range) {
	if r.Start.Byte < 0 || r.Start.Byte > len(src) {
		return
	}
	start := bytes.LastIndexByte(src[:r.Start.Byte], '\n') + 1
	end := bytes.IndexByte(src[start:], '\n')
	if end < 0 {
		end = len(src)
	} else {
		end += start
	}
	line := []rune(strings.TrimRight(string(src[start:end]), "\r"))
	n := 1
	if r.End.Line == r.Start.Line && r.End.Column > r.Start.Column {
		n = r.End.Column - r.Start.Column
	} else if r.End.Line != r.Start.Line {
		n = max(1, len(line)-r.Start.Column+1)
	}
	// A long line is shown as a window of maxQuote characters that starts
	// a little before the range, with ellipses where it was cut.
	first := 1 // the column of line[0]
	var lead, tail string
	if len(line) > maxQuote {
		from := max(0, min(r.Start.Column-1-maxQuote/6, len(line)-maxQuote))
		line, first = line[from:from+maxQuote], from+1
		if from > 0 {
			lead = "…"
		}
		if from+maxQuote < len(strings.TrimRight(string(src[start:end]), "\r")) {
			tail = "…"
		}
		n = max(1, min(n, first+maxQuote-r.Start.Column))
	}
	// Columns count characters; tabs keep their width by being copied.
	var pad strings.Builder
	if lead != "" {
		pad.WriteByte(' ')
	}
	col := first
	for _, ch := range line {
		if col >= r.Start.Column {
			break
		}
		if ch == '\t' {
			pad.WriteByte('\t')
		} else {
			pad.WriteByte(' ')
		}
		col++
	}
	num := fmt.Sprint(r.Start.Line)
	fmt.Fprintf(w, "%5s | %s%s%s\n", num, lead, string(line), tail)
	fmt.Fprintf(w, "%5s | %s%s\n", "", pad.String(), strings.Repeat("^", n))
}
