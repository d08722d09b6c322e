package config

import (
	"context"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// loadQuickly runs load and fails the test if it takes more than 10 s: a
// FIFO or a device must be refused at once, not read.
func loadQuickly(t *testing.T, load func() (*Config, error)) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := load()
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Load hangs")
		return nil
	}
}

// TestLoadRefusesNonRegularFiles replays the attacks of issue 9: a
// mappings_file (or the configuration itself) that is /dev/zero, a FIFO
// nobody writes to, or a directory is refused with a diagnostic at the
// attribute, without reading it.
func TestLoadRefusesNonRegularFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, target, want string
	}{
		{"dev zero", "/dev/zero", "not a regular file (a character device)"},
		{"fifo", fifo, "not a regular file (a FIFO)"},
		{"directory", dir, "not a regular file (a directory)"},
	} {
		t.Run("mappings_file "+tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "a.hcl")
			src := tr("mappings_file = \"" + tc.target + "\"")
			if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			err := loadQuickly(t, func() (*Config, error) { return Load(p) })
			if err == nil || !strings.Contains(err.Error(), p+":3:19: Cannot read mappings_file") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a diagnostic at %s:3:19 saying %q", err, p, tc.want)
			}
		})
		t.Run("config "+tc.name, func(t *testing.T) {
			err := loadQuickly(t, func() (*Config, error) { return Load(tc.target) })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestLoadEmptyMappingsFile: a mappings file of 0 bytes (what `>` leaves
// while a rewrite is under way) is refused at the attribute, saying how to
// load no mappings on purpose; a file that says so with a comment, or
// holds only blank lines, is an empty table. Review H3-6.
func TestLoadEmptyMappingsFile(t *testing.T) {
	for _, tc := range []struct {
		name, csv string
		want      string // "" loads
		mappings  int
	}{
		{"0 bytes", "", ":3:19: Empty mappings_file", 0},
		{"comment only", "# no mappings\n", "", 0},
		{"blank line", "\n", "", 0},
		{"one mapping", "198.51.100.10,2001:db8:6::10\n", "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{"a.hcl": tr(`mappings_file = "m.csv"`), "m.csv": tc.csv})
			p := filepath.Join(dir, "a.hcl")
			c, err := Load(p)
			if tc.want == "" {
				if err != nil || len(c.Translator.Mappings) != tc.mappings {
					t.Fatalf("Load: %v; want %d mappings", err, tc.mappings)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), p+tc.want) {
				t.Fatalf("err = %v, want %s%s", err, p, tc.want)
			}
			for _, say := range []string{filepath.Join(dir, "m.csv") + " is empty (0 bytes)", "put a comment line in it"} {
				if !strings.Contains(err.Error(), say) {
					t.Errorf("err = %v, want it to say %q", err, say)
				}
			}
		})
	}
}

// TestLoadSizeLimits: files over the caps are refused from their size,
// before they are read (the files here are sparse).
func TestLoadSizeLimits(t *testing.T) {
	dir := t.TempDir()
	big := func(name string, size int64) string {
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		f.Close()
		return p
	}
	if _, err := Load(big("big.hcl", MaxConfigBytes+1)); err == nil || !strings.Contains(err.Error(), "more than the limit of 262144") {
		t.Errorf("HCL over the limit: %v", err)
	}
	big("big.csv", MaxMappingsBytes+1)
	p := filepath.Join(dir, "a.hcl")
	os.WriteFile(p, []byte(tr(`mappings_file = "big.csv"`)), 0o644)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "more than the limit of 268435456") || !strings.Contains(err.Error(), p+":3:19:") {
		t.Errorf("mappings_file over the limit: %v", err)
	}
	if _, err := Parse(make([]byte, MaxConfigBytes+1), "p.hcl"); err == nil {
		t.Error("Parse accepted more than MaxConfigBytes")
	}
}

// TestNestingLimit: 40,000-deep nestings of every kind that makes the
// HCL parser recurse are refused with a diagnostic where the limit is
// crossed. Without the check each of them but the conditionals kills the
// test binary with a stack overflow; the conditionals were parsed, a
// kilobyte of stack per level, and the evaluated ones accepted.
func TestNestingLimit(t *testing.T) {
	const n = 40_000 // deep, and within MaxConfigBytes
	r := strings.Repeat
	for _, tc := range []struct {
		name, src string
		col       int
	}{
		{"blocks", "a " + r("{\nb ", n) + r("}\n", n), 3},
		{"brackets", "a = " + r("[", n) + r("]", n) + "\n", 4 + MaxNesting + 1},
		{"parentheses", "a = " + r("(", n) + "1" + r(")", n) + "\n", 4 + MaxNesting + 1},
		{"objects", "a = " + r("{b=", n) + "1" + r("}", n) + "\n", 4 + 3*MaxNesting + 1},
		{"interpolations", "a = " + r(`"${`, n) + "1" + r(`}"`, n) + "\n", 0},
		{"function calls", "a = " + r("f(", n) + "1" + r(")", n) + "\n", 0},
		// For expressions are refused outright (TestForExpressions).
		{"splats", "a = b" + r("[*]", n) + "\n", 5 + 3*(MaxNesting-1) + 2}, // the open bracket counts too
		{"attribute splats", "a = b" + r(".*", n) + "\n", 5 + 2*MaxNesting + 2},
		{"negations", "a = " + r("!", n) + "true\n", 4 + MaxNesting + 1},
		{"minus signs", "a = " + r("-", n) + "1\n", 4 + MaxNesting + 1},
		// No overflow, but 64 MiB of stack at 64,000 deep: the
		// diagnostic is at the first "?" past the limit.
		{"conditionals", "a = " + r("1?1:", n) + "1\n", 4 + 4*MaxNesting + 2},
		{"conditionals evaluated", "translator {\nprefix = " + r("false?1:", n/2) + `"2001:db8:64::/96"` + "\n}\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.src), "deep.hcl")
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Diagnostics) != 1 || ce.Diagnostics[0].Summary != "Nesting too deep" {
				t.Fatalf("err = %v, want one \"Nesting too deep\" diagnostic", err)
			}
			s := ce.Diagnostics[0].Subject
			if s == nil || s.Filename != "deep.hcl" || (tc.col != 0 && s.Start.Column != tc.col) {
				t.Fatalf("diagnostic at %v, want deep.hcl column %d", s, tc.col)
			}
		})
	}
	// Nesting up to the limit is still parsed (and fails for its content).
	ok := "a = " + r("[", MaxNesting) + r("]", MaxNesting) + "\n"
	_, err := Parse([]byte(ok), "ok.hcl")
	if err == nil || strings.Contains(err.Error(), "Nesting too deep") {
		t.Fatalf("nesting at the limit: %v", err)
	}
	// The full example (blocks, lists, strings) is far from the limit.
	if _, err := Parse([]byte(full), "full.hcl"); err != nil {
		t.Fatal(err)
	}
}

