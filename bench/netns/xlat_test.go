package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/map646/map646/mapping"
)

func TestWriteMappingsCSV(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.csv")
	if err := writeMappingsCSV(p, 5); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want := "10.0.0.0,2001:db8:7::\n10.0.0.1,2001:db8:7::1\n198.51.100.10,2001:db8:6::10\n10.0.0.2,2001:db8:7::2\n10.0.0.3,2001:db8:7::3\n"
	if string(b) != want {
		t.Errorf("csv:\n%s\nwant:\n%s", b, want)
	}
	f, _ := os.Open(p)
	defer f.Close()
	entries, _, err := mapping.ParseCSVLines(f, p)
	if err != nil || len(entries) != 5 {
		t.Errorf("mapping.ParseCSV: %d entries, %v", len(entries), err)
	}
}

func TestTaygaConfig(t *testing.T) {
	for _, tc := range []struct {
		tun     string
		workers int
		want    []string
		notWant string
	}{
		{taygaTun, 0, []string{"tun-device bn-tayga", "ipv4-addr 203.0.113.65", "prefix 2001:db8:64::/96", "map 198.51.100.10 2001:db8:6::10"}, "workers"},
		{taygaForkTun, 2, []string{"tun-device bn-taygaf", "map 198.51.100.10 2001:db8:6::10", "workers 2", "offlink-mtu 1520"}, ""},
	} {
		got := taygaConfig(tc.tun, tc.workers)
		for _, line := range tc.want {
			if !strings.Contains(got, line+"\n") {
				t.Errorf("tayga.conf lacks %q:\n%s", line, got)
			}
		}
		if tc.notWant != "" && strings.Contains(got, tc.notWant) {
			t.Errorf("0.9.2's tayga.conf has %q, which it does not know:\n%s", tc.notWant, got)
		}
	}
}
