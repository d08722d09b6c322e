package main

import (
	"bufio"
	"encoding/json"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/map646/map646/appliance/daemon"
	"github.com/map646/map646/appliance/metrics"
)

// fakeControl answers the control socket protocol (one JSON request per
// line, one JSON reply per line) with canned replies, standing in for a
// running daemon.
func fakeControl(t *testing.T, replies map[string]any) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					var req struct{ Command string }
					_ = json.Unmarshal(sc.Bytes(), &req)
					_ = json.NewEncoder(c).Encode(replies[req.Command])
				}
			}()
		}
	}()
	return sock
}

func sampleStats() *metrics.Stats {
	return &metrics.Stats{
		Version: "v9", Digest: "0123456789abcdef0123", Config: "/etc/map646.hcl",
		Started: time.Now().Add(-90 * time.Second), Mappings: 2, Tun: "map646", Offloads: "csum,tso4",
		Healthy: true, Routes: 3, MetricsListen: "[::1]:9646",
		Packets:   []metrics.Count{{Dir: "4to6", Kind: "tcp", Value: 41}, {Dir: "6to4", Kind: "tcp", Value: 40}, {Dir: "4to6", Kind: "udp", Value: 5}},
		Bytes:     []metrics.Count{{Dir: "4to6", Value: 4100}, {Dir: "6to4", Value: 4000}},
		Drops:     []metrics.Count{{Dir: "4to6", Kind: "dst_unmapped", Value: 3}, {Dir: "6to4", Kind: "malformed", Value: 0}},
		Emitted:   2,
		Link:      []metrics.Count{{Kind: "reads", Value: 90}},
		Reloads:   metrics.Reloads{OK: 4, Failed: 1, LastError: "/etc/map646.hcl:7:12: Invalid mapping: bad"},
		Announcer: []metrics.Status{{Name: "bgp", Status: map[string]string{"203.0.113.14": "established"}}},
	}
}

func TestStatsPrintsTheDaemonsCounters(t *testing.T) {
	sample := sampleStats()
	sample.PendingDigest = "aabbccddeeff00112233"
	sock := fakeControl(t, map[string]any{"stats": map[string]any{"ok": true, "stats": sample}})
	out, _, err := runCmd(t, "stats", "--control-socket", sock)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"map646 v9, up 1m30s, data path healthy",
		"digest 0123456789abcdef)",
		"pending  digest aabbccddeeff0011: reloaded, runs in full from the next start",
		"mappings 2, routes 3, tun map646 (offloads csum,tso4)",
		"http://[::1]:9646/metrics",
		"reloads  4 ok, 1 failed",
		"/etc/map646.hcl:7:12: Invalid mapping: bad",
		"dropped 3",
		"4to6  dst_unmapped  3",
		`announcer bgp: {"203.0.113.14":"established"}`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stats output lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`(?m)^\s+tcp\s+41\s+40\s*$`).MatchString(out) || !regexp.MustCompile(`(?m)^\s+udp\s+5\s+0\s*$`).MatchString(out) {
		t.Errorf("packet table:\n%s", out)
	}
	if strings.Contains(out, "malformed") {
		t.Errorf("zero drop reasons are listed:\n%s", out)
	}

	out, _, err = runCmd(t, "stats", "--json", "--control-socket", sock)
	if err != nil {
		t.Fatal(err)
	}
	var st metrics.Stats
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out)
	}
	if st.Mappings != 2 || st.Reloads.Failed != 1 || len(st.Packets) != 3 {
		t.Errorf("--json: %+v", st)
	}
}

func TestStatsWithoutDaemon(t *testing.T) {
	_, _, err := runCmd(t, "stats", "--control-socket", filepath.Join(t.TempDir(), "none.sock"))
	if err == nil || !strings.Contains(err.Error(), "no running map646") {
		t.Errorf("err = %v", err)
	}
}

func TestReloadReportsOutcome(t *testing.T) {
	ok := fakeControl(t, map[string]any{"reload": map[string]any{"ok": true, "reload": daemon.ReloadResult{
		Digest: "fedcba9876543210ff", Mappings: 5, RoutesAdded: 2, RoutesRemoved: 1, DurationMillis: 12, NeedsRestart: []string{"translator.tun"},
		PendingDigest: "0011223344556677889900"}}})
	out, _, err := runCmd(t, "reload", "--control-socket", ok)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "reloaded: 5 mappings, digest fedcba9876543210, routes +2 -1, 12 ms") ||
		!strings.Contains(out, "translator.tun takes effect at the next start") ||
		!strings.Contains(out, "digest 0011223344556677 runs in full from the next start") {
		t.Errorf("reload output:\n%s", out)
	}

	refused := fakeControl(t, map[string]any{"reload": map[string]any{"ok": false, "reload": daemon.ReloadResult{},
		"error": "/etc/map646.hcl:3:12: Invalid RFC 6052 prefix: bad\n/etc/map646.hcl:9:5: Unsupported argument"}})
	_, stderr, err := runCmd(t, "reload", "--control-socket", refused)
	if err == nil || !strings.Contains(err.Error(), "running configuration stays") {
		t.Errorf("refused reload: err %v", err)
	}
	if !strings.Contains(stderr, "/etc/map646.hcl:3:12: Invalid RFC 6052 prefix") || !strings.Contains(stderr, "/etc/map646.hcl:9:5:") {
		t.Errorf("diagnostics not shown:\n%s", stderr)
	}

	// In use, but the kernel refused a route: not "refused", and it fails.
	partly := fakeControl(t, map[string]any{"reload": map[string]any{"ok": false, "reload": daemon.ReloadResult{Digest: "fedcba9876543210ff", InUse: true},
		"error": "new configuration in use, but: route 198.51.100.30/32: network is down"}})
	_, stderr, err = runCmd(t, "reload", "--control-socket", partly)
	if err == nil || strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), "reloaded (digest fedcba9876543210), but part of the configuration has not taken effect") ||
		!strings.Contains(stderr, "network is down") {
		t.Errorf("partly applied reload: err %v, stderr %q", err, stderr)
	}
}

func TestRunNeedsExactlyOneConfiguration(t *testing.T) {
	for _, args := range [][]string{{"run"}, {"run", "-c", "x.hcl", "--demo-config"}} {
		_, _, err := runCmd(t, args...)
		if err == nil || !strings.Contains(err.Error(), "either -c FILE or --demo-config") {
			t.Errorf("%v: err = %v", args, err)
		}
	}
	_, _, err := runCmd(t, "run", "-c", "x.hcl", "--log-format", "xml")
	if err == nil || !strings.Contains(err.Error(), "text or json") {
		t.Errorf("bad --log-format: %v", err)
	}
	_, _, err = runCmd(t, "run", "-c", filepath.Join(t.TempDir(), "missing.hcl"), "--control-socket", filepath.Join(t.TempDir(), "s"))
	if err == nil || !strings.Contains(err.Error(), "missing.hcl") {
		t.Errorf("missing file: %v", err)
	}
}

func TestCompletionScripts(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		out, _, err := runCmd(t, "completion", sh)
		if err != nil || !strings.Contains(out, "map646") {
			t.Errorf("completion %s: %v (%d bytes)", sh, err, len(out))
		}
	}
	// Dynamic completion of flag values, as the shell scripts ask for it.
	out, _, err := runCmd(t, "__complete", "run", "--log-format", "")
	if err != nil || !strings.Contains(out, "text\njson\n") {
		t.Errorf("--log-format completion: %v %q", err, out)
	}
}
