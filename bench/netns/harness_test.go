package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/map646/map646/internal/testenv"
	"golang.org/x/sys/unix"
)

// requireNetns skips (fails on CI) unless the machine can run the harness: root, a tun
// device, and the tools deps.sh installs.
func requireNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "needs root for network namespaces")
	}
	if f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0); err != nil {
		testenv.SkipOrFailf(t, "needs /dev/net/tun: %v", err)
	} else {
		f.Close()
	}
	var miss []string
	for _, tool := range []string{"ip", "iperf3", "ping", "ethtool", "sysctl", "ss", "/usr/sbin/tayga"} {
		if _, err := exec.LookPath(tool); err != nil {
			miss = append(miss, tool)
		}
	}
	if len(miss) > 0 {
		testenv.SkipOrFailf(t, "needs %s (./deps.sh installs them)", strings.Join(miss, ", "))
	}
}

// TestQuickHarness is the harness's smoke test (-quick: one round of 3 s
// tests): every setup, native and translated, with the 1M-mapping table,
// must produce a number for every measurement. It asserts nothing about
// speed.
func TestQuickHarness(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the netns smoke run takes about a minute")
	}
	requireNetns(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "map646")
	build := exec.Command("go", "build", "-o", bin, "github.com/map646/map646/cmd/map646")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build map646: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "benchmarks.md")
	raw := filepath.Join(dir, "raw.json")
	o := options{
		Rounds: 1, Duration: 3 * time.Second, Pings: 50, Mappings: 1_000_000,
		Pings1s: 2, Setups: defaultSetups(""), Map646: bin, Tayga: "/usr/sbin/tayga", Out: out, JSON: raw, Conds: []condition{condGRO},
		Log: t.Logf,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	md, err := harness(ctx, o)
	if err != nil {
		t.Fatalf("%v\n%s", err, md)
	}
	t.Logf("\n%s", md)
	b, err := os.ReadFile(out)
	if err != nil || !strings.Contains(string(b), sectionBegin) {
		t.Errorf("section not written to %s: %v", out, err)
	}
	// harness fails on a missing number itself; check the claim independently.
	// Link modes the binary rejects are left out and named; everything
	// measured has its numbers.
	for k := range o.Setups {
		if s := o.Setups[k]; strings.Contains(md, "`"+s+"`: unsupported") && s != sMap646NIC && s != sMap646FD {
			t.Errorf("%s reported unsupported", s)
		}
	}
	if strings.Contains(md, "not measured") || strings.Contains(md, "n/a") {
		t.Errorf("a target or a value was not measured:\n%s", md)
	}
	if st, err := os.Stat(raw); err != nil || st.Size() == 0 {
		t.Errorf("raw values not written: %v", err)
	}
	if left := ourNamespaces(t); len(left) > 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
}

// TestHarnessFailsWithoutTraffic: a translator that never forwards is a
// failed measurement, not a slow one, and cleanup still happens.
func TestHarnessFailsWithoutTraffic(t *testing.T) {
	requireNetns(t)
	dir := t.TempDir()
	// A "translator" that runs but creates no tun and forwards nothing.
	fake := filepath.Join(dir, "map646")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n[ \"$1\" = version ] && { echo fake; exit 0; }\n[ \"$1\" = check ] && exit 0\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	o := options{Rounds: 1, Duration: time.Second, Pings: 5, Pings1s: 1, Mappings: 1,
		Setups: []string{sNative6, sMap646}, Map646: fake, StartTimeout: 3 * time.Second, Log: t.Logf}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	md, err := harness(ctx, o)
	if err == nil {
		t.Fatalf("no error although nothing was forwarded:\n%s", md)
	}
	if !strings.Contains(err.Error(), "no echo reply") || !strings.Contains(err.Error(), "gro/map646/tcp1/round 1") {
		t.Errorf("error does not say what failed: %v", err)
	}
	if left := ourNamespaces(t); len(left) > 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
}

func ourNamespaces(t *testing.T) []string {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	prefix := nsPrefix + strconv.Itoa(os.Getpid()) + "-"
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, prefix) {
			left = append(left, strings.Fields(line)[0])
		}
	}
	return left
}

// TestHarnessFreshNamespacesPerSetup: every setup, in every round and
// condition, is measured in namespaces built anew, so nothing a setup left
// in the router namespace reaches the next one. The seam plays a translator
// that adds a policy rule (as map646 does; the kernel then keeps
// fib_has_custom_rules set in that namespace for good, which made native
// forwarding measured after map646 walk the rules): the next setup must not
// find it, and its namespaces must be new ones.
func TestHarnessFreshNamespacesPerSetup(t *testing.T) {
	requireNetns(t)
	const rule = "646"
	var calls int
	seen := map[string]bool{}
	hook := func(topo topology, _ unit) error {
		calls++
		out, err := exec.Command("ip", "-n", topo.Router, "rule", "show").CombinedOutput()
		if err != nil {
			return err
		}
		if strings.Contains(string(out), "lookup "+rule) {
			t.Errorf("setup %d: the router namespace still has the previous setup's rule:\n%s", calls, out)
		}
		// A namespace's cookie (SO_NETNS_COOKIE) is never reused, unlike
		// its inode number: a new one proves a new namespace.
		cookie, err := netnsCookie(topo.Router)
		if err != nil {
			return err
		}
		if seen[cookie] {
			t.Errorf("setup %d: router namespace %s was measured in before", calls, cookie)
		}
		seen[cookie] = true
		_, err = exec.Command("ip", "-n", topo.Router, "rule", "add", "pref", "100", "lookup", rule).CombinedOutput()
		return err
	}
	o := options{Rounds: 2, Duration: time.Second, Pings: 2, Pings1s: 1, Mappings: 1,
		Setups: []string{sNative6, sNative4}, Conds: []condition{condGRO, condNoGRO},
		Tests: testSet{testPing: true}, Log: t.Logf, beforeSetup: hook}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if md, err := harness(ctx, o); err != nil {
		t.Fatalf("%v\n%s", err, md)
	}
	if want := 2 * 2 * 2; calls != want {
		t.Errorf("namespaces built for %d setups, want %d (rounds x conditions x setups)", calls, want)
	}
	if left := ourNamespaces(t); len(left) > 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
}

