// Package packaging holds the Debian package description (nfpm.yaml), the
// systemd unit and the example configuration it installs; its test builds
// the package with `make package` and installs it into an empty root.
package packaging

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/map646/map646/appliance/daemon"
	"github.com/map646/map646/internal/testenv"
)

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFailf(t, "%s is missing (./deps.sh installs it): %v", tool, err)
		}
	}
}

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// TestPackage builds the .deb with `make package`, checks its control
// data, installs it into an empty root with dpkg, runs the installed binary
// on the installed example configuration, reads a man page, has
// systemd-analyze verify the unit, and reinstalls it over an edited
// configuration, which must survive (a conffile).
func TestPackage(t *testing.T) {
	need(t, "make", "dpkg", "dpkg-deb", "systemd-analyze")
	tmp := t.TempDir()
	pkgDir := filepath.Join(tmp, "pkg")
	run(t, "..", nil, "make", "package",
		"BIN="+filepath.Join(tmp, "map646"), "MAN_DIR="+filepath.Join(tmp, "man"), "PKG_DIR="+pkgDir, "DEB_VERSION=1.2.3")
	debs, _ := filepath.Glob(filepath.Join(pkgDir, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make package made %v", debs)
	}
	deb := debs[0]

	info := run(t, "", nil, "dpkg-deb", "-I", deb)
	for _, want := range []string{"Package: map646", "Version: 1.2.3", "Section: net"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb -I lacks %q:\n%s", want, info)
		}
	}
	if conf := run(t, "", nil, "dpkg-deb", "-f", deb, "Package"); strings.TrimSpace(conf) != "map646" {
		t.Errorf("Package field %q", conf)
	}
	ctrl := filepath.Join(tmp, "control")
	run(t, "", nil, "dpkg-deb", "-e", deb, ctrl)
	if b, err := os.ReadFile(filepath.Join(ctrl, "conffiles")); err != nil || strings.TrimSpace(string(b)) != "/etc/map646/map646.hcl" {
		t.Errorf("conffiles %q (%v), want /etc/map646/map646.hcl", b, err)
	}

	// A real install into an empty root.
	root := filepath.Join(tmp, "root")
	for _, d := range []string{"var/lib/dpkg/updates", "var/lib/dpkg/info"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	install := func() {
		run(t, "", nil, "dpkg", "--root="+root, "--force-not-root", "--force-script-chrootless",
			"--force-confold", "--log=/dev/null", "-i", deb)
	}
	install()
	for _, f := range []string{"usr/bin/map646", "usr/lib/systemd/system/map646.service", "etc/map646/map646.hcl", "usr/lib/sysusers.d/map646.conf",
		"usr/share/man/man8/map646.8.gz", "usr/share/man/man8/map646-run.8.gz", "usr/share/man/man8/map646-check.8.gz"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("not installed: %v", err)
		}
	}
	if st := run(t, "", nil, "dpkg-query", "--root="+root, "-W", "-f=${Status}", "map646"); st != "install ok installed" {
		t.Errorf("dpkg-query: %q", st)
	}
	// The postinst made the service's system user, in that root.
	if _, err := exec.LookPath("systemd-sysusers"); err == nil {
		passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
		if u := passwdEntry(string(passwd), "map646"); len(u) != 7 || u[2] == "0" || u[6] != "/usr/sbin/nologin" {
			t.Errorf("user map646 in the root's /etc/passwd: %q\n%s", u, passwd)
		}
	}
	// The installed example configuration is valid for the installed binary.
	bin := filepath.Join(root, "usr/bin/map646")
	if out := run(t, "", nil, bin, "check", filepath.Join(root, "etc/map646/map646.hcl")); !strings.Contains(out, ": OK: 1 mappings") {
		t.Errorf("check of the example: %s", out)
	}
	// The man page of run is troff and carries run's --help text.
	f, err := os.Open(filepath.Join(root, "usr/share/man/man8/map646-run.8.gz"))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	page, err := io.ReadAll(zr)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(page, []byte(".nh\n.TH \"MAP646-RUN\" \"8\"")) || !bytes.Contains(page, []byte("NOTIFY_SOCKET")) {
		t.Errorf("map646-run.8 starts %.120q", page)
	}

	// systemd-analyze verify resolves the unit's dependencies and checks
	// that its commands exist, inside the root; it needs systemd's own
	// units there. Parse problems are only warnings: any output fails.
	hostUnits := "/usr/lib/systemd/system"
	if _, err := os.Stat(filepath.Join(hostUnits, "sysinit.target")); err != nil {
		hostUnits = "/lib/systemd/system"
	}
	run(t, "", nil, "cp", "-an", hostUnits+"/.", filepath.Join(root, "usr/lib/systemd/system")+"/")
	cmd := exec.Command("systemd-analyze", "verify", "--man=no", "--root="+root, "map646.service")
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	unit, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/map646.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nType=notify\n", "\nWatchdogSec=", "\nExecStart=/usr/bin/map646 run -c /etc/map646/map646.hcl\n", "\nExecReload=/usr/bin/map646 reload\n"} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("unit lacks %q", want)
		}
	}

	// An operator's edit of the conffile survives reinstalling.
	conf := filepath.Join(root, "etc/map646/map646.hcl")
	edited := "# edited by the operator\ntranslator {\n  prefix = \"2001:db8:64::/96\"\n}\n"
	if err := os.WriteFile(conf, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	install()
	if b, _ := os.ReadFile(conf); string(b) != edited {
		t.Errorf("reinstalling replaced the edited configuration:\n%s", b)
	}
}

