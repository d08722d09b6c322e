package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// runCmd runs one subcommand in-process and returns its stdout, stderr
// and error.
func runCmd(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRootCommand()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err = root.Execute()
	return out.String(), errb.String(), err
}

func writeTemp(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestCheckOK(t *testing.T) {
	dir := writeTemp(t, map[string]string{
		"ok.hcl": `translator {
  prefix = "2001:db8:64::/96"
  mapping {
    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }
  mappings_file = "m.csv"
  ipv4_address  = "203.0.113.1"
}
`,
		"m.csv": "198.51.100.11,2001:db8:6::11\n198.51.100.12,2001:db8:6::12\n",
	})
	path := filepath.Join(dir, "ok.hcl")
	out, errOut, err := runCmd(t, "check", "-c", path)
	if err != nil {
		t.Fatalf("check failed: %v\n%s", err, errOut)
	}
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(path) + `: OK: 3 mappings, prefix 2001:db8:64::/96, digest [0-9a-f]{64}\n$`)
	if !re.MatchString(out) {
		t.Errorf("stdout %q does not match %v", out, re)
	}
	if errOut != "" {
		t.Errorf("stderr %q", errOut)
	}
}

// Without icmp_source_pool, ipv4_address or an interface IPv4 address,
// translated errors from IPv6-only routers (Packet Too Big included) come
// from 192.0.0.8: check says so, and still succeeds.
func TestCheckWarnsNoIPv4Address(t *testing.T) {
	// One mapping, so that the "No mappings" warning does not come first.
	dir := writeTemp(t, map[string]string{"c.hcl": "translator {\n  prefix = \"2001:db8:64::/96\"\n  mapping {\n    ipv4 = \"198.51.100.1\"\n    ipv6 = \"2001:db8:6::1\"\n  }\n}\n"})
	path := filepath.Join(dir, "c.hcl")
	out, errOut, err := runCmd(t, "check", "-c", path)
	if err != nil {
		t.Fatalf("check failed: %v\n%s", err, errOut)
	}
	if !strings.Contains(out, ": OK: ") {
		t.Errorf("stdout %q", out)
	}
	if want := path + ":1:1: warning: No IPv4 address for ICMP errors"; !strings.HasPrefix(errOut, want) {
		t.Errorf("stderr %q, want a warning starting %q", errOut, want)
	}
}

func TestCheckErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  []string // lines expected on stderr; "D" is the directory
	}{
		{
			name: "bad prefix and hairpin",
			files: map[string]string{"c.hcl": `translator {
  prefix  = "2001:db8:64::/97"
  hairpin = "on"
}
`},
			want: []string{
				`D/c.hcl:2:13: Invalid prefix: prefix 2001:db8:64::/97: RFC 6052 allows only /32, /40, /48, /56, /64 or /96.`,
				`    2 |   prefix  = "2001:db8:64::/97"`,
				`      |             ^^^^^^^^^^^^^^^^^^`,
				`D/c.hcl:3:13: Invalid hairpin: "on" is not one of "off", "simple" or "intrinsic".`,
			},
		},
		{
			name: "duplicate in the mappings file",
			files: map[string]string{
				"c.hcl": "translator {\n  prefix = \"2001:db8:64::/96\"\n  mappings_file = \"m.csv\"\n}\n",
				"m.csv": "198.51.100.11,2001:db8:6::11\n# next\n 198.51.100.11,2001:db8:6::12\n",
			},
			want: []string{
				`D/m.csv:3:2: Invalid mapping: `,
				`    3 |  198.51.100.11,2001:db8:6::12`,
				`      |  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^`,
			},
		},
		{
			name:  "syntax",
			files: map[string]string{"c.hcl": "translator {\n  prefix = \"2001:db8:64::/96\"\n"},
			want:  []string{`D/c.hcl:1:12: Unclosed configuration block`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeTemp(t, tc.files)
			out, errOut, err := runCmd(t, "check", "-c", filepath.Join(dir, "c.hcl"))
			if err == nil {
				t.Fatalf("check accepted it; stdout %q", out)
			}
			if out != "" {
				t.Errorf("stdout %q", out)
			}
			lines := strings.Split(errOut, "\n")
			for _, w := range tc.want {
				w = strings.ReplaceAll(w, "D/", dir+"/")
				found := false
				for _, l := range lines {
					if strings.HasPrefix(l, w) {
						found = true
					}
				}
				if !found {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
		})
	}
}

func TestCheckWarning(t *testing.T) {
	dir := writeTemp(t, map[string]string{"w.hcl": "translator {\n  prefix = \"2001:db8:64::/96\"\n  ipv4_mtu = 1500\n  ipv6_mtu = 1500\n}\n"})
	path := filepath.Join(dir, "w.hcl")
	out, errOut, err := runCmd(t, "check", "-c", path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, ": OK: 0 mappings") || !strings.HasPrefix(errOut, path+":4:14: warning: IPv6 MTU below IPv4 MTU + 20") {
		t.Errorf("stdout %q\nstderr %q", out, errOut)
	}
}

func TestCheckNeedsConfig(t *testing.T) {
	if _, _, err := runCmd(t, "check"); err == nil || !strings.Contains(err.Error(), "config") {
		t.Errorf("check without -c: %v", err)
	}
	if _, _, err := runCmd(t, "check", "-c", filepath.Join(t.TempDir(), "missing.hcl")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}

// TestCheckRefusesHostileFiles: check reports, and does not hang on or
// crash with, the hostile inputs of issue 9.
func TestCheckRefusesHostileFiles(t *testing.T) {
	dir := writeTemp(t, map[string]string{
		"deep.hcl": "translator " + strings.Repeat("{", 100_000) + strings.Repeat("}", 100_000) + "\n",
		"zero.hcl": "translator {\n  prefix = \"2001:db8:64::/96\"\n  mappings_file = \"/dev/zero\"\n}\n",
	})
	for _, tc := range []struct{ file, want string }{
		{"deep.hcl", ":1:76: Nesting too deep"},
		{"zero.hcl", ":3:19: Cannot read mappings_file: /dev/zero is not a regular file (a character device)."},
		{"/dev/zero", "/dev/zero is not a regular file"},
	} {
		path := tc.file
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		_, errOut, err := runCmd(t, "check", "-c", path)
		if err == nil || !strings.Contains(errOut+err.Error(), tc.want) {
			t.Errorf("check %s: %v\n%s\nwant %q", tc.file, err, errOut, tc.want)
		}
	}
}

// TestCheckPositional: `check FILE` works as `check -c FILE`, and wrong
// argument counts get an answer that names -c, not "unknown command".
func TestCheckPositional(t *testing.T) {
	dir := writeTemp(t, map[string]string{"ok.hcl": "translator {\n  prefix = \"2001:db8:64::/96\"\n}\n"})
	path := filepath.Join(dir, "ok.hcl")
	out, errOut, err := runCmd(t, "check", path)
	if err != nil || !strings.HasPrefix(out, path+": OK: 0 mappings") {
		t.Errorf("check FILE: %v\nstdout %q\nstderr %q", err, out, errOut)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"check", "-c", path, "other.hcl"}, "either -c " + path + " or other.hcl"},
		{[]string{"check", "a.hcl", "b.hcl"}, "check -c FILE"},
		{[]string{"check"}, "check -c FILE"},
		{[]string{"run", "foo.hcl"}, "give the configuration file as -c foo.hcl"},
		{[]string{"translate", "foo.hcl"}, "give the configuration file as -c foo.hcl"},
		{[]string{"translate", "-c", path, "in.pcap"}, "takes no arguments"},
	} {
		_, _, err := runCmd(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "unknown command") {
			t.Errorf("%q: err %v, want %q", tc.args, err, tc.want)
		}
	}
}

