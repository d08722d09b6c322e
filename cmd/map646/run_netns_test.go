package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
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
// `map646 stats`, and on SIGTERM exits 0 leaving no tun behind. Under a
// fake systemd ($NOTIFY_SOCKET, $WATCHDOG_USEC) it says READY=1 once set
// up, RELOADING=1 and READY=1 around each reload, feeds the watchdog while
// healthy and says STOPPING=1 on SIGTERM. Its JSON log gives durations
// with their unit.
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

	notify := newFakeNotifySocket(t)
	// Every notification but the watchdog's, in order; the watchdog's are counted.
	notes := make(chan string, 100)
	var pings atomicCounter
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := notify.conn.Read(buf)
			if err != nil {
				close(notes)
				return
			}
			if m := string(buf[:n]); m == "WATCHDOG=1" {
				pings.add()
			} else {
				notes <- m
			}
		}
	}()
	nextNote := func(want string) {
		t.Helper()
		select {
		case m := <-notes:
			if !strings.HasPrefix(m, want) {
				t.Errorf("notification %q, want %q", m, want)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("no %q notification within 30 s", want)
		}
	}

	var logs bytes.Buffer
	run := exec.Command("ip", "netns", "exec", ns.Name, os.Args[0], "run", "-c", cfg, "--control-socket", sock)
	run.Env = append(os.Environ(), "MAP646_TEST_MAIN=1", "NOTIFY_SOCKET="+notify.path, "WATCHDOG_USEC=10000000", "WATCHDOG_PID=")
	run.Stderr = &logs
	exited := startRun(t, run)
	stats := func() *metrics.Stats { return runStats(t, sock) }

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
	nextNote("READY=1\nSTATUS=translating: 1 mappings on dmcmd")
	// The data path is healthy: the watchdog is fed at each health poll.
	for pings.get() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no WATCHDOG=1 from a healthy translator; log:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
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
	nextNote("RELOADING=1\nMONOTONIC_USEC=")
	nextNote("READY=1")
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
	// A refused reload ends in READY=1 too: the translator runs on.
	nextNote("RELOADING=1\nMONOTONIC_USEC=")
	nextNote("READY=1")

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
	nextNote("STOPPING=1")
	// The set-up line says how long it took, with the unit in the key.
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `"translator set up"`) {
			var rec map[string]any
			if err := json.Unmarshal([]byte(l), &rec); err != nil {
				t.Fatalf("log line %q: %v", l, err)
			}
			if _, ok := rec["took_ms"].(float64); !ok || rec["took"] != nil {
				t.Errorf("set-up log line without took_ms: %s", l)
			}
		}
	}
	// The log block asked for JSON.
	if first, _, _ := strings.Cut(logs.String(), "\n"); !strings.HasPrefix(first, "{") {
		t.Errorf("log is not JSON: %q", first)
	}
}

type atomicCounter struct{ n atomic.Int64 }

func (c *atomicCounter) add()       { c.n.Add(1) }
func (c *atomicCounter) get() int64 { return c.n.Load() }

// TestRunTunNameTaken: a tun name that belongs to a link of another kind is
// reported as such, not as the kernel's bare "TUNSETIFF: invalid argument".
func TestRunTunNameTaken(t *testing.T) {
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testenv.SkipOrFailf(t, "no /dev/net/tun: %v", err)
	}
	ns := netnstest.New(t, "dm-taken")
	ns.MustRun(t, "ip", "link", "add", "dmtaken", "type", "veth", "peer", "name", "dmtakenp")
	cfg := filepath.Join(t.TempDir(), "map646.hcl")
	src := "translator {\n  prefix = \"2001:db8:64::/96\"\n  tun {\n    name = \"dmtaken\"\n    queues = 1\n  }\n}\n"
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	run := exec.Command("ip", "netns", "exec", ns.Name, os.Args[0], "run", "-c", cfg, "--control-socket", filepath.Join(t.TempDir(), "ctl.sock"))
	run.Env = append(os.Environ(), "MAP646_TEST_MAIN=1")
	out, err := run.CombinedOutput()
	if err == nil {
		t.Fatalf("map646 run took a veth link for its tun:\n%s", out)
	}
	if !strings.Contains(string(out), `a link named "dmtaken" exists and is not a tun (its driver is veth)`) {
		t.Errorf("output:\n%s", out)
	}
	if got := ns.MustRun(t, "ip", "link", "show", "dmtaken"); !strings.Contains(got, "dmtaken") {
		t.Errorf("the veth link is gone: %q", got)
	}
}

// startRun starts run (a `map646 run`, under `ip netns exec`, which execs
// it in its place) and kills it when the test ends unless the test waited
// for it; the channel receives Wait's result.
func startRun(t *testing.T, run *exec.Cmd) <-chan error {
	t.Helper()
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
	return exited
}

// runStats asks the daemon behind sock for its counters: nil while it does
// not answer; an answer that is not the stats JSON fails t.
func runStats(t *testing.T, sock string) *metrics.Stats {
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
