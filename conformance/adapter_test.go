// Package conformance holds the adapter that plugs map646 into the external
// SIIT/EAM conformance suite (adapter.sh, run.sh); this test checks the
// configuration the adapter writes from the suite's variables.
package conformance

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/map646/map646/appliance/config"
)

func TestAdapterWritesTheHarnessPlanAsHCL(t *testing.T) {
	dir := t.TempDir()
	// A stand-in for the binary that records how it was started.
	fake := filepath.Join(dir, "map646")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"$@\" > \"$XLAT_WORKDIR/args\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "adapter.sh")
	cmd.Env = append(os.Environ(),
		"MAP646_BIN="+fake,
		"XLAT_WORKDIR="+dir,
		"XLAT_PREFIX6=2001:db8:64::/96",
		"XLAT_EAM=198.51.100.10=2001:db8:6::10 198.51.100.11=2001:db8:6::11",
		"XLAT_SELF4=203.0.113.65",
		"XLAT_POOL6791=203.0.113.64/26",
		"XLAT_LOWEST_IPV6_MTU=1400",
		"XLAT_TUN=j-tun",
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("adapter.sh: %v\n%s", err, out)
	}
	args, err := os.ReadFile(filepath.Join(dir, "args"))
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "map646.hcl")
	if want := "run -c " + conf + " --control-socket " + filepath.Join(dir, "map646.sock"); strings.TrimSpace(string(args)) != want {
		t.Errorf("started as %q, want %q", args, want)
	}
	c, err := config.Load(conf)
	if err != nil {
		t.Fatal(err)
	}
	tr := c.Translator
	if tr.Prefix != netip.MustParsePrefix("2001:db8:64::/96") || len(tr.Mappings) != 2 ||
		tr.Mappings[1].IPv4 != netip.MustParsePrefix("198.51.100.11/32") || tr.Mappings[1].IPv6 != netip.MustParsePrefix("2001:db8:6::11/128") ||
		tr.LowestIPv6MTU != 1400 || len(tr.ICMPSourcePool) != 1 || tr.ICMPSourcePool[0] != netip.MustParsePrefix("203.0.113.64/26") ||
		tr.Tun.Name != "j-tun" || !tr.Tun.Routes {
		t.Errorf("generated configuration: %+v", tr)
	}
}

func TestAdapterNeedsTheHarnessVariables(t *testing.T) {
	cmd := exec.Command("bash", "adapter.sh")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "XLAT_WORKDIR") {
		t.Errorf("adapter.sh without the harness: %v %s", err, out)
	}
}

// TestAdapterNICMode: with XLAT_TUN empty the adapter configures NIC mode
// on the harness's interfaces instead of a tun.
func TestAdapterNICMode(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "map646")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(),
		"MAP646_BIN="+fake,
		"XLAT_WORKDIR="+dir,
		"XLAT_PREFIX6=2001:db8:64::/96",
		"XLAT_EAM=198.51.100.10=2001:db8:6::10",
		"XLAT_TUN=",
	)
	cmd := exec.Command("bash", "adapter.sh")
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "XLAT_IF4") {
		t.Errorf("NIC mode without interfaces: %v %s", err, out)
	}
	cmd = exec.Command("bash", "adapter.sh")
	cmd.Env = append(env, "XLAT_IF4=j-x4", "XLAT_IF6=j-x6")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("adapter.sh: %v\n%s", err, out)
	}
	c, err := config.Load(filepath.Join(dir, "map646.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if tr := c.Translator; tr.Link != config.LinkNIC || tr.NIC != (config.NIC{IPv4: "j-x4", IPv6: "j-x6", Queues: 1}) {
		t.Errorf("generated configuration: link %q nic %+v", tr.Link, tr.NIC)
	}
}