// TestHarnessPairsSetupsTestByTest: the harness measures one test at a
// time for every setup (a compared pair back to back, not a whole setup's
// tests apart), each in namespaces built anew, and reverses the setups'
// order every other round. Under the old fixed order (every test of native
// IPv6, then every test of native IPv4, in every round) the first member of
// each pair was always measured first and the pair's tests were a setup's
// tests apart.
func TestHarnessPairsSetupsTestByTest(t *testing.T) {
	requireNetns(t)
	var got []string
	setups := []string{sNative6, sNative4}
	hook := func(_ topology, u unit) error {
		got = append(got, fmt.Sprintf("%d %s %s", u.Round+1, setups[u.Setup], strings.Join(u.names(), "+")))
		return nil
	}
	o := options{Rounds: 2, Duration: time.Second, Pings: 2, Pings1s: 1, Mappings: 1,
		Setups: setups, Conds: []condition{condGRO},
		Tests: testSet{testPing: true, testPing1s: true}, Log: t.Logf, beforeSetup: hook}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	md, err := harness(ctx, o)
	if err != nil {
		t.Fatalf("%v\n%s", err, md)
	}
	want := []string{
		"1 native6 ping", "1 native4 ping", "1 native6 ping1s", "1 native4 ping1s",
		"2 native4 ping", "2 native6 ping", "2 native4 ping1s", "2 native6 ping1s",
	}
	if !slices.Equal(got, want) {
		t.Errorf("measuring order:\n got %q\nwant %q", got, want)
	}
	if !strings.Contains(md, "`-interleave test`") {
		t.Errorf("the report does not say how the run was ordered:\n%s", md)
	}
	if left := ourNamespaces(t); len(left) > 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
}

// TestHarnessSameFlowsPerRound: in a round every setup's iperf3 tests
// leave from the same client ports (as iperf3 itself reports them), so a
// multi-queue translator puts both members of a pair on the same queues;
// the next round uses other ports. With -kernel-flows, as before, each
// setup gets ports of its own.
func TestHarnessSameFlowsPerRound(t *testing.T) {
	requireNetns(t)
	for _, kernel := range []bool{false, true} {
		raw := filepath.Join(t.TempDir(), "raw.json")
		o := options{Rounds: 2, Duration: time.Second, Pings: 2, Pings1s: 1, Mappings: 1,
			Setups: []string{sNative6, sNative4}, Conds: []condition{condGRO}, JSON: raw, KernelFlows: kernel,
			Tests: testSet{testTCP1: true, testTCP4: true, testUDP: true}, Log: t.Logf}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		md, err := harness(ctx, o)
		cancel()
		if err != nil {
			t.Fatalf("%v\n%s", err, md)
		}
		b, err := os.ReadFile(raw)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Ports map[string]map[string][]int `json:"client_ports"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		p6, p4 := doc.Ports[g(sNative6)], doc.Ports[g(sNative4)]
		for _, m := range []string{mTCP1, mTCP4, mUDP} {
			for r := 0; r < 2; r++ {
				if p6[m][r] == 0 || p4[m][r] == 0 {
					t.Fatalf("kernel-flows %v: no client port for %s round %d: %v", kernel, m, r+1, doc.Ports)
				}
				if same := p6[m][r] == p4[m][r]; same == kernel {
					t.Errorf("kernel-flows %v, %s round %d: native IPv6 from port %d, native IPv4 from %d", kernel, m, r+1, p6[m][r], p4[m][r])
				}
			}
			if !kernel && p6[m][0] == p6[m][1] {
				t.Errorf("%s: both rounds used port %d", m, p6[m][0])
			}
		}
		if !kernel && (p6[mTCP4][0] != p6[mTCP1][0]+portTCP4 || p6[mUDP][0] != p6[mTCP1][0]+portUDP) {
			t.Errorf("round 1's ports: TCP 1 stream %d, 4 streams %d, UDP %d", p6[mTCP1][0], p6[mTCP4][0], p6[mUDP][0])
		}
	}
	if left := ourNamespaces(t); len(left) > 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
}

// netnsCookie returns the cookie of namespace ns, read from a socket opened
// in it on a thread of its own that dies afterwards (it never leaves ns).
func netnsCookie(ns string) (string, error) {
	type result struct {
		cookie uint64
		err    error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		r := result{}
		defer func() { ch <- r }()
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			r.err = err
			return
		}
		defer f.Close()
		if r.err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); r.err != nil {
			return
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			r.err = err
			return
		}
		defer unix.Close(fd)
		v, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		r.cookie, r.err = v, err
	}()
	r := <-ch
	return strconv.FormatUint(r.cookie, 10), r.err
}
