package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

const queryHCL = `translator {
  prefix = "2001:db8:64::/96"
  mapping {
    ipv4 = "198.51.100.0/24"
    ipv6 = "2001:db8:7::/120"
  }
  mappings_file    = "m.csv"
  mappings_overlap = true
}
`

func TestMappingsOffline(t *testing.T) {
	dir := writeTemp(t, map[string]string{"q.hcl": queryHCL, "m.csv": "# c\n198.51.100.9,2001:db8:6::9\n"})
	path := filepath.Join(dir, "q.hcl")
	out, errOut, err := runCmd(t, "mappings", "-c", path)
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	want := []string{"198.51.100.0/24,2001:db8:7::/120 # " + path + ":3", "198.51.100.9,2001:db8:6::9 # " + filepath.Join(dir, "m.csv") + ":2"}
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "# map646 mappings: prefix 2001:db8:64::/96, 2 entries") || lines[1] != want[0] || lines[2] != want[1] {
		t.Errorf("csv:\n%s\nwant lines %q", out, want)
	}

	out, _, err = runCmd(t, "mappings", "-c", path, "--format", "json")
	var doc struct {
		Prefix   string
		Mappings []struct {
			IPv4, IPv6, File string
			Line             int
		}
	}
	if err != nil || json.Unmarshal([]byte(out), &doc) != nil || doc.Prefix != "2001:db8:64::/96" || len(doc.Mappings) != 2 || doc.Mappings[1].Line != 2 {
		t.Errorf("json (%v):\n%s", err, out)
	}

	if _, _, err := runCmd(t, "mappings", "-c", path, "--format", "xml"); err == nil || !strings.Contains(err.Error(), "want csv or json") {
		t.Errorf("bad format: %v", err)
	}
	if _, _, err := runCmd(t, "mappings", "--control-socket", filepath.Join(dir, "none.sock")); err == nil || !strings.Contains(err.Error(), "no running map646") {
		t.Errorf("no daemon: %v", err)
	}
}

func TestLookupOffline(t *testing.T) {
	dir := writeTemp(t, map[string]string{"q.hcl": queryHCL, "m.csv": "198.51.100.9,2001:db8:6::9\n", "bad.hcl": "translator {\n}\n"})
	path := filepath.Join(dir, "q.hcl")
	for _, tc := range []struct{ addr, want string }{
		{"198.51.100.9", "198.51.100.9 -> 2001:db8:6::9 by EAM entry 198.51.100.9/32 = 2001:db8:6::9/128 (" + filepath.Join(dir, "m.csv") + ":1)\n"},
		{"2001:db8:7::5", "2001:db8:7::5 -> 198.51.100.5 by EAM entry 198.51.100.0/24 = 2001:db8:7::/120 (" + path + ":3)\n"},
		{"203.0.113.7", "203.0.113.7 -> 2001:db8:64::cb00:7107 by prefix 2001:db8:64::/96\n"},
		// The engine's address rules, as the file sets them up.
		{"2001:db8:7::ff", "2001:db8:7::ff -> 198.51.100.255 by EAM entry 198.51.100.0/24 = 2001:db8:7::/120 (" + path + ":3); but 198.51.100.255 is the directed broadcast address of an own or mapped subnet: packets to and from it are dropped as broadcast (RFC 1812 section 5.3.5.2)\n"},
	} {
		out, errOut, err := runCmd(t, "lookup", tc.addr, "-c", path)
		if err != nil || out != tc.want {
			t.Errorf("lookup %s = %q, %v %s; want %q", tc.addr, out, err, errOut, tc.want)
		}
	}
	out, _, err := runCmd(t, "lookup", "2001:db8:6::9", "-c", path, "--json")
	var r struct{ Translated, By, Drop string }
	if err != nil || json.Unmarshal([]byte(out), &r) != nil || r.Translated != "198.51.100.9" || r.By != "eam" || r.Drop != "" {
		t.Errorf("json lookup (%v): %s", err, out)
	}
	out, _, err = runCmd(t, "lookup", "198.51.100.255", "-c", path, "--json")
	if err != nil || json.Unmarshal([]byte(out), &r) != nil || r.By != "eam" || r.Drop != "broadcast" {
		t.Errorf("json lookup of a broadcast address (%v): %s", err, out)
	}
	if _, _, err := runCmd(t, "lookup", "nope", "-c", path); err == nil || !strings.Contains(err.Error(), "not an IPv4 or IPv6 address") {
		t.Errorf("bad address: %v", err)
	}
	if _, _, err := runCmd(t, "lookup", "192.0.2.1", "-c", filepath.Join(dir, "bad.hcl")); err == nil || !strings.Contains(err.Error(), "map646 check -c") {
		t.Errorf("invalid file: %v", err)
	}
}

// TestCheckReportsEveryProblem: check shows every bad line of the mappings
// file, in order, not just the first.
func TestCheckReportsEveryProblem(t *testing.T) {
	dir := writeTemp(t, map[string]string{
		"c.hcl": "translator {\n  prefix = \"2001:db8:64::/96\"\n  mappings_file = \"m.csv\"\n}\n",
		"m.csv": "198.51.100.1,2001:db8:6::1\nx\n198.51.100.2,2001:db8:6::2\ny,z\n198.51.100.3;2001:db8:6::3\n",
	})
	_, errOut, err := runCmd(t, "check", "-c", filepath.Join(dir, "c.hcl"))
	if err == nil || !strings.Contains(err.Error(), "3 error(s)") {
		t.Fatalf("check: %v", err)
	}
	csv := filepath.Join(dir, "m.csv")
	last := -1
	for _, pos := range []string{csv + ":2:2:", csv + ":4:1:", csv + ":5:27:"} {
		i := strings.Index(errOut, pos)
		if i <= last {
			t.Errorf("%s missing or out of order in\n%s", pos, errOut)
		}
		last = i
	}
}

// TestCheckShowsWarnings: questionable values are shown as warnings and
// the file still passes.
func TestCheckShowsWarnings(t *testing.T) {
	dir := writeTemp(t, map[string]string{"w.hcl": "translator {\n  prefix = \"2001:db8:64::/96\"\n  icmp_source_pool = [\"10.0.0.0/24\"]\n}\n"})
	path := filepath.Join(dir, "w.hcl")
	out, errOut, err := runCmd(t, "check", "-c", path)
	if err != nil || !strings.Contains(out, ": OK: ") {
		t.Fatalf("check: %v %s", err, errOut)
	}
	for _, w := range []string{path + ":1:1: warning: No mappings", path + ":3:23: warning: Questionable icmp_source_pool"} {
		if !strings.Contains(errOut, w) {
			t.Errorf("missing %q in\n%s", w, errOut)
		}
	}
}
