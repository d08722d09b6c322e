package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/map646/map646/mapping"
	"github.com/map646/map646/stack/xlat"
)

func loadDumpConfig(t *testing.T) (*Config, string) {
	t.Helper()
	dir := writeFiles(t, map[string]string{
		"a.hcl": tr("deny_ipv4 = [\"198.51.100.128/25\"]\n  mapping {\n    ipv4 = \"198.51.100.0/24\"\n    ipv6 = \"2001:db8:7::/120\"\n  }\n  mappings_file = \"m.csv\"\n  mappings_overlap = true"),
		"m.csv": "# servers\n198.51.100.9,2001:db8:6::9\n\n198.51.100.12/30,2001:db8:8::/126\n",
	})
	c, err := Load(filepath.Join(dir, "a.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	return c, dir
}

// TestWriteMappingsCSV: the CSV listing is a mappings file that loads back
// to the same entries, and says where each came from.
func TestWriteMappingsCSV(t *testing.T) {
	c, dir := loadDumpConfig(t)
	var b bytes.Buffer
	if err := c.WriteMappings(&b, FormatCSV); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`# map646 mappings: prefix 2001:db8:64::/96, 3 entries, digest %s
198.51.100.0/24,2001:db8:7::/120 # D/a.hcl:4
198.51.100.9,2001:db8:6::9 # D/m.csv:2
198.51.100.12/30,2001:db8:8::/126 # D/m.csv:4
`, c.Digest)
	if got := strings.ReplaceAll(b.String(), dir+"/", "D/"); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	back, _, err := mapping.ParseCSVLines(&b, "dump.csv")
	if err != nil || !reflect.DeepEqual(back, c.Translator.Mappings) {
		t.Errorf("listing loads back as %v, %v; want %v", back, err, c.Translator.Mappings)
	}
	if err := c.WriteMappings(&b, "xml"); err == nil || !strings.Contains(err.Error(), `"xml"`) {
		t.Errorf("unknown format: %v", err)
	}
	if err := (&Config{}).WriteMappings(&b, FormatCSV); err == nil {
		t.Error("a hand-built Config listed a map it does not have")
	}
}

// TestWriteMappingsJSON: the JSON listing decodes to the prefix and every
// entry with its origin.
func TestWriteMappingsJSON(t *testing.T) {
	c, dir := loadDumpConfig(t)
	var b bytes.Buffer
	if err := c.WriteMappings(&b, FormatJSON); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Prefix   netip.Prefix
		Digest   string
		Count    int
		Mappings []MappingInfo
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	pp := netip.MustParsePrefix
	want := []MappingInfo{
		{pp("198.51.100.0/24"), pp("2001:db8:7::/120"), filepath.Join(dir, "a.hcl"), 4},
		{pp("198.51.100.9/32"), pp("2001:db8:6::9/128"), filepath.Join(dir, "m.csv"), 2},
		{pp("198.51.100.12/30"), pp("2001:db8:8::/126"), filepath.Join(dir, "m.csv"), 4},
	}
	if got.Prefix != pp("2001:db8:64::/96") || got.Digest != c.Digest || got.Count != 3 || !reflect.DeepEqual(got.Mappings, want) {
		t.Errorf("got %+v\nwant %v", got, want)
	}
}

// TestLookup: which entry or prefix applies to an address, both
// directions, with the longest match, deny_ipv4 and untranslatable ones.
func TestLookup(t *testing.T) {
	c, dir := loadDumpConfig(t)
	for _, tc := range []struct{ addr, want string }{
		{"198.51.100.9", "198.51.100.9 -> 2001:db8:6::9 by EAM entry 198.51.100.9/32 = 2001:db8:6::9/128 (D/m.csv:2)"},
		{"2001:db8:6::9", "2001:db8:6::9 -> 198.51.100.9 by EAM entry 198.51.100.9/32 = 2001:db8:6::9/128 (D/m.csv:2)"},
		{"198.51.100.14", "198.51.100.14 -> 2001:db8:8::2 by EAM entry 198.51.100.12/30 = 2001:db8:8::/126 (D/m.csv:4)"},
		{"2001:db8:7::1", "2001:db8:7::1 -> 198.51.100.1 by EAM entry 198.51.100.0/24 = 2001:db8:7::/120 (D/a.hcl:4)"},
		{"198.51.100.200", "198.51.100.200 -> 2001:db8:7::c8 by EAM entry 198.51.100.0/24 = 2001:db8:7::/120 (D/a.hcl:4); but deny_ipv4 198.51.100.128/25 drops packets to and from 198.51.100.200"},
		{"2001:db8:7::c8", "2001:db8:7::c8 -> 198.51.100.200 by EAM entry 198.51.100.0/24 = 2001:db8:7::/120 (D/a.hcl:4); but deny_ipv4 198.51.100.128/25 drops packets to and from 198.51.100.200"},
		{"192.0.2.1", "192.0.2.1 -> 2001:db8:64::c000:201 by prefix 2001:db8:64::/96"},
		{"2001:db8:64::c000:201", "2001:db8:64::c000:201 -> 192.0.2.1 by prefix 2001:db8:64::/96"},
		{"::ffff:192.0.2.1", "192.0.2.1 -> 2001:db8:64::c000:201 by prefix 2001:db8:64::/96"},
		{"2001:db8:6::8", "2001:db8:6::8: not translatable; no EAM entry covers it and it is outside the prefix 2001:db8:64::/96"},
	} {
		r, err := c.Lookup(netip.MustParseAddr(tc.addr), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.ReplaceAll(r.String(), dir+"/", "D/"); got != tc.want {
			t.Errorf("Lookup(%s)\n  = %s\nwant %s", tc.addr, got, tc.want)
		}
	}
	wkp, err := Parse([]byte("translator {\n  prefix = \"64:ff9b::/96\"\n}\n"), "w.hcl")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"10.0.0.1", "64:ff9b::a00:1"} {
		r, _ := wkp.Lookup(netip.MustParseAddr(a), nil)
		if r.By != "none" || r.Translated.IsValid() || !strings.Contains(r.Note, "RFC 6052 section 3.1") {
			t.Errorf("Lookup(%s) with the well-known prefix = %+v", a, r)
		}
	}
}

// TestLookupAddressRules: lookup says which of the engine's address rules
// drops packets to an address or to its translation (deny_ipv4 first,
// then the translator's own addresses and directed broadcast addresses),
// as the engine it is given decides: by default one built from the file,
// or the running one, whose own addresses may be more than the file's
// (the host's, in host mode).
func TestLookupAddressRules(t *testing.T) {
	dir := writeFiles(t, map[string]string{"a.hcl": tr(`ipv4_address = "192.0.2.1"
  icmp_source_pool = ["192.0.2.8/29"]
  deny_ipv4 = ["198.51.100.128/25"]
  mapping {
    ipv4 = "198.51.100.0/24"
    ipv6 = "2001:db8:7::/120"
  }
  mapping {
    ipv4 = "203.0.113.5"
    ipv6 = "2001:db8:6::5"
  }`) + "interface \"eth0\" {\n  addresses = [\"203.0.113.1/28\", \"2001:db8:1::1/64\"]\n}\n"})
	c, err := Load(filepath.Join(dir, "a.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	xc, err := c.Xlat()
	if err != nil {
		t.Fatal(err)
	}
	// The running engine's own addresses: the file's and the host's.
	xc.Policy.OwnAddrs = append(xc.Policy.OwnAddrs, netip.MustParsePrefix("10.1.0.5/16"))
	running, err := xlat.NewEngine(xc)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr string
		eng  *xlat.Engine
		drop string
		want string // the note
	}{
		{"192.0.2.1", nil, "own_address", "but 192.0.2.1 is one of the translator's own addresses"},             // ipv4_address
		{"2001:db8:64::c000:201", nil, "own_address", "but 192.0.2.1 is one of the translator's own addresses"}, // inside the prefix
		{"192.0.2.9", nil, "own_address", "but 192.0.2.9 is one of the translator's own addresses"},             // the first pool address
		{"192.0.2.10", nil, "", ""}, // the rest of the pool
		{"203.0.113.1", nil, "own_address", "but 203.0.113.1 is one of the translator's own addresses"},                               // an interface's
		{"203.0.113.15", nil, "broadcast", "but 203.0.113.15 is the directed broadcast address of an own or mapped subnet"},           // its subnet's broadcast
		{"2001:db8:64::cb00:710f", nil, "broadcast", "but 203.0.113.15 is the directed broadcast address of an own or mapped subnet"}, // the same inside the prefix
		{"2001:db8:1::1", nil, "own_address", "outside the prefix 2001:db8:64::/96; 2001:db8:1::1 is one of the translator's own addresses"},
		{"203.0.113.5", nil, "", ""}, // mapped, in the interface's subnet
		{"2001:db8:7::ff", nil, "denied", "but deny_ipv4 198.51.100.128/25 drops packets to and from 198.51.100.255"}, // denied before broadcast
		{"198.51.100.127", nil, "", ""}, // neither
		{"10.1.0.5", nil, "", ""},       // the file alone: not its own
		{"10.1.0.5", running, "own_address", "but 10.1.0.5 is one of the translator's own addresses"},           // the host's
		{"2001:db8:64::a01:5", running, "own_address", "but 10.1.0.5 is one of the translator's own addresses"}, // inside the prefix
		{"10.1.255.255", running, "broadcast", "but 10.1.255.255 is the directed broadcast address of an own or mapped subnet"},
	} {
		r, err := c.Lookup(netip.MustParseAddr(tc.addr), tc.eng)
		if err != nil {
			t.Fatal(err)
		}
		if r.Drop != tc.drop || !strings.Contains(r.Note, tc.want) || tc.want == "" && r.Note != "" {
			t.Errorf("Lookup(%s) with the %s engine = %s (drop %q); want drop %q, note with %q",
				tc.addr, map[bool]string{true: "file's", false: "running"}[tc.eng == nil], r, r.Drop, tc.drop, tc.want)
		}
	}
}

// TestWriteMappingsMillion: listing a million entries allocates a small
// fraction of the table (no second copy), and Lookup names one in time.
func TestWriteMappingsMillion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a million-entry table")
	}
	const n = 1 << 20
	var csv strings.Builder
	for i := range n {
		fmt.Fprintf(&csv, "20.%d.%d.%d,2001:db8:6::%x:%x\n", i>>16, i>>8&255, i&255, i>>16, i&0xffff)
	}
	dir := writeFiles(t, map[string]string{"a.hcl": tr("mappings_file = \"m.csv\""), "m.csv": csv.String()})
	csv.Reset()
	c, err := Load(filepath.Join(dir, "a.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{FormatCSV, FormatJSON} {
		var cw countWriter
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if err := c.WriteMappings(&cw, format); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("%s: %d entries, %d bytes written, %d bytes allocated", format, n, cw.n, alloc)
		if alloc > 1<<20 {
			t.Errorf("%s listing allocated %d bytes for %d entries; want under 1 MiB", format, alloc, n)
		}
	}
	r, err := c.Lookup(netip.MustParseAddr("20.15.255.255"), nil)
	if err != nil || r.Entry == nil || r.Entry.Line != n {
		t.Errorf("Lookup of the last entry = %+v, %v", r, err)
	}
}

type countWriter struct{ n int }

func (w *countWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }
