package main

// The README's promises that code can check: its layout table and its
// command list. They live here, beside the command tree they name.

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// checkout is the root of the checkout, seen from this package.
const checkout = "../.."

// readmeSection returns the text of README.md's "## heading" section.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(checkout, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## "+heading+"\n")
	if !ok {
		t.Fatalf("README.md has no \"## %s\" section", heading)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	return section
}

// TestREADMEShowsEveryCommand: the README's "Using it" section shows every
// command of the binary's tree (cobra's completion included, help and
// completion's per-shell commands aside) as "map646 <command path>", so that a new command cannot ship
// undocumented there.
func TestREADMEShowsEveryCommand(t *testing.T) {
	using := readmeSection(t, "Using it")
	root := newRootCommand()
	root.InitDefaultCompletionCmd()
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Name() == "help" {
				continue
			}
			n++
			if path := sub.CommandPath(); !strings.Contains(using, path+" ") && !strings.Contains(using, path+"\n") {
				t.Errorf("README.md's \"Using it\" does not show %q (%s)", path, sub.Short)
			}
			if sub.Name() != "completion" { // its shells are cobra's, not ours
				walk(sub)
			}
		}
	}
	walk(root)
	if n < 12 {
		t.Errorf("walked %d commands; the tree has at least 12", n)
	}
}

// layoutRow matches a row of the README's layout table and captures its
// first cell, the folders (`a/`, `b/`).
var layoutRow = regexp.MustCompile("(?m)^\\| ((?:`[^`]+/`(?:, )?)+) \\|")

// readmeLayout returns the folders the README's layout table lists,
// without their trailing slashes.
func readmeLayout(t *testing.T) []string {
	t.Helper()
	section := readmeSection(t, "Layout")
	var dirs []string
	for _, m := range layoutRow.FindAllStringSubmatch(section, -1) {
		for _, d := range strings.Split(m[1], ", ") {
			dirs = append(dirs, strings.TrimSuffix(strings.Trim(d, "`"), "/"))
		}
	}
	if len(dirs) == 0 {
		t.Fatal("README.md's layout table has no rows")
	}
	return dirs
}

// TestREADMELayoutIsTrue: every folder the README's layout table lists
// exists; every top-level folder of the checkout (but build output that
// .gitignore names) is listed or holds a listed one; every folder with Go
// code is listed or lies inside a listed one.
func TestREADMELayoutIsTrue(t *testing.T) {
	listed := map[string]bool{}
	for _, d := range readmeLayout(t) {
		listed[d] = true
		if fi, err := os.Stat(filepath.Join(checkout, d)); err != nil || !fi.IsDir() {
			t.Errorf("README layout lists %s/, which is not a folder of the checkout", d)
		}
	}
	covered := func(dir string) bool {
		for d := dir; d != "."; d = filepath.Dir(d) {
			if listed[filepath.ToSlash(d)] {
				return true
			}
		}
		return false
	}
	ignored := map[string]bool{".git": true}
	if b, err := os.ReadFile(filepath.Join(checkout, ".gitignore")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			if strings.HasSuffix(l, "/") {
				ignored[strings.Trim(l, "/")] = true
			}
		}
	}
	top, err := os.ReadDir(checkout)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range top {
		inside := false // a listed folder lies inside it (cmd/ by cmd/map646/)
		for d := range listed {
			inside = inside || strings.HasPrefix(d, e.Name()+"/")
		}
		if e.IsDir() && !ignored[e.Name()] && !covered(e.Name()) && !inside {
			t.Errorf("top-level folder %s/ is missing from the README's layout table", e.Name())
		}
	}
	reported := map[string]bool{}
	err = filepath.WalkDir(checkout, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(checkout, p)
		if e.IsDir() && (ignored[rel] || e.Name() == "testdata") {
			return filepath.SkipDir
		}
		if dir := filepath.Dir(rel); !e.IsDir() && strings.HasSuffix(p, ".go") && !covered(dir) && !reported[dir] {
			reported[dir] = true
			t.Errorf("%s has Go code but no row of the README's layout table covers it", dir)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestLayoutRowParser: the row pattern takes the folder cells, one or
// several, and nothing else.
func TestLayoutRowParser(t *testing.T) {
	in := "| folder | what lives there |\n|---|---|\n| `a/` | one |\n| `b/`, `c/d/` | two |\n| not a folder | x |\n"
	var got []string
	for _, m := range layoutRow.FindAllStringSubmatch(in, -1) {
		got = append(got, m[1])
	}
	if strings.Join(got, ";") != "`a/`;`b/`, `c/d/`" {
		t.Errorf("rows %q", got)
	}
}
