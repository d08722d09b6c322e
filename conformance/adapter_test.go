// Package conformance holds the adapter that plugs map646 into the external
// SIIT/EAM conformance suite (adapter.sh, run.sh); this test checks the
// configuration the adapter writes from the suite's variables.
package conformance

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/internal/netnstest"
)

// harness is the environment the suite starts the adapter in: bin as the
// translator, dir as the work directory, the plan's prefix and one
// mapping, host mode unless extra (which wins) says otherwise.
func harness(bin, dir string, extra ...string) []string {
	env := append(os.Environ(), "MAP646_BIN="+bin, "MAP646_LINK=", "XLAT_WORKDIR="+dir,
		"XLAT_PREFIX6=2001:db8:64::/96", "XLAT_EAM=198.51.100.10=2001:db8:6::10")
	return append(env, extra...)
}

func TestAdapterWritesTheHarnessPlanAsHCL(t *testing.T) {
	dir := t.TempDir()
	// A stand-in for the binary that records how it was started.
	fake := filepath.Join(dir, "map646")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"$@\" > \"$XLAT_WORKDIR/args\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "adapter.sh")
	cmd.Env = harness(fake, dir,
		"XLAT_EAM=198.51.100.10=2001:db8:6::10 198.51.100.11=2001:db8:6::11",
		"XLAT_SELF4=203.0.113.65",
		"XLAT_POOL6791=203.0.113.64/26",
		"XLAT_LOWEST_IPV6_MTU=1400",
		"XLAT_TUN=j-tun",
		"XLAT_IF4=j-x4", "XLAT_IF6=j-x6",
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
		tr.Tun.Name != "j-tun" || !tr.Tun.Routes ||
		!slices.Equal(tr.Tun.IPv4Interfaces, []string{"j-x4"}) || !slices.Equal(tr.Tun.IPv6Interfaces, []string{"j-x6"}) {
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
	env := harness(fake, dir, "XLAT_TUN=")
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

// TestAdapterFDMode: with MAP646_LINK=fd the adapter opens the tun
// XLAT_TUN itself (bare IP: no packet information, no vnet header), hands
// it to map646 as fd 3 and writes an fd block instead of a tun block.
func TestAdapterFDMode(t *testing.T) {
	netnstest.RequireTun(t, "cfa")
	ns := netnstest.New(t, "cfa")
	dir := t.TempDir()
	// A stand-in for the binary that records its arguments, what its fd 3
	// is, and the tun's kind while that fd holds it open.
	fake := filepath.Join(dir, "map646")
	script := "#!/bin/sh\n{ echo \"$@\"; readlink /proc/$$/fd/3; ip -d link show \"$XLAT_TUN\"; } > \"$XLAT_WORKDIR/args\" 2>&1\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := ns.Command("bash", "adapter.sh")
	cmd.Env = harness(fake, dir, "MAP646_LINK=fd", "XLAT_TUN=cfa-tun")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("adapter.sh: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "args"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(b), "\n", 3)
	conf := filepath.Join(dir, "map646.hcl")
	if want := "run -c " + conf + " --control-socket " + filepath.Join(dir, "map646.sock"); len(lines) < 3 || lines[0] != want {
		t.Fatalf("started as %q, want %q", b, want)
	}
	if lines[1] != "/dev/net/tun" {
		t.Errorf("fd 3 is %q, want /dev/net/tun", lines[1])
	}
	if !strings.Contains(lines[2], "cfa-tun") || !strings.Contains(lines[2], "tun type tun pi off vnet_hdr off") {
		t.Errorf("the inherited tun: %s", lines[2])
	}
	c, err := config.Load(conf)
	if err != nil {
		t.Fatal(err)
	}
	if tr := c.Translator; tr.Link != config.LinkFD || tr.FD.FD != 3 {
		t.Errorf("generated configuration: link %q fd %+v", tr.Link, tr.FD)
	}
	// The tun lived as long as the descriptor: it is gone with the process.
	if out, err := ns.Output("ip", "link", "show", "cfa-tun"); err == nil {
		t.Errorf("tun left after the translator exited: %s", out)
	}
}

// TestAdapterRefusesUnknownLinkModes: a misspelt MAP646_LINK, or fd mode
// without a tun name, stops the adapter with a message instead of
// starting some other mode.
func TestAdapterRefusesUnknownLinkModes(t *testing.T) {
	for _, tc := range []struct{ link, tun, want string }{
		{"tap", "j-tun", "MAP646_LINK=tap"},
		{"fd", "", "XLAT_TUN"},
	} {
		cmd := exec.Command("bash", "adapter.sh")
		cmd.Env = harness("/bin/false", t.TempDir(), "MAP646_LINK="+tc.link, "XLAT_TUN="+tc.tun)
		if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("MAP646_LINK=%s XLAT_TUN=%s: %v %s", tc.link, tc.tun, err, out)
		}
	}
}
