// Package docs holds the user documentation; its tests keep the HCL
// examples in the Markdown files valid and the tests they cite defined.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/map646/map646/appliance/config"
)

// hclBlock is one ```hcl fenced block of a Markdown file.
type hclBlock struct {
	file string
	line int // of the opening fence
	src  string
}

var fence = regexp.MustCompile("(?m)^```hcl[ \t]*\n((?s:.*?))^```[ \t]*$")

func hclBlocks(t *testing.T, files ...string) []hclBlock {
	t.Helper()
	var out []hclBlock
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range fence.FindAllSubmatchIndex(b, -1) {
			out = append(out, hclBlock{file: f, line: 1 + strings.Count(string(b[:m[0]]), "\n"), src: string(b[m[2]:m[3]])})
		}
	}
	return out
}

// topLevel matches a block that starts at the beginning of a line.
var topLevel = regexp.MustCompile(`(?m)^([a-z_]+)\b`)

// asFile makes a documentation snippet a whole configuration: a lone
// mapping or tun block goes inside a translator, and a file without a
// translator gets the smallest one. What the snippet says is kept as it is.
func asFile(src string) string {
	first := topLevel.FindStringSubmatch(src)
	if first != nil && (first[1] == "mapping" || first[1] == "tun") {
		return "translator {\n  prefix = \"2001:db8:64::/96\"\n" + src + "}\n"
	}
	for _, m := range topLevel.FindAllStringSubmatch(src, -1) {
		if m[1] == "translator" {
			return src
		}
	}
	return src + "\ntranslator {\n  prefix = \"2001:db8:64::/96\"\n}\n"
}

// TestHCLExamples runs every ```hcl block of docs/*.md and README.md
// through the configuration parser: an example an operator copies must be
// valid (single-line blocks with several attributes, for one, are not HCL).
func TestHCLExamples(t *testing.T) {
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../README.md")
	blocks := hclBlocks(t, files...)
	if len(blocks) < 5 {
		t.Fatalf("only %d hcl blocks found in %v", len(blocks), files)
	}
	for _, b := range blocks {
		dir := t.TempDir()
		// Examples name a mappings file; one of only a comment is an
		// empty table (0 bytes is refused as a file cut short).
		if err := os.WriteFile(filepath.Join(dir, "mappings.csv"), []byte("# no mappings\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "example.hcl")
		if _, err := config.Parse([]byte(asFile(b.src)), path); err != nil {
			t.Errorf("%s:%d: the hcl block does not load:\n%v\n%s", b.file, b.line, err, b.src)
		}
	}
}

// TestFenceFinder: the extraction finds blocks and their lines, and a
// broken block is reported (the test above could not fail otherwise).
func TestFenceFinder(t *testing.T) {
	md := filepath.Join(t.TempDir(), "x.md")
	body := "# x\n\n```hcl\ntranslator { prefix = \"2001:db8:64::/96\"  hairpin = \"off\" }\n```\n\ntext\n\n```sh\nls\n```\n```hcl\nmapping {\n  ipv4 = \"198.51.100.10\"\n  ipv6 = \"2001:db8:6::10\"\n}\n```\n"
	if err := os.WriteFile(md, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	bs := hclBlocks(t, md)
	if len(bs) != 2 || bs[0].line != 3 || bs[1].line != 12 {
		t.Fatalf("blocks %+v", bs)
	}
	if _, err := config.Parse([]byte(asFile(bs[0].src)), filepath.Join(t.TempDir(), "a.hcl")); err == nil {
		t.Error("a single-line block with two attributes parsed")
	}
	if _, err := config.Parse([]byte(asFile(bs[1].src)), filepath.Join(t.TempDir(), "b.hcl")); err != nil {
		t.Errorf("a lone mapping block: %v", err)
	}
}

// uncitedRows returns the table rows of a Markdown document (header and
// separator rows excepted) whose last cell names no test, as "line N".
func uncitedRows(md string) []string {
	var bad []string
	lines := strings.Split(md, "\n")
	for i, line := range lines {
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") {
			continue
		}
		if i+1 < len(lines) && strings.HasPrefix(lines[i+1], "|---") {
			continue // a header row
		}
		cells := strings.Split(strings.TrimSuffix(strings.TrimSpace(line), "|"), "|")
		if !testName.MatchString(cells[len(cells)-1]) {
			bad = append(bad, "line "+strconv.Itoa(i+1))
		}
	}
	return bad
}

// TestComplianceRowsCiteTests: every requirement in rfc-compliance.md
// names, in its last column, the test that shows what map646 does (and
// TestCitedTestsExist checks that the test exists); a row without one
// is a behaviour nothing checks.
func TestComplianceRowsCiteTests(t *testing.T) {
	b, err := os.ReadFile("rfc-compliance.md")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n| "); n < 60 {
		t.Fatalf("rfc-compliance.md has %d table rows; it has over 60", n)
	}
	for _, r := range uncitedRows(string(b)) {
		t.Errorf("rfc-compliance.md %s: the row cites no test", r)
	}
	// The check itself finds a row without a test, and passes a header.
	bad := uncitedRows("| requirement | test |\n|---|---|\n| a | `TestX` |\n| b | none |\n")
	if len(bad) != 1 || bad[0] != "line 4" {
		t.Errorf("uncitedRows found %v, want [line 4]", bad)
	}
}
