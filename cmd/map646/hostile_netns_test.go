package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
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

// rssKiB is the resident set of process pid.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestRunSurvivesHostileInput replays issue 9's attacks on a real `map646
// run` in a namespace: hostile reloads (100k-deep HCL, mappings_file
// /dev/zero or a FIFO, the configuration replaced by a FIFO) and a
// slowloris on the metrics endpoint. After each the daemon still answers
// with its first configuration; a SIGTERM during a long reload stops it
// at once and cleanly. The RSS before and after each attack is logged.
func TestRunSurvivesHostileInput(t *testing.T) {
	netnstest.RequireTun(t, "dmh")
	ns := netnstest.New(t, "dmh")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "map646.hcl")
	sock := filepath.Join(dir, "ctl.sock")
	const metricsAddr = "127.0.0.1:9646" // the namespace's own loopback
	config := func(translatorExtra string) string {
		return "translator {\n  prefix = \"2001:db8:64::/96\"\n  mapping {\n    ipv4 = \"198.51.100.10\"\n    ipv6 = \"2001:db8:6::10\"\n  }\n" +
			translatorExtra + "  tun {\n    name = \"dmhost\"\n    queues = 1\n  }\n}\nmetrics {\n  listen = \"" + metricsAddr + "\"\n}\n"
	}
	good := config("")
	write := func(src string) {
		os.Remove(cfg)
		if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(good)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	run := exec.Command("ip", "netns", "exec", ns.Name, os.Args[0], "run", "-c", cfg, "--control-socket", sock)
	run.Env = append(os.Environ(), "MAP646_TEST_MAIN=1")
	run.Stderr = &logs
	exited := startRun(t, run)
	pid := run.Process.Pid // ip netns exec execs map646 in its place
	stats := func() *metrics.Stats { return runStats(t, sock) }

	deadline := time.Now().Add(30 * time.Second)
	var st0 *metrics.Stats
	for st0 = stats(); st0 == nil; st0 = stats() {
		if time.Now().After(deadline) {
			t.Fatalf("no stats within 30 s; log:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	type row struct {
		attack, sent, outcome string
		before, after         int
	}
	var table []row
	stillRunning := func(what string) {
		t.Helper()
		st := stats()
		if st == nil || st.Digest != st0.Digest || st.Mappings != 1 {
			t.Fatalf("after %s: stats %+v; log:\n%s", what, st, logs.String())
		}
	}
	reload := func() (string, time.Duration, error) {
		var stderr bytes.Buffer
		rl := map646Cmd("reload", "--control-socket", sock)
		rl.Stderr = &stderr
		begin := time.Now()
		err := rl.Run()
		return stderr.String(), time.Since(begin), err
	}

	deep := "translator " + strings.Repeat("{", 100_000) + strings.Repeat("}", 100_000)
	for _, a := range []struct {
		attack, sent, want string
		setup              func()
	}{
		{"deep HCL reload", "100,000 nested braces (200 kB)", cfg + ":1:76: Nesting too deep", func() { write(deep) }},
		{"/dev/zero reload", `mappings_file = "/dev/zero"`, "/dev/zero is not a regular file (a character device)",
			func() { write(config("  mappings_file = \"/dev/zero\"\n")) }},
		{"FIFO mappings_file reload", `mappings_file = FIFO with no writer`, "is not a regular file (a FIFO)",
			func() { write(config("  mappings_file = \"fifo\"\n")) }},
		{"FIFO configuration reload", "map646.hcl replaced by a FIFO", "is not a regular file (a FIFO)", func() {
			os.Remove(cfg)
			if err := syscall.Mkfifo(cfg, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		before := rssKiB(t, pid)
		a.setup()
		out, took, err := reload()
		write(good)
		if err == nil || !strings.Contains(out, a.want) || !strings.Contains(out, "running configuration stays") {
			t.Errorf("%s: reload %v after %v:\n%s\nwant %q", a.attack, err, took, out, a.want)
		}
		if took > 10*time.Second {
			t.Errorf("%s: reload took %v", a.attack, took)
		}
		stillRunning(a.attack)
		table = append(table, row{a.attack, a.sent, fmt.Sprintf("refused in %v, still running", took.Round(time.Millisecond)), before, rssKiB(t, pid)})
	}

	// Slowloris: many connections that send half a request and wait.
	before := rssKiB(t, pid)
	const attackers = 500
	var held []net.Conn
	err := ns.Do(func() error {
		for range attackers {
			c, err := net.Dial("tcp", metricsAddr)
			if err != nil {
				return err
			}
			held = append(held, c)
			if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
				return err
			}
		}
		// By hand: an http.Client would dial from another thread,
		// outside the namespace.
		for _, p := range []string{"/healthz", "/metrics"} {
			c, err := net.Dial("tcp", metricsAddr)
			if err != nil {
				return fmt.Errorf("%s under slowloris: %w", p, err)
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", p)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
			}
			c.Close()
			if err != nil {
				return fmt.Errorf("%s under slowloris: %w", p, err)
			}
			if resp.StatusCode != 200 {
				return fmt.Errorf("%s under slowloris: %s", p, resp.Status)
			}
		}
		return nil
	})
	closed := 0
	for _, c := range held {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := bufio.NewReader(c).ReadByte(); err != nil && !os.IsTimeout(err) {
			closed++
		}
		c.Close()
	}
	if err != nil {
		t.Error(err)
	}
	if closed < attackers-64 {
		t.Errorf("slowloris: the server closed %d of %d half-sent connections, want at least %d", closed, attackers, attackers-64)
	}
	stillRunning("slowloris")
	table = append(table, row{"slowloris on metrics", fmt.Sprintf("%d half-sent requests held open", attackers),
		fmt.Sprintf("/healthz and /metrics answered; %d connections closed by the cap", closed), before, rssKiB(t, pid)})

	// SIGTERM during a reload that takes seconds (a million mappings).
	f, err := os.Create(filepath.Join(dir, "large.csv"))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := range 1 << 20 {
		fmt.Fprintf(w, "10.%d.%d.%d,2001:db8:6::%x:%x\n", i>>16, i>>8&0xff, i&0xff, i>>16, i&0xffff)
	}
	w.Flush()
	f.Close()
	write(config("  mappings_file = \"large.csv\"\n"))
	before = rssKiB(t, pid)
	if err := run.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the reload is reading
	begin := time.Now()
	if err := run.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("map646 run after SIGTERM during a reload: %v\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("map646 run did not exit after SIGTERM during a reload")
	}
	took := time.Since(begin)
	if took > 3*time.Second {
		t.Errorf("SIGTERM during a reload took %v to stop the daemon", took)
	}
	if !strings.Contains(logs.String(), "reload abandoned: stopping") {
		t.Errorf("the reload was not abandoned; log:\n%s", logs.String())
	}
	table = append(table, row{"SIGTERM during a 1M-line reload", "SIGHUP, then SIGTERM 200 ms into the reload",
		fmt.Sprintf("reload abandoned, exited 0 in %v", took.Round(time.Millisecond)), before, 0})
	if out, err := ns.Output("ip", "link", "show", "dmhost"); err == nil {
		t.Errorf("tun left after exit: %s", out)
	}
	if _, err := os.Stat(sock); err == nil {
		t.Error("control socket left after exit")
	}
	t.Log("| attack | what was sent | outcome | RSS before | RSS after |")
	for _, r := range table {
		after := "exited"
		if r.after > 0 {
			after = fmt.Sprintf("%.1f MiB", float64(r.after)/1024)
		}
		t.Logf("| %s | %s | %s | %.1f MiB | %s |", r.attack, r.sent, r.outcome, float64(r.before)/1024, after)
	}
}
