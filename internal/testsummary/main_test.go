package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRealGoTest runs `go test -json` on testdata/fixture (one test of each
// outcome) and checks the counts, the go test lines passed through, the
// failing test's output and the skip reasons: the format is go test's, not
// a copy of it.
func TestRealGoTest(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("go test runs this test, so go must be on PATH:", err)
	}
	cmd := exec.Command(goBin, "test", "-json", "-count=1", ".")
	cmd.Dir = filepath.Join("testdata", "fixture")
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	raw, err := cmd.Output()
	if err == nil {
		t.Fatalf("go test on the fixture succeeded; TestFails should fail it:\n%s", raw)
	}
	var live bytes.Buffer
	s := newSummary(&live)
	if err := s.read(bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	p := s.pkgs["fixture"]
	if p == nil {
		t.Fatalf("no package fixture in %v", s.order)
	}
	// TestPasses, TestFails, TestSkips, TestParent, TestParent/ok, TestParent/skipped.
	if got, want := *p, (pkgCount{run: 6, pass: 3, fail: 1, skip: 2, failed: true}); got != want {
		t.Errorf("counts %+v, want %+v", got, want)
	}
	if !s.failed() {
		t.Error("failed() = false")
	}
	for _, want := range []string{"--- FAIL: TestFails", "before the failure", "the fixture's failure", "FAIL\tfixture"} {
		if !strings.Contains(live.String(), want) {
			t.Errorf("live output lacks %q:\n%s", want, live.String())
		}
	}
	for _, not := range []string{"TestPasses", "=== RUN", "\nPASS\n"} {
		if strings.Contains(live.String(), not) {
			t.Errorf("live output has %q, which go test without -v does not print:\n%s", not, live.String())
		}
	}
	var got []string
	for _, sk := range s.skips {
		got = append(got, sk.test+": "+sk.why)
	}
	want := []string{"TestSkips: fixture_test.go:15: the fixture's skip reason", "TestParent/skipped: fixture_test.go:20: subtest skip"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("skips:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var out bytes.Buffer
	s.print(&out)
	if !strings.HasSuffix(out.String(), "skip 2\nFAIL\n") {
		t.Errorf("summary does not close with go test's FAIL line:\n%s", out.String())
	}
	for _, want := range []string{
		"fixture  6    3     1     2     FAIL",
		"TestSkips: fixture_test.go:15: the fixture's skip reason",
		"go test: 1 packages with tests (1 failed, 0 without test files); tests run 6: pass 3, fail 1, skip 2",
	} {
		if !strings.Contains(squash(out.String()), squash(want)) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

// TestEvents covers what the fixture cannot show cheaply: build failures,
// a binary that crashes mid-test, lines that are not JSON, packages
// without tests and packages whose every test skipped.
func TestEvents(t *testing.T) {
	for _, tc := range []struct {
		name      string
		in        string
		failed    bool
		live      []string // substrings of what is passed through
		summary   []string // substrings of the table
		notInLive []string
	}{{
		name: "build failure",
		in: `{"ImportPath":"m/a [m/a.test]","Action":"build-output","Output":"a/a.go:3:1: syntax error\n"}
{"ImportPath":"m/a [m/a.test]","Action":"build-fail"}
{"Action":"start","Package":"m/a"}
{"Action":"output","Package":"m/a","Output":"FAIL\tm/a [build failed]\n"}
{"Action":"fail","Package":"m/a","FailedBuild":"m/a [m/a.test]"}
`,
		failed:  true,
		live:    []string{"a/a.go:3:1: syntax error", "FAIL\tm/a [build failed]"},
		summary: []string{"m/a  0    0     0     0     FAIL", "1 packages with tests (1 failed"},
	}, {
		name: "crash mid-test",
		in: `{"Action":"run","Package":"m/b","Test":"TestBoom"}
{"Action":"output","Package":"m/b","Test":"TestBoom","Output":"=== RUN   TestBoom\n"}
{"Action":"output","Package":"m/b","Test":"TestBoom","Output":"panic: boom\n"}
{"Action":"output","Package":"m/b","Output":"FAIL\tm/b\t0.01s\n"}
{"Action":"fail","Package":"m/b"}
`,
		failed: true,
		live:   []string{"panic: boom", "FAIL\tm/b"},
	}, {
		name: "not json, no test files, all skipped",
		in: `go: warning: something go test says itself
{"Action":"output","Package":"m/c","Output":"?   \tm/c\t[no test files]\n"}
{"Action":"skip","Package":"m/c"}
{"Action":"output","Package":"m/d","Test":"TestRoot","Output":"    d_test.go:9: needs root\n"}
{"Action":"output","Package":"m/d","Test":"TestRoot","Output":"--- SKIP: TestRoot (0.00s)\n"}
{"Action":"skip","Package":"m/d","Test":"TestRoot"}
{"Action":"output","Package":"m/d","Output":"PASS\n"}
{"Action":"output","Package":"m/d","Output":"ok  \tm/d\t0.01s\n"}
{"Action":"pass","Package":"m/d"}
`,
		live:      []string{"go: warning: something go test says itself", "[no test files]", "ok  \tm/d"},
		notInLive: []string{"PASS\n", "needs root"},
		summary:   []string{"m/d  1    0     0     1     all skipped", "m/d TestRoot: d_test.go:9: needs root", "(0 failed, 1 without test files); tests run 1: pass 0, fail 0, skip 1"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var live, out bytes.Buffer
			s := newSummary(&live)
			if err := s.read(strings.NewReader(tc.in)); err != nil {
				t.Fatal(err)
			}
			s.print(&out)
			if closed := strings.HasSuffix(out.String(), "\nFAIL\n"); closed != tc.failed {
				t.Errorf("closing FAIL line printed = %v, want %v:\n%s", closed, tc.failed, out.String())
			}
			if s.failed() != tc.failed {
				t.Errorf("failed() = %v, want %v", s.failed(), tc.failed)
			}
			for _, w := range tc.live {
				if !strings.Contains(live.String(), w) {
					t.Errorf("live output lacks %q:\n%s", w, live.String())
				}
			}
			for _, w := range tc.notInLive {
				if strings.Contains(live.String(), w) {
					t.Errorf("live output has %q:\n%s", w, live.String())
				}
			}
			for _, w := range tc.summary {
				if !strings.Contains(squash(out.String()), squash(w)) {
					t.Errorf("summary lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

// squash makes runs of spaces one, so that checks of the table do not
// depend on column widths.
func squash(s string) string {
	var b strings.Builder
	for i, l := range strings.Split(s, "\n") {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(strings.Join(strings.Fields(l), " "))
	}
	return b.String()
}
