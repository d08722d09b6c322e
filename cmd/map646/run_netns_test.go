package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/map646/map646/appliance/metrics"
	"github.com/map646/map646/internal/netnstest"
	"github.com/map646/map646/internal/testenv"
)

// TestMain lets the test binary be the map646 command: started with
// MAP646_TEST_MAIN=1 it runs main() with its arguments, so the tests below
// drive the real CLI (flags, signals, exit codes) without building it.
func TestMain(m *testing.M) {
	if os.Getenv("MAP646_TEST_MAIN") == "1" {
		os.Args = append([]string{"map646"}, os.Args[1:]...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func map646Cmd(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "MAP646_TEST_MAIN=1")
	return cmd
}

// TestRunSignals: `map646 run` in a namespace reloads on SIGHUP, answers
// `map646 stats`, and on SIGTERM exits 0 leaving no tun behind.
func TestRunSignals(t *testing.T) {
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testenv.SkipOrFailf(t, "no /dev/net/tun: %v", err)
	}
	ns := netnstest.New(t, "dm-cmd")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "map646.hcl")
	sock := filepath.Join(dir, "ctl.sock")
	write := func(mappings string) {
		src := "translator {\n  prefix = \"2001:db8:64::/96\"\n" + mappings + "  tun {\n    name = \"dmcmd\"\n    queues = 1\n  }\n}\nlog {\n  format = \"json\"\n}\n"
		if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("  mapping {\n    ipv4 = \"198.51.100.10\"\n    ipv6 = \"2001:db8:6::10\"\n  }\n")

	var logs bytes.Buffer
	run := exec.Command("ip", "netns", "exec", ns.Name, os.Args[0], "run", "-c", cfg, "--control-socket", sock)
	run.Env = append(os.Environ(), "MAP646_TEST_MAIN=1")
	run.Stderr = &logs
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	t.Cleanup(func() {
		if run.ProcessState == nil {
			_ = run.Process.Kill()
			<-exited
		}
	})
	stats := func() *metrics.Stats {
		t.Helper()
		out, err := map646Cmd("stats", "--json", "--control-socket", sock).Output()
		if err != nil {
			return nil
		}
		var st metrics.Stats
		if err := json.Unmarshal(out, &st); err != nil {
			t.Fatalf("stats --json: %v\n%s", err, out)
		}
		return &st
	}
	deadline := time.Now().Add(30 * time.Second)
	var st *metrics.Stats
	for st = stats(); st == nil; st = stats() {
		if time.Now().After(deadline) {
			t.Fatalf("no stats within 30 s; log:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st.Mappings != 1 || st.Tun != "dmcmd" {
		t.Errorf("stats %+v", st)
	}

	write("  mapping {\n    ipv4 = \"198.51.100.10\"\n    ipv6 = \"2001:db8:6::10\"\n  }\n  mapping {\n    ipv4 = \"198.51.100.11\"\n    ipv6 = \"2001:db8:6::11\"\n  }\n")
	if err := run.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for st = stats(); st == nil || st.Reloads.OK != 1; st = stats() {
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP did not reload; log:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.Mappings != 2 {
		t.Errorf("after SIGHUP: %d mappings", st.Mappings)
	}
	if out := ns.MustRun(t, "ip", "route", "show", "table", "646", "dev", "dmcmd"); !strings.Contains(out, "198.51.100.10/31") {
		t.Errorf("routes after SIGHUP reload: %q", out)
	}

	// `map646 reload` with a broken file: diagnostics on stderr, exit 1.
	write("  mapping {\n    ipv4 = \"198.51.100.10\"\n  }\n")
	var stderr bytes.Buffer
	rl := map646Cmd("reload", "--control-socket", sock)
	rl.Stderr = &stderr
	if err := rl.Run(); err == nil {
		t.Error("map646 reload accepted a broken file")
	}
	if !strings.Contains(stderr.String(), cfg+":3:") || !strings.Contains(stderr.String(), "running configuration stays") {
		t.Errorf("reload stderr:\n%s", stderr.String())
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
	if out, err := ns.Output("ip", "link", "show", "dmcmd"); err == nil {
		t.Errorf("tun left after exit: %s", out)
	}
	// The log block asked for JSON.
	if first, _, _ := strings.Cut(logs.String(), "\n"); !strings.HasPrefix(first, "{") {
		t.Errorf("log is not JSON: %q", first)
	}
}
