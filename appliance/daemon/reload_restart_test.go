package daemon

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

// kernelState is everything of h's fake kernel a reload could change:
// routes, policy rules, addresses and sysctls.
func (h *harness) kernelState() string {
	routes := h.k.routeSet()
	rules, _ := h.k.OwnRules()
	h.k.mu.Lock()
	defer h.k.mu.Unlock()
	var addrs []string
	for a := range h.k.addrs {
		addrs = append(addrs, fmt.Sprint(a))
	}
	slices.Sort(addrs)
	sysctls := slices.Sorted(maps.Keys(h.k.sysctls))
	for i, k := range sysctls {
		sysctls[i] = k + "=" + h.k.sysctls[k]
	}
	return fmt.Sprintf("routes %v\nrules %v\naddrs %v\nsysctls %v", routes, rules, addrs, sysctls)
}

// TestReloadKeepsRestartOnlySettingsRunning: a reload that changes a
// setting it answers needs a restart (restartOnlySettings) puts in
// everything else of the file (here a new mapping, whose route goes into
// the running tun) but neither the kernel state nor the engine
// configuration follows the setting: turning tun.routes off must not
// remove the routes into the tun and the policy rules while forwarding
// stays on (a black hole, and a host routing untranslated traffic
// natively), nor a tun → nic or fd change build a NIC plan and engine
// configuration on a running tun. Review H3-5.
func TestReloadKeepsRestartOnlySettingsRunning(t *testing.T) {
	tunBlock := "  tun {\n    name = \"dmtest0\"\n    queues = 1\n  }\n"
	for _, tc := range []struct {
		name     string
		edit     func(string) string
		settings []string
	}{
		{"tun.routes off", func(s string) string {
			return strings.Replace(s, "queues = 1\n", "queues = 1\n    routes = false\n", 1)
		}, []string{"translator.tun"}},
		{"tun name", func(s string) string { return strings.Replace(s, `name = "dmtest0"`, `name = "dmtest1"`, 1) }, []string{"translator.tun"}},
		{"tun mtu", func(s string) string { return strings.Replace(s, "queues = 1\n", "queues = 1\n    mtu = 9000\n", 1) }, []string{"translator.tun"}},
		{"tun to nic", func(s string) string {
			return strings.Replace(s, tunBlock, "  nic {\n    ipv4 = \"eth0\"\n  }\n", 1)
		}, []string{"translator.tun", "translator link (fd, nic)"}}, // the tun block goes too
		{"tun to fd ethernet", func(s string) string {
			return strings.Replace(s, tunBlock, "  fd {\n    fd = 3\n    ethernet = true\n    mtu = 1400\n  }\n", 1)
		}, []string{"translator.tun", "translator link (fd, nic)"}}, // the tun block goes too
		{"metrics.listen", func(s string) string { return s + "metrics {\n  listen = \"[::1]:9646\"\n}\n" }, []string{"metrics.listen"}},
		{"log level", func(s string) string { return s + "log {\n  level = \"debug\"\n}\n" }, []string{"log"}},
		{"log format", func(s string) string { return s + "log {\n  format = \"json\"\n}\n" }, []string{"log"}},
		{"run_as", func(s string) string { return s + "run_as {\n  user = \"nobody\"\n}\n" }, []string{"run_as"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10"))
			if !strings.Contains(base, tunBlock) {
				t.Fatalf("baseConfig has no %q", tunBlock)
			}
			h := start(t, base)
			defer h.stop()
			before := h.kernelState()
			pol := h.eng.Load().Config().Policy

			changed := tc.edit(strings.Replace(base, mappingBlocks("198.51.100.10"), mappingBlocks("198.51.100.10", "198.51.100.20"), 1))
			if changed == base+"" || !strings.Contains(changed, "198.51.100.20") {
				t.Fatal("the edit changed nothing")
			}
			writeConfig(t, h.cfg, changed)
			res, err := RequestReload(h.sock)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(res.NeedsRestart, tc.settings) || res.PendingDigest == "" || res.RoutesAdded != 1 || res.RoutesRemoved != 0 {
				t.Errorf("reload answered %+v; want %v pending a restart, one route added, none removed", res, tc.settings)
			}
			want := strings.Replace(before, "198.51.100.10/32 dev dmtest0 table 646", "198.51.100.10/32 dev dmtest0 table 646 198.51.100.20/32 dev dmtest0 table 646", 1)
			if got := h.kernelState(); got != want {
				t.Errorf("kernel after the reload:\n%s\nwant the running state with the new mapping's route:\n%s", got, want)
			}
			xc := h.eng.Load().Config()
			if xc.Policy.DecrementTTL != pol.DecrementTTL || xc.Policy.IPv4MTU != pol.IPv4MTU || xc.Policy.IPv6MTU != pol.IPv6MTU {
				t.Errorf("engine policy after the reload: decrement TTL %v, MTUs %d/%d; want the running %v, %d/%d",
					xc.Policy.DecrementTTL, xc.Policy.IPv4MTU, xc.Policy.IPv6MTU, pol.DecrementTTL, pol.IPv4MTU, pol.IPv6MTU)
			}
			if n := xc.Map.Table().Len(); n != 2 {
				t.Errorf("engine has %d mappings after the reload, want 2 (the reload itself applies)", n)
			}
			// Health checks go on against the running plan: still healthy.
			if st, err := QueryStats(h.sock); err != nil || !st.Healthy {
				t.Errorf("stats after the reload: healthy=%v err=%v", st.Healthy, err)
			}
		})
	}
}

