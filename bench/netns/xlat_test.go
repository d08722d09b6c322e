package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/mapping"
)

// The generated configurations must be what the daemon accepts: parse them
// with the real config package, against the real mapping validation.
func TestMap646ConfigParses(t *testing.T) {
	dir := t.TempDir()
	csv := filepath.Join(dir, "m.csv")
	const n = 1000
	if err := writeMappingsCSV(csv, n); err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]string{"one mapping": map646Config(""), "mappings file": map646Config(csv)} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".hcl")
			if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(p)
			if err != nil {
				t.Fatalf("%v\n%s", err, src)
			}
			tr := cfg.Translator
			if tr.Prefix != netip.MustParsePrefix(prefix6) || tr.Tun.Name != map646Tun || tr.Tun.MTU != mtu6 || !tr.Tun.Routes || !tr.Tun.Offload {
				t.Errorf("translator = %+v", tr)
			}
			want := 1
			if name == "mappings file" {
				want = n
			}
			if len(tr.Mappings) != want {
				t.Fatalf("%d mappings, want %d", len(tr.Mappings), want)
			}
			found := false
			for _, e := range tr.Mappings {
				if e.IPv4 == netip.MustParsePrefix(public4+"/32") && e.IPv6 == netip.MustParsePrefix(server6+"/128") {
					found = true
				}
			}
			if !found {
				t.Errorf("the benchmark pair %s = %s is not in the table", public4, server6)
			}
		})
	}
}

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
	entries, err := mapping.ParseCSV(f, p)
	if err != nil || len(entries) != 5 {
		t.Errorf("mapping.ParseCSV: %d entries, %v", len(entries), err)
	}
}

func TestTaygaConfig(t *testing.T) {
	got := taygaConfig()
	for _, line := range []string{"tun-device bn-tayga", "ipv4-addr 203.0.113.65", "prefix 2001:db8:64::/96", "map 198.51.100.10 2001:db8:6::10"} {
		if !strings.Contains(got, line+"\n") {
			t.Errorf("tayga.conf lacks %q:\n%s", line, got)
		}
	}
}

func TestBuildSetups(t *testing.T) {
	o := options{Setups: allSetups, Mappings: 1_000_000, Map646: "/bin/map646", Tayga: "/usr/sbin/tayga"}
	s, err := buildSetups(o, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 5 || s[0].xlat != nil || s[1].xlat != nil || s[2].xlat == nil || s[4].Label != "map646, 1M mappings" {
		t.Errorf("setups: %+v", s)
	}
	if s[0].Dst != server6 || s[1].Dst != server4 || s[3].Dst != public4 {
		t.Errorf("destinations: %s %s %s", s[0].Dst, s[1].Dst, s[3].Dst)
	}
	for _, bad := range [][]string{{"native6", "native6"}, {"jool"}} {
		o.Setups = bad
		if _, err := buildSetups(o, t.TempDir()); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}