// passwdEntry is the fields of name's line in an /etc/passwd, or nil.
func passwdEntry(passwd, name string) []string {
	for line := range strings.Lines(passwd) {
		if f := strings.Split(strings.TrimSpace(line), ":"); f[0] == name {
			return f
		}
	}
	return nil
}

// TestUnitRunsUnprivileged: the unit never runs the translator as root:
// it runs as the system user the package's sysusers.d file makes, with
// ambient capabilities inside its bounding set, a file system read-only
// but for its runtime directory, which holds the default control socket
// and the instance locks.
func TestUnitRunsUnprivileged(t *testing.T) {
	unit, err := os.ReadFile("map646.service")
	if err != nil {
		t.Fatal(err)
	}
	svc := map[string]string{}
	section := ""
	for line := range strings.Lines(string(unit)) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]" && line != "" && !strings.HasPrefix(line, "#"):
			k, v, _ := strings.Cut(line, "=")
			if _, dup := svc[k]; dup {
				t.Errorf("%s set twice", k)
			}
			svc[k] = v
		}
	}
	user := svc["User"]
	if user == "" || user == "root" || user == "0" || svc["DynamicUser"] == "yes" {
		t.Fatalf("User=%q (DynamicUser=%q): the unit runs as root, or as a user the package does not make", user, svc["DynamicUser"])
	}
	sysusers, err := os.ReadFile("map646.sysusers")
	if err != nil {
		t.Fatal(err)
	}
	made := false
	for line := range strings.Lines(string(sysusers)) {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "u" && f[1] == user && f[2] != "0" {
			made = true
		}
	}
	if !made || svc["Group"] != user {
		t.Errorf("sysusers.d file does not make user %s with its group (Group=%q):\n%s", user, svc["Group"], sysusers)
	}
	bounding := strings.Fields(svc["CapabilityBoundingSet"])
	ambient := strings.Fields(svc["AmbientCapabilities"])
	if !slices.Contains(ambient, "CAP_NET_ADMIN") {
		t.Errorf("AmbientCapabilities=%q lacks CAP_NET_ADMIN (tun, routes, sysctls)", svc["AmbientCapabilities"])
	}
	for _, c := range ambient {
		if !slices.Contains(bounding, c) {
			t.Errorf("ambient %s outside CapabilityBoundingSet=%q", c, svc["CapabilityBoundingSet"])
		}
	}
	for _, c := range bounding {
		if !slices.Contains([]string{"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_BPF"}, c) {
			t.Errorf("CapabilityBoundingSet has %s, which the translator does not need", c)
		}
	}
	for k, want := range map[string]string{"ProtectSystem": "strict", "NoNewPrivileges": "yes", "ProtectHome": "yes",
		"RuntimeDirectory": filepath.Base(daemon.DefaultLockDir)} {
		if svc[k] != want {
			t.Errorf("%s=%q, want %q", k, svc[k], want)
		}
	}
	// The runtime directory is where the daemon writes by default.
	if filepath.Dir(daemon.DefaultControlSocket) != daemon.DefaultLockDir || filepath.Dir(daemon.DefaultLockDir) != "/run" {
		t.Errorf("control socket %s and locks %s are not both in /run/%s", daemon.DefaultControlSocket, daemon.DefaultLockDir, svc["RuntimeDirectory"])
	}
	// /proc/sys must stay writable: the forwarding sysctls.
	if svc["ProtectKernelTunables"] == "yes" {
		t.Error("ProtectKernelTunables=yes: the translator could not set ip_forward")
	}
}

// TestVerifyCatchesBrokenUnit: the verify step above fails on a unit with
// a mistake (a misspelt Type= only warns, with exit status 0).
func TestVerifyCatchesBrokenUnit(t *testing.T) {
	need(t, "systemd-analyze")
	unit, err := os.ReadFile("map646.service")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad646.service")
	broken := bytes.Replace(unit, []byte("Type=notify\n"), []byte("Type=notfy\n"), 1)
	broken = bytes.ReplaceAll(broken, []byte("/usr/bin/map646"), []byte("/bin/true"))
	if err := os.WriteFile(bad, broken, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", bad).CombinedOutput()
	if err == nil && len(bytes.TrimSpace(out)) == 0 {
		t.Errorf("systemd-analyze verify accepted Type=notfy silently")
	}
	if !bytes.Contains(out, []byte("notfy")) {
		t.Errorf("verify output does not name the mistake: %s", out)
	}
}
