package qemutests

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/map646/map646/appliance/config"

	"github.com/map646/map646/internal/netnstest"
	"github.com/map646/map646/internal/testenv"
)

func digestOf(t *testing.T, path string) string {
	t.Helper()
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return c.Digest
}

// TestBootDisk boots the disk image the three ways it ships: raw under
// SeaBIOS (syslinux), raw under UEFI (OVMF, systemd-boot) and qcow2; each
// must reach the ready line with the baked configuration and power off
// cleanly on the ACPI power button.
func TestBootDisk(t *testing.T) {
	needVM(t)
	want := digestOf(t, filepath.Join(workDir, "map646.hcl"))
	for _, tc := range []struct {
		name   string
		file   string
		format string
		uefi   bool
	}{
		{"raw-bios", "map646.img", "raw", false},
		{"raw-uefi", "map646.img", "raw", true},
		{"qcow2-bios", "map646.qcow2", "qcow2", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := startVM(t, vmConfig{disk: filepath.Join(baseImage, tc.file), format: tc.format, uefi: tc.uefi, nics: idleNICs(t)})
			r := v.waitReady(tc.name)
			if r.Config != "baked" || r.Digest != want || r.Mappings != 1 {
				t.Errorf("ready %+v, want the baked config %s with 1 mapping", r, want)
			}
			v.powerdown()
		})
	}
}

// idleNICs gives the VM the eth0 and eth1 that baseConfig configures, as
// taps in a namespace of their own that carries no traffic: the translator
// refuses to start without the interfaces its configuration names.
func idleNICs(t *testing.T) []*os.File {
	ns := netnstest.New(t, "qm-")
	return []*os.File{ns.Tap(t, "qmtap4"), ns.Tap(t, "qmtap6")}
}

// isoDrive makes an ISO9660 config drive.
func isoDrive(t *testing.T, label string, files map[string]string) string {
	t.Helper()
	if _, err := exec.LookPath("xorriso"); err != nil {
		testenv.SkipOrFail(t, "xorriso missing (Debian package xorriso)")
	}
	src := filepath.Join(t.TempDir(), "src")
	for name, data := range files {
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(data), 0o644)
	}
	iso := filepath.Join(t.TempDir(), "drive.iso")
	out, err := exec.Command("xorriso", "-as", "mkisofs", "-quiet", "-V", label, "-J", "-r", "-o", iso, src).CombinedOutput()
	if err != nil {
		t.Fatalf("xorriso: %v\n%s", err, out)
	}
	return iso
}

// fatDrive makes a FAT config drive with mkfs.fat and mtools.
func fatDrive(t *testing.T, label string, files map[string]string) string {
	t.Helper()
	for _, p := range []string{"mkfs.fat", "mcopy"} {
		if _, err := exec.LookPath(p); err != nil {
			testenv.SkipOrFailf(t, "%s missing (Debian packages dosfstools, mtools)", p)
		}
	}
	img := filepath.Join(t.TempDir(), "drive.img")
	if out, err := exec.Command("mkfs.fat", "-C", "-n", label, img, "2048").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.fat: %v\n%s", err, out)
	}
	for name, data := range files {
		p := filepath.Join(t.TempDir(), filepath.Base(name))
		os.WriteFile(p, []byte(data), 0o644)
		if out, err := exec.Command("mcopy", "-i", img, p, "::"+name).CombinedOutput(); err != nil {
			t.Fatalf("mcopy: %v\n%s", err, out)
		}
	}
	return img
}

// driveConfig is baseConfig with the mapping changed to 198.51.100.11
// and a second one added, so the ready line's count and digest, and the
// traffic, tell which configuration runs.
var driveConfig = strings.Replace(baseConfig, `    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }`, `    ipv4 = "198.51.100.11"
    ipv6 = "2001:db8:6::10"
  }
  mapping {
    ipv4 = "198.51.100.12"
    ipv6 = "2001:db8:6::12"
  }`, 1)

