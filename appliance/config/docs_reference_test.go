package config

// docs/configuration.md's attribute tables against the schema and the
// decoder: every attribute a block takes has a row in its block's table
// and every row names one it takes, every "number, LO–HI" range the table
// gives is the range the decoder accepts, and every literal default is
// the decoder's.

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// docBlocks are the blocks with an attribute table in
// docs/configuration.md: the heading of the table's section, the block's
// schema, and a configuration that holds the block with the attributes it
// requires, where attribute lines go in place of %s.
var docBlocks = []struct {
	heading string
	schema  *hcl.BodySchema
	config  string
	needs   map[string]string // the required attributes, left out when the one tested
}{
	{"## `translator`", translatorSchema, "translator {\n  prefix = \"2001:db8:64::/96\"\n%s}\n", nil},
	{"### `mapping`", mappingSchema, "translator {\n  prefix = \"2001:db8:64::/96\"\n  mapping {\n%s  }\n}\n",
		map[string]string{"ipv4": `"198.51.100.10"`, "ipv6": `"2001:db8:6::10"`}},
	{"### `tun`", tunSchema, "translator {\n  prefix = \"2001:db8:64::/96\"\n  tun {\n%s  }\n}\n", nil},
	{"### `fd`", fdSchema, "translator {\n  prefix = \"2001:db8:64::/96\"\n  fd {\n%s  }\n}\n", map[string]string{"fd": "3"}},
	{"### `nic`", nicSchema, "translator {\n  prefix = \"2001:db8:64::/96\"\n  nic {\n%s  }\n}\n", map[string]string{"ipv4": `"eth0"`}},
	{"## `interface`", interfaceSchema, minimal + "interface \"eth0\" {\n%s}\n", nil},
	{"## `route`", routeSchema, minimal + "route {\n%s}\n", map[string]string{"to": `"0.0.0.0/0"`}},
	{"## `metrics`", metricsSchema, "translator {\n  prefix = \"2001:db8:64::/96\"\n  mapping_counters = true\n}\nmetrics {\n%s}\n", nil},
	{"## `log`", logSchema, minimal + "log {\n%s}\n", nil},
	{"## `run_as`", runAsSchema, minimal + "run_as {\n%s}\n", map[string]string{"user": `"nobody"`}},
	{"## `bgp`", bgpSchema, minimal + "bgp {\n%s  neighbor \"192.0.2.2\" {\n    remote_as = 64513\n  }\n}\n", map[string]string{"local_as": "64512", "router_id": `"192.0.2.1"`}},
	{"### `neighbor`", neighborSchema, minimal + "bgp {\n  local_as = 64512\n  router_id = \"192.0.2.1\"\n  neighbor \"192.0.2.2\" {\n%s  }\n}\n",
		map[string]string{"remote_as": "64513"}},
	{"## `router_advertisement`", raSchema, minimal + "router_advertisement \"eth1\" {\n%s}\n", nil},
}

// docRow is one attribute row of a table: its name (a block's without its
// label, `neighbor "ADDRESS"`), its type cell and its default cell.
type docRow struct{ name, typ, def string }

var docRowRE = regexp.MustCompile("(?m)^\\| `([a-z_0-9]+)(?: \"[A-Z]+\")?` \\|([^|]*)\\|([^|]*)\\|")

// docTable returns the rows of the first attribute table after heading in
// doc, up to the next heading.
func docTable(t *testing.T, doc, heading string) []docRow {
	t.Helper()
	_, section, ok := strings.Cut(doc, "\n"+heading+"\n")
	if !ok {
		t.Fatalf("docs/configuration.md has no %q heading", heading)
	}
	if i := strings.Index(section, "\n#"); i >= 0 {
		section = section[:i]
	}
	_, table, ok := strings.Cut(section, "\n| attribute |")
	if !ok {
		t.Fatalf("docs/configuration.md: %q has no attribute table", heading)
	}
	if i := strings.Index(table, "\n\n"); i >= 0 {
		table = table[:i]
	}
	var rows []docRow
	for _, m := range docRowRE.FindAllStringSubmatch(table, -1) {
		rows = append(rows, docRow{m[1], strings.TrimSpace(m[2]), strings.TrimSpace(m[3])})
	}
	return rows
}

// TestDocsNameEveryAttribute: each block's table in docs/configuration.md
// has a row for every attribute (and, for translator, every block) the
// schema takes, and no row for one it does not.
func TestDocsNameEveryAttribute(t *testing.T) {
	b, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, blk := range docBlocks {
		var want []string
		for _, a := range blk.schema.Attributes {
			want = append(want, a.Name)
		}
		for _, b := range blk.schema.Blocks {
			want = append(want, b.Type)
		}
		var got []string
		for _, r := range docTable(t, doc, blk.heading) {
			got = append(got, r.name)
		}
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("%s: %q is in the schema but has no row in docs/configuration.md", blk.heading, w)
			}
		}
		for _, g := range got {
			if !slices.Contains(want, g) {
				t.Errorf("%s: docs/configuration.md documents %q, which the schema does not take", blk.heading, g)
			}
		}
	}
}