// TestLoadConfinedToRoot: a configuration from a config drive names files
// on the drive only; "..", absolute paths elsewhere and symbolic links
// out of the drive are refused.
func TestLoadConfinedToRoot(t *testing.T) {
	outside := writeFiles(t, map[string]string{"secret.csv": "198.51.100.7,2001:db8:6::7\n"})
	drive := writeFiles(t, map[string]string{
		"map646.hcl":   "",
		"maps/m.csv":   "198.51.100.2,2001:db8:6::2\n",
		"sub/ok.csv":   "198.51.100.3,2001:db8:6::3\n",
		"openstack/x":  "",
		"sub/deep/.k":  "",
		"sub/deep/k.c": "",
	})
	if err := os.Symlink(filepath.Join(outside, "secret.csv"), filepath.Join(drive, "out.csv")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("maps/m.csv", filepath.Join(drive, "in.csv")); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(drive, filepath.Join(outside, "secret.csv"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, file string
		ok         bool
	}{
		{"relative", "maps/m.csv", true},
		{"absolute inside", filepath.Join(drive, "maps/m.csv"), true},
		{"symlink inside", "in.csv", true},
		{"dot-dot inside", "sub/../maps/m.csv", true},
		{"dot-dot out", rel, false},
		{"dot-dot to etc", "../../../../../../etc/hostname", false},
		{"absolute outside", "/etc/hostname", false},
		{"symlink out", "out.csv", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(drive, "map646.hcl")
			if err := os.WriteFile(p, []byte(tr(`mappings_file = "`+tc.file+`"`)), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := LoadContext(context.Background(), p, drive)
			if tc.ok {
				if err != nil || len(c.Translator.Mappings) != 1 {
					t.Fatalf("confined load of %q: %v", tc.file, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("read %q outside the drive: %v", tc.file, c.Translator.Mappings)
			}
			if !strings.Contains(err.Error(), p+":3:19: Cannot read mappings_file") {
				t.Fatalf("err = %v, want a diagnostic at the attribute", err)
			}
			// Unconfined, the same file loads: the refusal is the root's doing.
			if tc.file != "/etc/hostname" && !strings.Contains(tc.file, "etc/hostname") {
				if _, err := Load(p); err != nil {
					t.Fatalf("unconfined load: %v", err)
				}
			}
		})
	}
	// The HCL file itself must be inside too.
	if _, err := LoadContext(context.Background(), filepath.Join(outside, "secret.csv"), drive); err == nil {
		t.Error("a configuration outside the root was read")
	}
}

// TestLoadContextGivesUp: a load that is still reading when its context
// ends returns at once with the context's error.
func TestLoadContextGivesUp(t *testing.T) {
	path := writeLarge(t, t.TempDir(), 200_000)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	_, err := LoadContext(ctx, path, "")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("gave up after %v", d)
	}
	if c, err := LoadContext(context.Background(), path, ""); err != nil || len(c.Translator.Mappings) != 200_000 {
		t.Fatalf("uncancelled load: %v", err)
	}
}

// TestForExpressions: for expressions and template for directives are
// refused where they start, before anything is evaluated; without the
// check, the five nested ones over 31-element lists (a 500-byte file) ran
// for over 20 s and past 300 MiB, and each more level multiplies that by
// 31. The word "for" anywhere else is no for expression.
func TestForExpressions(t *testing.T) {
	list := "[" + strings.Repeat("1,", 30) + "1]"
	nested := "[for a in " + list + ": [for b in " + list + ": [for c in " + list + ": [for d in " + list + ": [for e in " + list + ": 1]]]]]"
	for _, tc := range []struct {
		name, expr string
		col        int // of "for" in the line "  prefix = <expr>"; 0: not refused
	}{
		{"nested tuple fors", nested, 13},
		{"object for", `{for k, v in {a = 1}: k => v}`, 13},
		{"for after a newline", "[\nfor x in [1]: x]", 1},
		{"template for directive", `"%{for x in [1]}x%{endfor}"`, 15},
		{"template for with strip marker", `"%{~ for x in [1]}x%{endfor}"`, 17},
		{"heredoc for directive", "<<EOT\n%{for x in [1]}x%{endfor}\nEOT", 3},
		{"for in a string", `"for"`, 0},
		{"for in an interpolation's string", `"${"for"}"`, 0},
		{"for in a list of strings", `["for", "x"]`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "translator {\n  prefix = " + tc.expr + "\n}\n"
			start := time.Now()
			_, err := Parse([]byte(src), "for.hcl")
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Parse took %v", d)
			}
			var ce *Error
			refused := errors.As(err, &ce) && len(ce.Diagnostics) == 1 && ce.Diagnostics[0].Summary == "For expressions are not allowed"
			if tc.col == 0 {
				if refused {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !refused {
				t.Fatalf("err = %v, want one \"For expressions are not allowed\" diagnostic", err)
			}
			if s := ce.Diagnostics[0].Subject; s == nil || s.Start.Column != tc.col {
				t.Fatalf("diagnostic at %v, want column %d", s, tc.col)
			}
		})
	}
}

// TestNumberLimits: number literals beyond 2^±128 (or longer than 64
// bytes) and a 65th binary operator are refused where they are, before
// anything is evaluated; without the check each of the first four hung
// the load (writing the number out in decimal, in cty's conversion to a
// string or in a diagnostic of ours), past 20 s and 250 MiB for the
// large ones, and a file of "1+1+..." evaluated with 256 MiB of stack
// (TestOperatorChains). The largest products left are written out
// quickly.
func TestNumberLimits(t *testing.T) {
	big := "170141183460469231731687303715884105727" // 2^127 - 1
	products := big + strings.Repeat("*"+big, maxOperators)
	for _, tc := range []struct {
		name, expr string
		summary    string // "" for accepted (or refused for another reason)
		col        int    // of the diagnostic, in the line "  prefix = <expr>"
	}{
		{"huge literal as a string", "1e100000000", "Number out of range", 12},
		{"huge literal interpolated", `"${1e100000000}"`, "Number out of range", 15},
		{"tiny literal", `"${1e-100000000}"`, "Number out of range", 15},
		{"exponent beyond big.Float", "1e99999999999999999999999", "Number out of range", 12},
		{"long literal", strings.Repeat("1", 65), "Number out of range", 12},
		{"65 multiplications", `"${` + products + "*2}\"", "Too many operators", 15 + len(products)},
		{"65 divisions", `"${1` + strings.Repeat("/1", 65) + `}"`, "Too many operators", 16 + 2*64},
		{"65 additions", strings.Repeat("1+", 65) + "1", "Too many operators", 12 + 2*64 + 1},
		{"65 comparisons", strings.Repeat("1==", 65) + "1", "Too many operators", 12 + 3*64 + 1},
		{"65 ands", strings.Repeat("true&&", 65) + "true", "Too many operators", 12 + 6*64 + 4},
		{"65 binary minus", strings.Repeat("(1)-", 65) + "1", "Too many operators", 12 + 4*64 + 3},
		{"unary minus is no operator", "[" + strings.Repeat("-1,", 100) + "]", "", 0},
		{"64 products of 2^127", `"${` + products + `}"`, "", 0},
		{"small literals", `"${1e3 + 0.5 + 0 + 4294967295 + 1e-38}"`, "", 0},
		{"splats are no operators", `"${[1][*]}"`, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "translator {\n  prefix = " + tc.expr + "\n}\n"
			start := time.Now()
			_, err := Parse([]byte(src), "num.hcl")
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Parse took %v", d)
			}
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Diagnostics) == 0 {
				t.Fatalf("err = %v, want diagnostics (no prefix is valid here)", err)
			}
			d := ce.Diagnostics[0]
			if tc.summary == "" {
				if d.Summary == "Number out of range" || d.Summary == "Too many operators" || d.Summary == "Nesting too deep" {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if len(ce.Diagnostics) != 1 || d.Summary != tc.summary {
				t.Fatalf("err = %v, want one %q diagnostic", err, tc.summary)
			}
			if d.Subject == nil || d.Subject.Start.Line != 2 || d.Subject.Start.Column != tc.col {
				t.Fatalf("diagnostic at %v, want line 2 column %d", d.Subject, tc.col)
			}
		})
	}
}

// TestOperatorChains: a file as large as allowed that is one chain of a
// binary operator in an evaluated attribute is refused before it is
// parsed. Without the check "1+1+...+1" was evaluated, recursively over a
// tree as deep as the chain, with 256 MiB of stack (500 MiB peak RSS),
// "1==1==..." with 128 MiB: enough to kill an appliance of 128 MiB.
func TestOperatorChains(t *testing.T) {
	n := MaxConfigBytes - 100
	for _, tc := range []struct{ name, unit, last string }{
		{"additions", "1+", "1"},
		{"comparisons", "1==", "1"},
		{"ands", "true&&", "true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "translator {\n  prefix = " + strings.Repeat(tc.unit, n/len(tc.unit)) + tc.last + "\n}\n"
			start := time.Now()
			_, err := Parse([]byte(src), "chain.hcl")
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Parse took %v", d)
			}
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Diagnostics) != 1 || ce.Diagnostics[0].Summary != "Too many operators" {
				t.Fatalf("err = %.300v, want one \"Too many operators\" diagnostic", err)
			}
		})
	}
}

