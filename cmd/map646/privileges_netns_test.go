package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/map646/map646/appliance/metrics"
	"github.com/map646/map646/internal/netnstest"
)

// TestRunDropsPrivileges: `map646 run` with a run_as block (and --group)
// runs, once ready, as that user and group with CAP_NET_ADMIN,
// CAP_NET_BIND_SERVICE and CAP_NET_RAW only (keptCaps), and
// still reloads, restores a route the kernel lost and removes everything
// at stop. It builds the binary with CGO_ENABLED=0, as `make` does:
// changing the credentials of every thread needs a Go-only process.
func TestRunDropsPrivileges(t *testing.T) {
	netnstest.RequireTun(t, "dm-priv")
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch users") // RequireTun already demands root on CI
	}
	ns := netnstest.New(t, "dm-priv")
	dir := t.TempDir()
	// The translator reads its file again as nobody on reload.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "map646")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "map646.hcl")
	sock := filepath.Join(dir, "ctl.sock")
	extra := "" // blocks after run_as
	write := func(mappings string) {
		src := "translator {\n  prefix = \"2001:db8:64::/96\"\n" + mappings + "  tun {\n    name = \"dmpriv\"\n    queues = 1\n  }\n}\nrun_as {\n  user = \"nobody\"\n}\n" + extra
		if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mapping := func(v4, v6 string) string {
		return "  mapping {\n    ipv4 = \"" + v4 + "\"\n    ipv6 = \"" + v6 + "\"\n  }\n"
	}
	write(mapping("198.51.100.10", "2001:db8:6::10"))

	var logs bytes.Buffer
	run := exec.Command("ip", "netns", "exec", ns.Name, bin, "run", "-c", cfg, "--control-socket", sock, "--group", "nogroup")
	run.Stderr = &logs
	exited := startRun(t, run)
	stats := func() *metrics.Stats { return runStats(t, sock) }

	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30 s; log:\n%s", what, logs.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitUntil("stats", func() bool { return stats() != nil })
	waitUntil("ready", func() bool { return strings.Contains(logs.String(), "msg=ready") })

	status := procStatus(t, run.Process.Pid)
	for key, want := range map[string]string{
		"Uid":    "65534\t65534\t65534\t65534",
		"Gid":    "65534\t65534\t65534\t65534",
		"Groups": "",
		// CAP_NET_ADMIN (12), and CAP_NET_BIND_SERVICE (10) and
		// CAP_NET_RAW (13), which root holds at start and which are kept
		// for a reload that adds a BGP port or router advertisements.
		"CapEff":     "0000000000003400",
		"CapPrm":     "0000000000003400",
		"CapInh":     "0000000000000000",
		"NoNewPrivs": "1",
	} {
		if got := status[key]; got != want {
			t.Errorf("/proc/%d/status %s = %q, want %q", run.Process.Pid, key, got, want)
		}
	}

	// A reload still changes routes.
	write(mapping("198.51.100.10", "2001:db8:6::10") + mapping("198.51.100.11", "2001:db8:6::11"))
	if out, err := map646Cmd("reload", "--control-socket", sock).CombinedOutput(); err != nil {
		t.Fatalf("reload as nobody: %v\n%s\nlog:\n%s", err, out, logs.String())
	}
	routes := func() string { return ns.Run("ip", "route", "show", "table", "646") }
	if !strings.Contains(routes(), "198.51.100.10/31 dev dmpriv") {
		t.Errorf("routes after the reload: %q", routes())
	}
	// A route the kernel lost is put back.
	ns.MustRun(t, "ip", "route", "del", "198.51.100.10/31", "dev", "dmpriv", "table", "646")
	waitUntil("route restored", func() bool { return strings.Contains(routes(), "198.51.100.10/31 dev dmpriv") })

	// A reload that adds router advertisements starts them as nobody:
	// CAP_NET_RAW was kept for it.
	ns.MustRun(t, "ip", "link", "add", "dmra0", "type", "veth", "peer", "name", "dmra1")
	ns.Sysctl("net.ipv6.conf.dmra0.accept_dad=0")
	ns.MustRun(t, "ip", "link", "set", "dmra1", "up")
	ns.MustRun(t, "ip", "link", "set", "dmra0", "up")
	extra = "router_advertisement \"dmra0\" {}\n"
	write(mapping("198.51.100.10", "2001:db8:6::10") + mapping("198.51.100.11", "2001:db8:6::11"))
	if out, err := map646Cmd("reload", "--control-socket", sock).CombinedOutput(); err != nil {
		t.Fatalf("reload adding router advertisements as nobody: %v\n%s\nlog:\n%s", err, out, logs.String())
	}
	if st := stats(); st == nil || !st.Healthy || len(st.Announcer) != 1 || st.Announcer[0].Name != "ra" {
		t.Errorf("after adding router advertisements: %+v", st)
	}

	if err := run.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("map646 run after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("map646 run did not exit after SIGTERM")
	}
	if out, err := ns.Output("ip", "link", "show", "dmpriv"); err == nil {
		t.Errorf("tun left after exit: %s", out)
	}
	if r := routes(); strings.TrimSpace(r) != "" {
		t.Errorf("routes left after exit: %q", r)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("errors logged:\n%s", logs.String())
	}
}

// procStatus returns the fields of /proc/pid/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		m[k] = strings.TrimSpace(v)
	}
	return m
}