// brokenConfig has an error on line 3, column 12.
const brokenConfig = `translator {
  prefix = "2001:db8:64::/96"
  mapping = 42
}
`

func TestConfigDrive(t *testing.T) {
	needVM(t)
	cfgFile := filepath.Join(t.TempDir(), "drive.hcl")
	os.WriteFile(cfgFile, []byte(driveConfig), 0o644)
	driveDigest := digestOf(t, cfgFile)
	bakedDigest := digestOf(t, filepath.Join(workDir, "map646.hcl"))

	if !strings.Contains(driveConfig, "198.51.100.12") {
		t.Fatal("driveConfig did not change baseConfig's mapping")
	}
	for _, tc := range []struct {
		name        string
		drive       func(t *testing.T) string
		wantConfig  string
		wantDigest  string
		wantConsole *regexp.Regexp
		traffic     bool // check that the drive's mapping is the one translated
	}{
		{"map646-iso", func(t *testing.T) string {
			return isoDrive(t, "MAP646", map[string]string{"map646.hcl": driveConfig})
		}, "drive:MAP646", driveDigest, regexp.MustCompile(`using the configuration of config drive /dev/vd. \(iso9660 "MAP646"\)`), true},
		{"config-2-iso", func(t *testing.T) string {
			return isoDrive(t, "config-2", map[string]string{"openstack/latest/user_data": driveConfig})
		}, "drive:config-2", driveDigest, nil, false},
		{"broken-cidata-fat", func(t *testing.T) string {
			return fatDrive(t, "cidata", map[string]string{"user-data": brokenConfig})
		}, "baked", bakedDigest, regexp.MustCompile(`config drive /dev/vd. \(vfat "(?i:cidata)"\) is invalid; running the baked configuration:\n.*user-data:3:`), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v *vm
			var r ready
			var tp *topology
			if tc.traffic {
				tp = bootTopology(t, tc.drive(t))
				v, r = tp.vm, tp.ready
			} else {
				v = startVM(t, vmConfig{imageDir: baseImage, drives: []string{tc.drive(t)}, nics: idleNICs(t)})
				r = v.waitReady(tc.name)
			}
			if r.Config != tc.wantConfig || r.Digest != tc.wantDigest {
				t.Errorf("ready %+v, want config=%s digest=%s", r, tc.wantConfig, tc.wantDigest)
			}
			if tc.wantConsole != nil {
				if _, err := v.waitFor(tc.wantConsole, time.Second); err != nil {
					t.Error(err)
				}
			}
			if tp != nil {
				if out, err := tp.client.Output("ping", "-c", "2", "-w", "20", "198.51.100.11"); err != nil {
					t.Errorf("the drive's mapping 198.51.100.11 does not translate: %v\n%s", err, out)
				}
				if out, err := tp.client.Output("ping", "-c", "2", "-w", "3", serverV4); err == nil {
					t.Errorf("the baked mapping %s still translates:\n%s", serverV4, out)
				}
			}
			v.powerdown()
		})
	}
}

// TestTranslatorFailureStaysUp boots without the NICs the configuration
// names: the translator cannot start. PID 1 says why on the console,
// retries a bounded number of times, then stays up without it (no reboot
// loop) and still powers off cleanly.
func TestTranslatorFailureStaysUp(t *testing.T) {
	needVM(t)
	v := startVM(t, vmConfig{imageDir: baseImage})
	if _, err := v.waitFor(regexp.MustCompile(`map646: the translator \(configuration baked\) stopped: .*eth0.*\n(?s:.*)map646: the translator failed 3 times with every configuration; staying up`), bootTimeout); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v.exited:
		t.Fatalf("the guest ended after the translator failed:\n%s", v.Console())
	case <-time.After(2 * time.Second):
	}
	if strings.Contains(v.Console(), "reboot: Restarting system") || readyRE.MatchString(v.Console()) {
		t.Errorf("a reboot or a ready line although the translator never ran:\n%s", v.Console())
	}
	v.powerdown()
}