// parseQuickly is Parse in a goroutine that fails the test after 5 s:
// the bypasses below hung the load or overflowed its stack.
func parseQuickly(t *testing.T, src string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := Parse([]byte(src), "bypass.hcl")
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Parse hangs")
		return nil
	}
}

// TestNumberLimitBypasses: a number written as a string, or made by an
// operator or a template from a string, is held to the bounds of a
// literal. Without the checks each of these hung the load writing an
// unbounded number out in decimal (in a diagnostic of ours, or in HCL's
// conversion of the result to a string).
func TestNumberLimitBypasses(t *testing.T) {
	// full with its log block replaced by one holding a.
	logAttr := func(a string) string {
		i := strings.Index(full, "\nlog {")
		j := i + strings.Index(full[i:], "}\n")
		return "log {\n  " + a + "\n}\n" + full[:i] + full[j+2:]
	}
	log := func(v string) string { return logAttr("drops_per_second = " + v) }
	tr := func(a string) string { return strings.Replace(full, "translator {\n", "translator {\n  "+a+"\n", 1) }
	for _, tc := range []struct {
		name, src, want string // want: in the error; "" for accepted
	}{
		{"string number", log(`"1e-100000000"`), "bypass.hcl:2:22: Number out of range"},
		{"huge string number", log(`"1e100000000"`), "bypass.hcl:2:22: Number out of range"},
		{"string made by a template", log(`"${"1e-"}100000000"`), "bypass.hcl:2:22: Number out of range"},
		{"string plateau", tr(`mtu_plateaus = [1280, "1e-100000000"]`), "Number out of range"},
		{"negated string", logAttr(`level = "${-"1e-100000000"}"`), "bypass.hcl:2:15: Operand is not a number"},
		{"string plus number", logAttr(`level = "${"1e-100000000"+0}"`), "bypass.hcl:2:14: Operand is not a number"},
		{"string compared", logAttr(`drops = "1e-100000000" < 1`), "bypass.hcl:2:11: Operand is not a number"},
		{"conditional string operand", log(`(true ? "1e-100000000" : 1) * 2`), "bypass.hcl:2:22: Operand is not a number"},
		{"string bool operand", log(`1 + true`), "bypass.hcl:2:26: Operand is not a number"},
		{"small string number", log(`"100"`), ""},
		{"string number in a list", tr(`mtu_plateaus = ["1280", 1500]`), ""},
		{"arithmetic on numbers", log(`(true ? 60 : 1) + -(2 * 5) + 50`), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := parseQuickly(t, tc.src)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %.500v, want %q", err, tc.want)
			}
		})
	}
}