// TestApplicableKeepsEveryRestartOnlySetting: for each entry of
// restartOnlySettings, a file that changes it is applied with the running
// value, and only that setting is named; everything else is the file's.
func TestApplicableKeepsEveryRestartOnlySetting(t *testing.T) {
	const base = `translator {
  prefix = "2001:db8:64::/96"
  ipv4_address = "192.0.2.1"
  mapping_counters = true
  mapping {
    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }
  %s
}
metrics {
  listen = "%s"
  mapping_top = %d
}
log {
  level = "%s"
  drops = %t
}
%s
`
	running := parse(t, sprintf(base, `tun { name = "map646" }`, "[::1]:9646", 0, "info", false, ""))
	for _, tc := range []struct {
		settings []string
		loaded   string
	}{
		{[]string{"translator.tun"}, sprintf(base, `tun {
    name = "map646"
    routes = false
  }`, "[::1]:9646", 5, "info", true, "")},
		{[]string{"translator link (fd, nic)"}, sprintf(base, `nic { ipv4 = "eth0" }`, "[::1]:9646", 5, "info", true, "")},
		{[]string{"translator link (fd, nic)"}, sprintf(base, `fd { fd = 3 }`, "[::1]:9646", 5, "info", true, "")},
		{[]string{"metrics.listen"}, sprintf(base, `tun { name = "map646" }`, "[::1]:9647", 5, "info", true, "")},
		{[]string{"log"}, sprintf(base, `tun { name = "map646" }`, "[::1]:9646", 5, "debug", true, "")},
		{[]string{"run_as"}, sprintf(base, `tun { name = "map646" }`, "[::1]:9646", 5, "info", true, `run_as { user = "nobody" }`)},
	} {
		loaded := parse(t, tc.loaded)
		got, names := applicable(running, loaded)
		if !slices.Equal(names, tc.settings) {
			t.Errorf("%s: named %v", tc.settings, names)
		}
		if _, again := applicable(running, got); len(again) != 0 {
			t.Errorf("%s: what is applied still differs from what runs in %v", tc.settings, again)
		}
		// What changes at once is the file's.
		if got.Metrics.MappingTop != 5 || !got.Log.Drops || got.Digest != loaded.Digest || entryCount(got) != 1 {
			t.Errorf("%s: applied mapping_top %d, drops %v, digest %s (file %s), %d mappings",
				tc.settings, got.Metrics.MappingTop, got.Log.Drops, got.Digest, loaded.Digest, entryCount(got))
		}
		if _, changed := applicable(parse(t, tc.loaded), loaded); len(changed) != 0 {
			t.Errorf("%s: applicable changed the loaded configuration", tc.settings)
		}
	}
	if got, names := applicable(running, running); got != running || names != nil {
		t.Errorf("nothing changed: got a copy %v or names %v", got != running, names)
	}
}