// TestCheckAddressErrors: refused addresses and prefixes say why.
func TestCheckAddressErrors(t *testing.T) {
	for _, tc := range []struct{ ipv6, prefix, want string }{
		{"::ffff:198.51.100.10", "2001:db8:64::/96", `D/c.hcl:5:12: Invalid ipv6: "::ffff:198.51.100.10": IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are not allowed: they never appear in IPv6 packets, so nothing could match; write the plain 198.51.100.10 address.`},
		{"::ffff:198.51.100.0/120", "2001:db8:64::/96", `IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are not allowed: they never appear in IPv6 packets, so nothing could match; write the plain 198.51.100.0/24 address.`},
		{"2001:db8:6::/96/1", "2001:db8:64::/96", `D/c.hcl:5:12: Invalid ipv6: "2001:db8:6::/96/1" is a malformed prefix: after the "/" must come only the length, a number 0-128.`},
		{"2001:db8:6::10", "2001:db8:64::/96/1", `D/c.hcl:2:12: Invalid prefix: "2001:db8:64::/96/1" is a malformed prefix`},
		{"2001:db8:6::/129", "2001:db8:64::/96", `"2001:db8:6::/129" is not an IP prefix: the length must be 0-128`},
	} {
		dir := writeTemp(t, map[string]string{"c.hcl": "translator {\n  prefix = \"" + tc.prefix + "\"\n  mapping {\n    ipv4 = \"198.51.100.10\"\n    ipv6 = \"" + tc.ipv6 + "\"\n  }\n}\n"})
		_, errOut, err := runCmd(t, "check", "-c", filepath.Join(dir, "c.hcl"))
		want := strings.ReplaceAll(tc.want, "D/", dir+"/")
		if err == nil || !strings.Contains(errOut, want) {
			t.Errorf("ipv6 %q prefix %q: stderr\n%s\nwant %q", tc.ipv6, tc.prefix, errOut, want)
		}
	}
}

// TestCheckLongLineQuoted: a 5 MB line in the mappings file is quoted in
// at most a window of 120 characters, marked with ellipses.
func TestCheckLongLineQuoted(t *testing.T) {
	long := strings.Repeat("x", 5<<20)
	dir := writeTemp(t, map[string]string{
		"c.hcl": "translator {\n  prefix = \"2001:db8:64::/96\"\n  mappings_file = \"m.csv\"\n}\n",
		"m.csv": "198.51.100.11,2001:db8:6::11\n198.51.100.12," + long + "\n" + long + ",2001:db8:6::13\n",
	})
	_, errOut, err := runCmd(t, "check", "-c", filepath.Join(dir, "c.hcl"))
	if err == nil {
		t.Fatal("check accepted it")
	}
	if len(errOut) > 2000 {
		t.Fatalf("%d bytes of diagnostics", len(errOut))
	}
	for _, l := range strings.Split(strings.TrimSpace(errOut), "\n") {
		if len([]rune(l)) > 300 {
			t.Errorf("line of %d characters: %.200q", len([]rune(l)), l)
		}
	}
	if !strings.Contains(errOut, "x…") || !strings.Contains(errOut, dir+"/m.csv:2:15:") {
		t.Errorf("stderr:\n%s", errOut)
	}
}

// TestCheckLongLineCarets: in a window cut from a long line the carets
// stay under the range they mark.
func TestCheckLongLineCarets(t *testing.T) {
	pad := strings.Repeat(" ", 300)
	dir := writeTemp(t, map[string]string{
		"c.hcl": "translator {\n  prefix = \"2001:db8:64::/96\"\n  mappings_file = \"m.csv\"\n}\n",
		"m.csv": "198.51.100.11,2001:db8:6::11\n" + pad + "198.51.100.11,2001:db8:6::12" + pad + "\n",
	})
	_, errOut, _ := runCmd(t, "check", "-c", filepath.Join(dir, "c.hcl"))
	lines := strings.Split(errOut, "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[1], "    2 | …") || !strings.HasSuffix(lines[1], "…") {
		t.Fatalf("stderr:\n%s", errOut)
	}
	src, marks := []rune(lines[1]), []rune(lines[2])
	at := strings.Index(string(src), "198.51.100.11")
	col := len([]rune(string(src)[:at]))
	if len(marks) != col+len("198.51.100.11,2001:db8:6::12") || marks[col] != '^' || marks[col-1] != ' ' {
		t.Errorf("carets misplaced:\n%s\n%s", lines[1], lines[2])
	}
}
