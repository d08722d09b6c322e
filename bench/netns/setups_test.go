package main

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/map646/map646/appliance/config"
)

// fakeMap646 writes a shell script that answers `check -c FILE` like the
// real binary: exit 1 with a file:line:col message when FILE contains one of
// the rejected block headers, exit 0 otherwise.
func fakeMap646(t *testing.T, rejected ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("#!/bin/sh\n[ \"$1\" = check ] || exit 3\n")
	for _, r := range rejected {
		b.WriteString("grep -q '^  " + r + " {' \"$3\" && { echo \"$3:14:3: Unsupported block type; Blocks of type \\\"" + r + "\\\" are not expected here.\" >&2; exit 1; }\n")
	}
	b.WriteString("exit 0\n")
	p := filepath.Join(t.TempDir(), "map646")
	if err := os.WriteFile(p, []byte(b.String()), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckSupport(t *testing.T) {
	all := []string{sNative6, sTayga, sMap646, sMap646M1, sMap646NIC, sMap646FD}
	tests := []struct {
		name        string
		rejected    []string
		keep        []string
		unsupported []string
		wantErr     string
	}{
		{name: "every mode accepted", keep: all},
		{name: "nic and fd rejected", rejected: []string{"nic", "fd"},
			keep: []string{sNative6, sTayga, sMap646, sMap646M1}, unsupported: []string{sMap646FD, sMap646NIC}},
		{name: "only fd rejected", rejected: []string{"fd"},
			keep: []string{sNative6, sTayga, sMap646, sMap646M1, sMap646NIC}, unsupported: []string{sMap646FD}},
		// Host mode is the product's base: a binary that rejects it is broken, not lacking a feature.
		{name: "tun rejected", rejected: []string{"tun"}, wantErr: "rejects the tun-mode configuration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			bin := fakeMap646(t, tt.rejected...)
			o := options{Setups: all, Mappings: 1000, Map646: bin, Tayga: "/usr/sbin/tayga"}
			setups, err := buildSetups(o, dir)
			if err != nil {
				t.Fatal(err)
			}
			kept, unsup, err := checkSupport(context.Background(), setups, bin, dir, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, s := range kept {
				keys = append(keys, s.Key)
			}
			if !reflect.DeepEqual(keys, tt.keep) {
				t.Errorf("kept %v, want %v", keys, tt.keep)
			}
			if got := sortedKeys(unsup); !reflect.DeepEqual(got, tt.unsupported) && len(got)+len(tt.unsupported) > 0 {
				t.Errorf("unsupported %v, want %v", got, tt.unsupported)
			}
			for k, why := range unsup {
				// The reason is the binary's own diagnostic, with file:line:col.
				if !strings.Contains(why, ".hcl:14:3: Unsupported block type") {
					t.Errorf("%s: reason %q", k, why)
				}
			}
		})
	}
}

// The rendered templates are what the daemon accepts (host mode, parsed
// with the real config package), and the NIC and fd templates name the
// router's veths and the inherited descriptor.
func TestTemplatesRender(t *testing.T) {
	dir := t.TempDir()
	csv := filepath.Join(dir, "m.csv")
	const n = 1000
	if err := writeMappingsCSV(csv, n); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode linkMode
		csv  string
		want []string
	}{
		{modeTun, "", []string{`name    = "bn-map646"`, `ipv4 = "198.51.100.10"`, `ipv6 = "2001:db8:6::10"`}},
		{modeTun, csv, []string{`mappings_file = "` + csv + `"`}},
		{modeNIC, "", []string{`ipv4 = "rtr4"`, `ipv6 = "rtr6"`, `prefix = "2001:db8:64::/96"`}},
		{modeFD, csv, []string{"fd = 3", `mappings_file = "` + csv + `"`}},
	} {
		x := &map646Translator{mode: tc.mode}
		src, err := x.config(tc.csv)
		if err != nil {
			t.Fatalf("%s: %v", tc.mode.Name, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(src, w) {
				t.Errorf("%s template lacks %q:\n%s", tc.mode.Name, w, src)
			}
		}
		if tc.mode.Name != modeTun.Name {
			continue
		}
		p := filepath.Join(dir, "tun.hcl")
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
		if tc.csv != "" {
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
	}
}

func TestTemplateOverride(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "nic.hcl")
	if err := os.WriteFile(p, []byte("translator {\n  link { mode = \"nic\"\n    ipv4 = \"{{.IPv4If}}\" }\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ov, err := parseTemplateFlags("nic=" + p)
	if err != nil {
		t.Fatal(err)
	}
	x := &map646Translator{mode: modeNIC, templates: ov}
	src, err := x.config("")
	if err != nil || !strings.Contains(src, `link { mode = "nic"`) || !strings.Contains(src, `ipv4 = "rtr4"`) {
		t.Errorf("override not used: %v\n%s", err, src)
	}
	for _, bad := range []string{"nic", "eth=x.hcl", "nic=", "tun=a,bogus=b"} {
		if _, err := parseTemplateFlags(bad); err == nil {
			t.Errorf("-template %q accepted", bad)
		}
	}
	bad := filepath.Join(dir, "bad.hcl")
	if err := os.WriteFile(bad, []byte("x = {{.NoSuchField}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	x.templates = map[string]string{"nic": bad}
	if _, err := x.config(""); err == nil || !strings.Contains(err.Error(), "bad.hcl") {
		t.Errorf("a template with an unknown field: err = %v", err)
	}
}

func TestBuildSetups(t *testing.T) {
	o := options{Setups: defaultSetups("/tmp/tayga-fork/tayga"), Mappings: 1_000_000, Map646: "/bin/map646",
		Tayga: "/usr/sbin/tayga", TaygaFork: "/tmp/tayga-fork/tayga", StartTimeout: time.Second}
	s, err := buildSetups(o, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, x := range s {
		keys = append(keys, x.Key)
	}
	if want := []string{sNative6, sNative4, sTayga, sTaygaFork, sMap646, sMap646M1, sMap646NIC, sMap646FD}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("keys %v, want %v", keys, want)
	}
	if s[0].xlat != nil || s[1].xlat != nil || s[2].xlat == nil || s[5].Label != "map646 tun, 1M mappings" {
		t.Errorf("setups: %+v", s)
	}
	if s[0].Dst != server6 || s[1].Dst != server4 || s[4].Dst != public4 || s[6].Dst != public4 {
		t.Errorf("destinations: %s %s %s", s[0].Dst, s[1].Dst, s[4].Dst)
	}
	fork := s[3].xlat.(*taygaTranslator)
	if fork.workers != taygaForkWorkers || fork.bin != o.TaygaFork || fork.tunName() == s[2].xlat.tunName() {
		t.Errorf("fork: %+v", fork)
	}
	if s[6].Mode.Name != "nic" || !s[6].Mode.NoForwarding || s[7].Mode.Name != "fd" || !s[7].Mode.PassTun || s[4].Mode.Optional {
		t.Errorf("link modes: %+v %+v %+v", s[4].Mode, s[6].Mode, s[7].Mode)
	}
	if s[6].xlat.tunName() != "" || s[7].xlat.tunName() != map646FDTun || s[4].xlat.tunName() != map646Tun {
		t.Errorf("tun names: %q %q %q", s[4].xlat.tunName(), s[6].xlat.tunName(), s[7].xlat.tunName())
	}
	o.Mappings = 1
	if s, err = buildSetups(o, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if s[5].Label != "map646 tun, 1 mapping (A/A)" {
		t.Errorf("-mappings 1: label %q", s[5].Label)
	}
	if d := defaultSetups(""); contains(d, sTaygaFork) {
		t.Errorf("default setups without -tayga-fork: %v", d)
	}
	for _, bad := range [][]string{{"native6", "native6"}, {"jool"}} {
		o.Setups = bad
		if _, err := buildSetups(o, t.TempDir()); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
	o.Setups, o.TaygaFork = []string{sTaygaFork}, ""
	if _, err := buildSetups(o, t.TempDir()); err == nil || !strings.Contains(err.Error(), "-tayga-fork") {
		t.Errorf("tayga-fork without a binary: %v", err)
	}
}

func TestParseGRO(t *testing.T) {
	for in, want := range map[string][]condition{
		"on": {condGRO}, "off": {condNoGRO}, "both": {condGRO, condNoGRO}, "true": {condGRO}, "false": {condNoGRO},
		"on,udp": {condGRO, condUDPGRO}, "udp,off": {condUDPGRO, condNoGRO}, "both,list,on": {condGRO, condNoGRO, condGROList},
		"on, udp": {condGRO, condUDPGRO}, "on,napi": {condGRO, condNAPI},
	} {
		got, err := parseGRO(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("parseGRO(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"sometimes", "on,", "on,sometimes", ""} {
		if _, err := parseGRO(bad); err == nil {
			t.Errorf("parseGRO accepted %q", bad)
		}
	}
}

// TestEthtoolFeatures checks that every condition sets all three GRO
// switches, so that a condition never inherits one from the previous one.
func TestEthtoolFeatures(t *testing.T) {
	for c, want := range map[condition]string{
		condNoGRO:   "gro off rx-udp-gro-forwarding off rx-gro-list off",
		condGRO:     "gro on rx-udp-gro-forwarding off rx-gro-list off",
		condUDPGRO:  "gro on rx-udp-gro-forwarding on rx-gro-list off",
		condGROList: "gro on rx-udp-gro-forwarding off rx-gro-list on",
		condNAPI:    "gro on rx-udp-gro-forwarding on rx-gro-list off",
	} {
		if got := strings.Join(ethtoolFeatures(c), " "); got != want {
			t.Errorf("%s: ethtool -K IFACE %s, want %s", c.Key, got, want)
		}
	}
}

func TestParseTests(t *testing.T) {
	all, err := parseTests("")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range allTests {
		if !all.has(name) {
			t.Errorf("the default set misses %s", name)
		}
	}
	some, err := parseTests("udp,ping1s")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{testUDP: true, testPing1s: true, testPing: false, testTCP1: false, testTCP4: false} {
		if some.has(name) != want {
			t.Errorf("-tests udp,ping1s: has(%s) = %v", name, !want)
		}
	}
	for _, bad := range []string{"tcp", "udp,", "ping,iperf"} {
		if _, err := parseTests(bad); err == nil {
			t.Errorf("parseTests accepted %q", bad)
		}
	}
}