// docRangeRE matches a type cell's numeric range: "number, LO–HI" or
// "number, 0 or LO–HI" (a range bounded by another attribute is not
// matched).
var docRangeRE = regexp.MustCompile(`^number, (0 or )?(\d+)–(\d+)\b`)

// TestDocsNumberRanges: for every attribute documented as "number, LO–HI"
// the decoder accepts LO and HI (and 0 where "0 or" says so) and refuses
// LO−1 and HI+1 with the attribute's "Invalid NAME" error.
func TestDocsNumberRanges(t *testing.T) {
	b, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	checked := 0
	for _, blk := range docBlocks {
		for _, r := range docTable(t, doc, blk.heading) {
			m := docRangeRE.FindStringSubmatch(r.typ)
			if m == nil {
				continue
			}
			lo, _ := strconv.ParseInt(m[2], 10, 64)
			hi, _ := strconv.ParseInt(m[3], 10, 64)
			cases := map[int64]bool{lo: true, hi: true, hi + 1: false}
			if lo > 0 {
				cases[lo-1] = m[1] != "" && lo-1 == 0
			}
			if m[1] != "" {
				cases[0] = true
			}
			for v, ok := range cases {
				lines := fmt.Sprintf("    %s = %d\n", r.name, v)
				for k, val := range blk.needs {
					if k != r.name {
						lines += fmt.Sprintf("    %s = %s\n", k, val)
					}
				}
				_, err := Parse([]byte(fmt.Sprintf(blk.config, lines)), "doc.hcl")
				refused := err != nil && strings.Contains(err.Error(), "Invalid "+r.name)
				if refused == ok {
					t.Errorf("%s %s = %d (documented %q): refused %v, want %v (%v)", blk.heading, r.name, v, r.typ, refused, !ok, err)
				}
			}
			checked++
		}
	}
	t.Logf("checked %d documented ranges", checked)
	if checked < 15 {
		t.Errorf("checked %d documented ranges; docs/configuration.md has at least 15", checked)
	}
}

// docDefaultRE matches a default cell that is a literal value alone: a
// number, a bool, a string or an empty list (not "`0` (unknown)" or a
// default computed from other attributes).
var docDefaultRE = regexp.MustCompile("^`(\\d+|true|false|\"[^\"]*\"|\\[\\])`$")

// TestDocsDefaults: for every attribute whose documented default is a
// literal, a configuration that writes that value decodes to the same
// Config as one that leaves the attribute out.
func TestDocsDefaults(t *testing.T) {
	b, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	parse := func(src string) *Config {
		t.Helper()
		c, err := Parse([]byte(src), "doc.hcl")
		if err != nil {
			t.Fatalf("%v\n%s", err, src)
		}
		// What depends on the text, not on the values.
		c.Digest, c.Warnings, c.Translator.LinkPos = "", nil, ""
		c.snap, c.origin = nil, mappingOrigin{}
		return c
	}
	checked := 0
	for _, blk := range docBlocks {
		needs := ""
		for k, val := range blk.needs {
			needs += fmt.Sprintf("    %s = %s\n", k, val)
		}
		for _, r := range docTable(t, doc, blk.heading) {
			m := docDefaultRE.FindStringSubmatch(r.def)
			if m == nil || blk.needs[r.name] != "" {
				continue
			}
			without := parse(fmt.Sprintf(blk.config, needs))
			with := parse(fmt.Sprintf(blk.config, needs+fmt.Sprintf("    %s = %s\n", r.name, m[1])))
			if !reflect.DeepEqual(without, with) {
				t.Errorf("%s %s: documented default %s, but writing it changes the configuration:\nleft out: %+v\nwritten:  %+v", blk.heading, r.name, m[1], without, with)
			}
			checked++
		}
	}
	t.Logf("checked %d documented defaults", checked)
	if checked < 20 {
		t.Errorf("checked %d documented defaults; docs/configuration.md has at least 20", checked)
	}
}

// TestDocsExpressions: what "The file" in docs/configuration.md says of
// expressions: operators, conditionals and templates over literals are
// evaluated; variables, function calls and for expressions are refused.
func TestDocsExpressions(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		want        int    // the decoded lowest_ipv6_mtu
		err         string // or the error
	}{
		{"literal", "1300", 1300, ""},
		{"arithmetic", "1280 + 20", 1300, ""},
		{"conditional", "1 < 2 ? 1300 : 1400", 1300, ""},
		{"template", `"${1300}"`, 1300, ""},
		{"variable", "mtu", 0, "Variables not allowed"},
		{"function", `parseint("1300", 10)`, 0, "Function calls not allowed"},
		{"for", "[for x in [1300]: x][0]", 0, "For expressions are not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte("translator {\n  prefix = \"2001:db8:64::/96\"\n  lowest_ipv6_mtu = "+tc.value+"\n}\n"), "doc.hcl")
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("lowest_ipv6_mtu = %s: error %v, want %q", tc.value, err, tc.err)
				}
			case err != nil:
				t.Errorf("lowest_ipv6_mtu = %s: %v", tc.value, err)
			case c.Translator.LowestIPv6MTU != tc.want:
				t.Errorf("lowest_ipv6_mtu = %s: %d, want %d", tc.value, c.Translator.LowestIPv6MTU, tc.want)
			}
		})
	}
}
