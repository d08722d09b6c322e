package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// testName matches the name of a Go test, benchmark or fuzz target.
var testName = regexp.MustCompile(`\b(?:Test|Benchmark|Fuzz)[A-Z][A-Za-z0-9_]*`)

// testFunc matches where one is defined.
var testFunc = regexp.MustCompile(`(?m)^func ((?:Test|Benchmark|Fuzz)[A-Z][A-Za-z0-9_]*)\(`)

// TestCitedTestsExist: every test, benchmark and fuzz target that
// README.md or docs/*.md names as evidence is defined in the checkout, so
// that a renamed or deleted test cannot leave a document citing what no
// longer checks it.
func TestCitedTestsExist(t *testing.T) {
	defined := map[string]bool{}
	err := filepath.WalkDir("..", func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() && (e.Name() == ".git" || e.Name() == "testdata" || e.Name() == "out" || e.Name() == "bin") {
			return filepath.SkipDir
		}
		if !e.IsDir() && strings.HasSuffix(p, "_test.go") {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, m := range testFunc.FindAllStringSubmatch(string(b), -1) {
				defined[m[1]] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(defined) < 100 {
		t.Fatalf("found %d test functions in the checkout; it has hundreds", len(defined))
	}
	docs, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	cited := 0
	for _, f := range append(docs, "../README.md") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			for _, name := range testName.FindAllString(line, -1) {
				cited++
				if !defined[name] {
					t.Errorf("%s:%d cites %s, which no _test.go file defines", f, i+1, name)
				}
			}
		}
	}
	if cited < 50 {
		t.Errorf("found %d citations of tests in the documents; they have over 100", cited)
	}
}