// TestTokenCountersSeeThrough: newlines and comments, which HCL ignores
// inside brackets, do not hide operators, unary runs or for expressions
// from checkNesting. Without that "(1\n-1\n-1...)" counted no operator,
// "(-\n-\n...1)" restarted the unary run at each newline (a stack
// overflow), and a comment before "for" let the for expression through.
func TestTokenCountersSeeThrough(t *testing.T) {
	const n = 40_000
	r := strings.Repeat
	for _, tc := range []struct {
		name, expr, want string
	}{
		{"binary minus after newlines", "(1" + r("\n-1", 65) + ")", "Too many operators"},
		{"binary minus after comments", "(1" + r("/**/-1", 65) + ")", "Too many operators"},
		{"plus after line comments", "(1" + r("# c\n+1", 65) + ")", "Too many operators"},
		{"unary minus over newlines", "(" + r("-\n", n) + "1)", "Nesting too deep"},
		{"negations over comments", "(" + r("!/**/", n) + "true)", "Nesting too deep"},
		{"for after a block comment", "[/**/for v in [1] : v]", "For expressions are not allowed"},
		{"for after a line comment", "[# c\n for v in [1] : v]", "For expressions are not allowed"},
		{"for after a // comment", "{// c\n for k, v in {a = 1} : k => v}", "For expressions are not allowed"},
		{"splat after a comment", "[[1]" + r("[/**/*]", n/8) + "]", "Nesting too deep"},
		{"unary minus in a list over newlines", "[\n" + r("-1,\n", 100) + "]", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := parseQuickly(t, "translator {\n  prefix = "+tc.expr+"\n}\n")
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Diagnostics) == 0 {
				t.Fatalf("err = %.300v, want diagnostics (no prefix is valid here)", err)
			}
			got := ce.Diagnostics[0].Summary
			if tc.want == "" {
				if got == "Too many operators" || got == "Nesting too deep" || got == "For expressions are not allowed" {
					t.Fatalf("refused: %.300v", err)
				}
				return
			}
			if got != tc.want {
				t.Fatalf("err = %.300v, want %q", err, tc.want)
			}
		})
	}
}

// TestNumberText: a diagnostic describes a number beyond the bounds
// instead of writing it out, which for 1e-100000000 (about 2^-332192810)
// did not finish within the 5 s TestNumberLimitBypasses allows.
func TestNumberText(t *testing.T) {
	tiny, _, err := big.ParseFloat("1e-100000000", 10, 512, big.ToNearestEven)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f    *big.Float
		want string
	}{
		{big.NewFloat(0), "0"},
		{big.NewFloat(1.5), "1.5"},
		{new(big.Float).SetMantExp(big.NewFloat(1), maxNumberExp-1), "1.7014118346046923e+38"},
		{new(big.Float).SetMantExp(big.NewFloat(1), maxNumberExp), "a number beyond 2^±128"},
		{new(big.Float).SetMantExp(big.NewFloat(-1), -maxNumberExp-2), "a number beyond 2^±128"},
		{tiny, "a number beyond 2^±128"},
	} {
		start := time.Now()
		if got := numberText(tc.f); got != tc.want {
			t.Errorf("numberText(2^%d) = %q, want %q", tc.f.MantExp(nil), got, tc.want)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("numberText(2^%d) took %v", tc.f.MantExp(nil), d)
		}
	}
}
