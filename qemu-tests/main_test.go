package qemutests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/map646/map646/internal/testenv"
)

// The image under test, built once per test binary by TestMain.
var (
	skipReason string // why the QEMU tests cannot run here; "" if they can
	workDir    string
	map646Bin  string // static map646 built for the guest (and used to build images)
	baseImage  string // output directory of `map646 image build` for baseConfig
)

// tunConfig is the appliance in host (tun) mode: the IPv4 side on eth0,
// the IPv6 side on eth1 with an MTU 100 bytes below the server's link, so
// that full-size translated packets need path MTU discovery. Its metrics
// listen on every address, so the tests reach the appliance's own TCP
// service on both NICs.
const tunConfig = `translator {
  prefix = "2001:db8:64::/96"
  mapping {
    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }
  icmp_source_pool = ["203.0.113.64/26"]
}

interface "eth0" {
  addresses = ["203.0.113.1/28"]
  mtu       = 1500
}

interface "eth1" {
  addresses = ["2001:db8:ffff::1/64"]
  mtu       = 1400
}

route {
  to  = "2001:db8:6::/64"
  via = "2001:db8:ffff::2"
}

metrics {
  listen = ":9646"
}
`

// nicConfig is tunConfig in NIC mode (docs/configuration.md "nic"): the
// translator serves eth0 and eth1 with AF_PACKET sockets, its IPv6 MTU
// is eth1's 1400 as in tun mode, and the kernel keeps the appliance's own
// addresses, routes and metrics listener.
var nicConfig = strings.Replace(tunConfig, "  icmp_source_pool", `  nic {
    ipv4 = "eth0"
    ipv6 = "eth1"
  }
  icmp_source_pool`, 1)

// baseConfig is baked into the image: the link mode the image runs by
// default. The other mode is booted from a config drive (TestTraffic).
var baseConfig = tunConfig

func TestMain(m *testing.M) {
	skipReason = prerequisites()
	code := 0
	if skipReason == "" {
		var err error
		workDir, err = os.MkdirTemp("", "qm-image-")
		if err == nil {
			err = buildImage()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "qemu-tests:", err)
			os.RemoveAll(workDir)
			os.Exit(1)
		}
	}
	code = m.Run()
	if workDir != "" {
		os.RemoveAll(workDir)
	}
	os.Exit(code)
}

// prerequisites says what is missing for booting the appliance, if anything.
func prerequisites() string {
	if os.Geteuid() != 0 {
		return "the QEMU tests need root (network namespaces, tap devices)"
	}
	for _, p := range []string{"qemu-system-x86_64", "qemu-img", "ip", "syslinux"} {
		if _, err := exec.LookPath(p); err != nil {
			return p + " not found (deps.sh installs it)"
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return "/dev/net/tun missing: " + err.Error()
	}
	return ""
}

func needVM(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		testenv.SkipOrFail(t, skipReason)
	}
}

// buildImage compiles map646 as the guest needs it (static) and runs its
// own `image build` on baseConfig: the command operators use.
func buildImage() error {
	map646Bin = filepath.Join(workDir, "map646")
	// As `make build` does: static and stripped (a smaller initramfs
	// unpacks faster under TCG).
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", map646Bin, "github.com/map646/map646/cmd/map646")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	cfg := filepath.Join(workDir, "map646.hcl")
	if err := os.WriteFile(cfg, []byte(baseConfig), 0o644); err != nil {
		return err
	}
	baseImage = filepath.Join(workDir, "out")
	out, err := exec.Command(map646Bin, "image", "build", "-c", cfg, "-o", baseImage).CombinedOutput()
	if err != nil {
		return fmt.Errorf("map646 image build: %v\n%s", err, out)
	}
	fmt.Fprintf(os.Stderr, "qemu-tests: image sizes:\n%s", indent(string(out)))
	return nil
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}
