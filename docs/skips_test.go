package docs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// skipCondition names what an `if COND { ...t.Skip(...) }` at the top
// level of a test function depends on, when it is one of the deliberate
// modes docs/testing.md lists: "race" (the raceEnabled constant of a
// package's race_on/race_off files) or "short" (testing.Short()). It
// returns "" for anything else (capability checks go through
// testenv.SkipOrFail and are not listed).
func skipCondition(cond ast.Expr) string {
	switch c := cond.(type) {
	case *ast.Ident:
		if c.Name == "raceEnabled" {
			return "race"
		}
	case *ast.CallExpr:
		if sel, ok := c.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Short" {
			if x, ok := sel.X.(*ast.Ident); ok && x.Name == "testing" {
				return "short"
			}
		}
	}
	return ""
}

// skipsInBody reports whether block calls X.Skip or X.Skipf directly.
func skipsInBody(block *ast.BlockStmt) bool {
	for _, st := range block.List {
		es, ok := st.(*ast.ExprStmt)
		if !ok {
			continue
		}
		call, ok := es.X.(*ast.CallExpr)
		if !ok {
			continue
		}
		if sel, ok := call.Fun.(*ast.SelectorExpr); ok && (sel.Sel.Name == "Skip" || sel.Sel.Name == "Skipf") {
			return true
		}
	}
	return false
}

// deliberateSkips returns the tests in the Go source src that skip
// themselves under -race or -short, by the name of the test.
func deliberateSkips(t *testing.T, name string, src []byte) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), name, src, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Body == nil || !strings.HasPrefix(fn.Name.Name, "Test") {
			continue
		}
		for _, st := range fn.Body.List {
			ifs, ok := st.(*ast.IfStmt)
			if !ok {
				continue
			}
			if why := skipCondition(ifs.Cond); why != "" && skipsInBody(ifs.Body) {
				out[fn.Name.Name] = why
			}
		}
	}
	return out
}

func TestDeliberateSkipsFound(t *testing.T) {
	src := `package p
import "testing"
func TestRace(t *testing.T) {
	if raceEnabled {
		t.Skip("allocates")
	}
}
func TestShort(t *testing.T) {
	if testing.Short() {
		t.Skipf("big")
	}
}
func TestNotRace(t *testing.T) {
	if !raceEnabled {
		t.Skip("only under race")
	}
}
func TestNoSkip(t *testing.T) {
	if raceEnabled {
		t.Log("x")
	}
}
func helper(t *testing.T) {
	if raceEnabled {
		t.Skip("x")
	}
}
`
	got := deliberateSkips(t, "p_test.go", []byte(src))
	want := map[string]string{"TestRace": "race", "TestShort": "short"}
	if len(got) != len(want) || got["TestRace"] != "race" || got["TestShort"] != "short" {
		t.Errorf("found %v, want %v", got, want)
	}
}

// TestDeliberateSkipsListed: every test that skips itself under the race
// detector or -short is named in docs/testing.md's "Deliberate skips",
// which says what `make test-race` leaves out and why; a new one must be
// added there.
func TestDeliberateSkipsListed(t *testing.T) {
	b, err := os.ReadFile("testing.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "## Deliberate skips")
	if start < 0 {
		t.Fatal(`testing.md has no "## Deliberate skips" section`)
	}
	section := doc[start+1:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	found := map[string]string{}
	err = filepath.WalkDir("..", func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() && (e.Name() == ".git" || e.Name() == "testdata" || e.Name() == "out" || e.Name() == "bin" || e.Name() == "third_party") {
			return filepath.SkipDir
		}
		if e.IsDir() || !strings.HasSuffix(p, "_test.go") || p == filepath.Join("..", "docs", "skips_test.go") {
			return nil
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for name, why := range deliberateSkips(t, p, src) {
			found[name] = why + " in " + p
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) < 10 {
		t.Fatalf("found %d tests that skip under -race or -short; the checkout has over 15", len(found))
	}
	names := make([]string, 0, len(found))
	for n := range found {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if !strings.Contains(section, "`"+n+"`") {
			t.Errorf("%s skips under %s; docs/testing.md's \"Deliberate skips\" does not name it", n, found[n])
		}
	}
}
