package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The tun-echo setup is native IPv6 (same destination, no translation)
// with a translator process; it needs the echo's binary and is not one of
// the default setups.
func TestBuildSetupsTunEcho(t *testing.T) {
	o := options{Setups: []string{sNative6, sTunEcho, sMap646, sTunEchoURing}, Map646: "/bin/map646", TunEcho: "/bin/tunecho", Mappings: 1}
	s, err := buildSetups(o, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	x, ok := s[1].xlat.(*tunEchoTranslator)
	if !ok || s[1].Key != sTunEcho || s[1].Dst != server6 || s[1].Mode != nil {
		t.Fatalf("tun-echo setup: %+v", s[1])
	}
	if x.bin != o.TunEcho || x.queues != tunEchoQueues || x.tunName() != tunEchoTun || x.uring {
		t.Errorf("tun-echo translator: %+v", x)
	}
	if u, ok := s[3].xlat.(*tunEchoTranslator); !ok || !u.uring || s[3].Dst != server6 || u.bin != o.TunEcho || s[3].Label == s[1].Label {
		t.Errorf("tun-echo-uring setup: %+v", s[3])
	}
	if contains(defaultSetups("/tmp/tayga-fork/tayga"), sTunEchoURing) {
		t.Error("tun-echo-uring is a default setup")
	}
	for _, name := range []string{map646Tun, map646FDTun, taygaTun, taygaForkTun} {
		if name == tunEchoTun {
			t.Errorf("tun-echo's tun has the name of another setup's: %s", name)
		}
	}
	if contains(defaultSetups("/tmp/tayga-fork/tayga"), sTunEcho) {
		t.Error("tun-echo is a default setup")
	}
	o.TunEcho = ""
	if _, err := buildSetups(o, t.TempDir()); err == nil || !strings.Contains(err.Error(), "-tun-echo") {
		t.Errorf("tun-echo without a binary: %v", err)
	}
	o.TunEcho = "/nonexistent/tunecho"
	if err := checkPrerequisites(o); err == nil || !strings.Contains(err.Error(), "/nonexistent/tunecho") {
		t.Errorf("prerequisites with a missing -tun-echo binary: %v", err)
	}
}

// Both directions take the detour: whatever arrives on either veth goes
// into the tun, and only what the echo writes back (input interface: the
// tun) takes the main table.
func TestTunEchoRoutesAndRules(t *testing.T) {
	routes := strings.Join(tunEchoRoutes("tunX"), "\n")
	for _, want := range []string{
		"link set tunX mtu 1520 up",
		"route replace 2001:db8:6::/64 dev tunX table 100",
		"route replace 2001:db8:1::/64 dev tunX table 100",
	} {
		if !strings.Contains(routes, want) {
			t.Errorf("routes lack %q:\n%s", want, routes)
		}
	}
	var rules []string
	for _, r := range tunEchoRules() {
		rules = append(rules, strings.Join(r, " "))
	}
	want := []string{"iif rtr4 lookup 100 pref 100", "iif rtr6 lookup 100 pref 100"}
	if strings.Join(rules, ";") != strings.Join(want, ";") {
		t.Errorf("rules %q, want %q", rules, want)
	}
}

// The report compares the detour with native forwarding and map646 with
// the detour, CPU included (both run a process).
func TestRenderMarkdownTunEcho(t *testing.T) {
	info := testInfo()
	info.Setups = []setup{{Key: sNative6, Label: "native IPv6"}, {Key: sTunEcho, Label: "tun echo (IPv6)"}, {Key: sMap646, Label: "map646 tun"}}
	info.Conds = []condition{condGRO}
	info.Translated = map[string]bool{g(sTunEcho): true, g(sMap646): true}
	r := newResults([]string{g(sNative6), g(sTunEcho), g(sMap646)}, 2)
	for i, v := range [][3]float64{{10, 8, 6}, {8, 6, 3}} {
		r.set(g(sNative6), mTCP1, i, v[0])
		r.set(g(sTunEcho), mTCP1, i, v[1])
		r.set(g(sMap646), mTCP1, i, v[2])
		r.set(g(sTunEcho), mCPUTCP1, i, 1)
		r.set(g(sMap646), mCPUTCP1, i, 2)
	}
	md := renderMarkdown(info, r)
	for _, want := range []string{
		"| map646 tun / native IPv6 | tun echo (IPv6) / native IPv6 | map646 tun / tun echo (IPv6) |",
		// 6/10, 3/8 -> 0.49; 8/10, 6/8 -> 0.775; 6/8, 3/6 -> 0.625.
		"| TCP, 1 stream | 0.49× | 0.78× | 0.62× |",
		"| translator CPU, TCP 1 stream | — | — | 2.00× |",
		"The tun echo is native IPv6 with a detour: policy rules (`iif rtr4`, `iif rtr6` → table 100) send both directions into a 2-queue tun",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

// The echo passes a TCP connection through the router's tun, with read
// and write or with its io_uring: the client reaches the server's IPv6
// address, and the tun counts (in both directions) at least the bytes the
// server received, so the stream went through the echo and not around it.
func TestTunEchoPassesTCP(t *testing.T) {
	requireNetns(t)
	bin, err := buildTunEcho(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, uring := range []bool{false, true} {
		t.Run("uring="+strconv.FormatBool(uring), func(t *testing.T) { testTunEchoPassesTCP(t, bin, uring) })
	}
}

func testTunEchoPassesTCP(t *testing.T, bin string, uring bool) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topo := newTopology(os.Getpid())
	defer topo.down(context.Background())
	if err := topo.up(ctx, condGRO); err != nil {
		t.Fatal(err)
	}
	srv, err := startIn(topo.Server, filepath.Join(dir, "iperf3.log"), "iperf3", "-s")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.stop(3 * time.Second)
	if err := waitListening(ctx, topo.Server, srv, 5201, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	x := &tunEchoTranslator{bin: bin, dir: dir, queues: tunEchoQueues, uring: uring}
	p, err := x.start(ctx, topo)
	defer func() {
		if err := x.stop(ctx, topo); err != nil {
			t.Errorf("stop: %v", err)
		}
	}()
	if err != nil {
		t.Fatal(err)
	}
	if q := tunQueues(ctx, topo.Router, tunEchoTun); !strings.HasPrefix(q, strconv.Itoa(tunEchoQueues)+" tx queue(s)") {
		t.Errorf("tun queues: %s", q)
	}
	m := measurer{topo: topo, duration: 2 * time.Second}
	r, err := m.tcp(ctx, server6, 1)
	if err != nil {
		t.Fatal(err)
	}
	stat := func(name string) float64 {
		out, err := runIn(ctx, topo.Router, "cat", "/sys/class/net/"+tunEchoTun+"/statistics/"+name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// tx: what the kernel handed the echo; rx: what the echo wrote back.
	tx, rx, txPkts := stat("tx_bytes"), stat("rx_bytes"), stat("tx_packets")
	t.Logf("TCP %.2f Gbit/s; tun tx %.0f B in %.0f packets (%.0f B each), rx %.0f B", r.BitsPerSecond/1e9, tx, txPkts, tx/txPkts, rx)
	if got := r.Bits / 8; tx < got || rx < got {
		t.Errorf("the server received %.0f bytes, the tun carried tx %.0f / rx %.0f: the stream went around the echo", got, tx, rx)
	}
	// The echo hands everything back: rx and tx differ by what was in
	// flight when the counters were read at most.
	if rx < tx*0.99 {
		t.Errorf("tun tx %.0f B, rx %.0f B: the echo lost packets", tx, rx)
	}
	if p.exited() {
		t.Errorf("tunecho exited: %v%s", p.err, p.logTail())
	}
	if err := x.stop(ctx, topo); err != nil {
		t.Errorf("stop: %v", err)
	}
	// The echo's own count: packets read, none refused on the way back.
	b, _ := os.ReadFile(filepath.Join(dir, map[bool]string{false: "tunecho.log", true: "tunecho-uring.log"}[uring]))
	var read, refused int
	for _, m := range regexp.MustCompile(`queue \d+: (\d+) packets, \d+ bytes, (\d+) write errors`).FindAllStringSubmatch(string(b), -1) {
		n, _ := strconv.Atoi(m[1])
		e, _ := strconv.Atoi(m[2])
		read, refused = read+n, refused+e
	}
	loop := map[bool]string{false: "read/write", true: "io_uring"}[uring]
	if read < int(txPkts) || refused != 0 || strings.Count(string(b), "tun "+tunEchoTun+", "+loop+"\n") != tunEchoQueues {
		t.Errorf("echo read %d packets (the tun handed out %.0f), %d refused:\n%s", read, txPkts, refused, b)
	}
}

// The pkt-echo setups are native IPv6 (same destination) moved by
// bench/pktecho on the router's veths, with or without its transmit ring;
// neither is a default setup.
func TestBuildSetupsPktEcho(t *testing.T) {
	o := options{Setups: []string{sNative6, sPktEcho, sPktEchoTx}, PktEcho: "/bin/pktecho", Mappings: 1}
	s, err := buildSetups(o, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for i, tx := range map[int]bool{1: false, 2: true} {
		x, ok := s[i].xlat.(*pktEchoTranslator)
		if !ok || s[i].Dst != server6 || s[i].Mode != nil || x.bin != o.PktEcho || x.txRing != tx || x.tunName() != "" {
			t.Errorf("setup %d: %+v", i, s[i])
		}
	}
	if s[1].Label == s[2].Label {
		t.Errorf("both pkt-echo setups are labelled %q", s[1].Label)
	}
	for _, k := range []string{sPktEcho, sPktEchoTx} {
		if contains(defaultSetups("/tmp/tayga-fork/tayga"), k) {
			t.Errorf("%s is a default setup", k)
		}
	}
	o.PktEcho = ""
	if _, err := buildSetups(o, t.TempDir()); err == nil || !strings.Contains(err.Error(), "pktecho") {
		t.Errorf("pkt-echo without a binary: %v", err)
	}
}

// The echo runs on the router's two veths and sends to their peers' link
// addresses, which the topology fixes; only the TX ring setup asks for the
// ring.
func TestPktEchoArgs(t *testing.T) {
	for _, tx := range []bool{false, true} {
		got := strings.Join(pktEchoArgs("/bin/pktecho", tx), " ")
		want := "/bin/pktecho -a " + router4If + " -a-peer " + macClient + " -b " + router6If + " -b-peer " + macServer
		if tx {
			want += " -txring"
		}
		if got != want {
			t.Errorf("txRing %v: %q, want %q", tx, got, want)
		}
	}
}
