// Command testsummary runs `go test -json ...` and prints what go test
// would print without -v (each package's ok/FAIL line, the output of
// failing tests and of build failures), then a count of the tests that
// ran, passed, failed and skipped in each package, and why each skipped
// test skipped. `go test` without -v says "ok" for a package whose tests
// all skipped; this count makes such a run visible.
//
// Usage (from the Makefile's test target):
//
//	go run ./internal/testsummary go test -json -count=1 ./...
//
// It exits with the command's exit status, or 1 if the command succeeded
// but a test failed.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"text/tabwriter"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testsummary go test -json [flags] [packages]")
		os.Exit(2)
	}
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stderr = os.Stdin, os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(2)
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(2)
	}
	s := newSummary(os.Stdout)
	readErr := s.read(stdout)
	waitErr := cmd.Wait()
	s.print(os.Stdout)
	code := 0
	var exit *exec.ExitError
	switch {
	case errors.As(waitErr, &exit):
		code = exit.ExitCode()
	case waitErr != nil:
		fmt.Fprintln(os.Stderr, "testsummary:", waitErr)
		code = 2
	case readErr != nil:
		fmt.Fprintln(os.Stderr, "testsummary:", readErr)
		code = 2
	case s.failed():
		code = 1
	}
	os.Exit(code)
}

// event is one line of `go test -json` (cmd/test2json's TestEvent, plus the
// build events go test adds).
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string // build-output, build-fail
}

// pkgCount is what happened to the tests (and subtests) of one package.
type pkgCount struct {
	run, pass, fail, skip int
	failed                bool // the package failed (a test, a crash, its build)
	noTests               bool
}

type skipped struct{ pkg, test, why string }

type testKey struct{ pkg, test string }

type summary struct {
	live    io.Writer            // where go test's own lines go as they come
	pkgs    map[string]*pkgCount // by import path
	output  map[testKey][]string // output of tests still running
	skips   []skipped            // in the order they happened
	done    map[testKey]bool     // tests that reached pass, fail or skip
	started map[string]bool      // packages seen, for the no-test-files case
	order   []string             // packages in first-seen order
}

func newSummary(live io.Writer) *summary {
	return &summary{live: live, pkgs: map[string]*pkgCount{}, output: map[testKey][]string{},
		done: map[testKey]bool{}, started: map[string]bool{}}
}

func (s *summary) pkg(path string) *pkgCount {
	p := s.pkgs[path]
	if p == nil {
		p = &pkgCount{}
		s.pkgs[path] = p
		s.order = append(s.order, path)
	}
	return p
}

// read consumes the event stream; lines that are not events (go test
// prints a few itself, e.g. when it cannot load a package) pass through.
func (s *summary) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(s.live, "%s\n", line)
			continue
		}
		s.event(e)
	}
	return sc.Err()
}

func (s *summary) event(e event) {
	switch e.Action {
	case "build-output":
		io.WriteString(s.live, e.Output)
		return
	case "build-fail":
		// "m/a [m/a.test]": the package m/a, built for its test binary.
		path, _, _ := strings.Cut(e.ImportPath, " ")
		s.pkg(path).failed = true
		return
	}
	if e.Package == "" {
		return
	}
	p := s.pkg(e.Package)
	if e.Test == "" {
		switch e.Action {
		case "output":
			// Without -v go test prints neither the binary's PASS line
			// nor test progress; everything else at package level (the
			// ok/FAIL line, TestMain's output) it prints.
			if e.Output != "PASS\n" {
				io.WriteString(s.live, e.Output)
			}
			if strings.HasSuffix(e.Output, "[no test files]\n") {
				p.noTests = true
			}
		case "fail":
			p.failed = true
			// A binary that crashed or timed out leaves its running tests
			// without a verdict: show what they printed.
			for k, lines := range s.output {
				if k.pkg == e.Package {
					io.WriteString(s.live, strings.Join(lines, ""))
					delete(s.output, k)
				}
			}
		}
		return
	}
	k := testKey{e.Package, e.Test}
	switch e.Action {
	case "output":
		// -json runs the binary verbosely; go test without -v shows a
		// failing test's output without the progress lines.
		if !strings.HasPrefix(e.Output, "=== ") {
			s.output[k] = append(s.output[k], e.Output)
		}
	case "pass", "fail", "skip":
		if s.done[k] {
			return
		}
		s.done[k] = true
		p.run++
		lines := s.output[k]
		delete(s.output, k)
		switch e.Action {
		case "pass":
			p.pass++
		case "fail":
			p.fail++
			io.WriteString(s.live, strings.Join(lines, ""))
		case "skip":
			p.skip++
			s.skips = append(s.skips, skipped{e.Package, e.Test, skipReason(lines)})
		}
	}
}

// skipReason is the last line a skipped test logged (t.Skip's message is
// logged last), without the file:line prefix's indentation.
func skipReason(lines []string) string {
	why := ""
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ") {
			continue
		}
		why = t
	}
	return why
}

func (s *summary) failed() bool {
	for _, p := range s.pkgs {
		if p.failed || p.fail > 0 {
			return true
		}
	}
	return false
}

// short drops the module path, which every package shares.
func short(pkg string) string {
	if s := strings.TrimPrefix(pkg, "github.com/map646/map646/"); s != pkg {
		return s
	}
	if pkg == "github.com/map646/map646" {
		return "."
	}
	return pkg
}

// print writes the per-package table, the skipped tests, a total line and,
// if anything failed, go test's closing FAIL.
func (s *summary) print(w io.Writer) {
	paths := append([]string(nil), s.order...)
	sort.Strings(paths)
	fmt.Fprintln(w, "\ngo test summary: tests and subtests per package")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  package\trun\tpass\tfail\tskip\t")
	var tot pkgCount
	pkgs, noTests, failedPkgs := 0, 0, 0
	for _, path := range paths {
		p := s.pkgs[path]
		if p.noTests && p.run == 0 {
			noTests++
			continue
		}
		pkgs++
		verdict := ""
		if p.failed || p.fail > 0 {
			verdict = "FAIL"
			failedPkgs++
		} else if p.run > 0 && p.skip == p.run {
			verdict = "all skipped"
		}
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%d\t%s\n", short(path), p.run, p.pass, p.fail, p.skip, verdict)
		tot.run += p.run
		tot.pass += p.pass
		tot.fail += p.fail
		tot.skip += p.skip
	}
	tw.Flush()
	if len(s.skips) > 0 {
		fmt.Fprintln(w, "skipped:")
		for _, sk := range s.skips {
			fmt.Fprintf(w, "  %s %s: %s\n", short(sk.pkg), sk.test, sk.why)
		}
	}
	fmt.Fprintf(w, "go test: %d packages with tests (%d failed, %d without test files); tests run %d: pass %d, fail %d, skip %d\n",
		pkgs, failedPkgs, noTests, tot.run, tot.pass, tot.fail, tot.skip)
	if s.failed() {
		// go test's own closing line when a package failed, which -json
		// leaves out.
		fmt.Fprintln(w, "FAIL")
	}
}
