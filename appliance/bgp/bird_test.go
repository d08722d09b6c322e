package bgp

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/map646/map646/internal/netnstest"
	"github.com/map646/map646/internal/testenv"
)

// GoBGP runs its sessions and listeners on goroutines of its own, which may
// run on any OS thread, so an in-process speaker cannot be pinned to a
// network namespace. The BIRD tests therefore run the speaker in a child
// process (this test binary again) started inside the namespace; it takes
// commands on stdin:
//
//	update <healthy> <ipv4,...|-> <ipv6,...|->
//	status
//	mem
//	close
const helperEnv = "MAP646_BGP_SPEAKER_HELPER"

// TestMain turns the test binary into the speaker helper when asked to.
func TestMain(m *testing.M) {
	if cfg := os.Getenv(helperEnv); cfg != "" {
		os.Exit(speakerHelper(cfg, os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

func speakerHelper(cfgJSON string, in io.Reader, out io.Writer) int {
	var cfg Config
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		fmt.Fprintln(out, "err", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(context.Background(), cfg, log)
	if err != nil {
		fmt.Fprintln(out, "err", err)
		return 1
	}
	parse := func(s string) []netip.Prefix {
		var ps []netip.Prefix
		if s == "-" {
			return nil
		}
		for _, x := range strings.Split(s, ",") {
			ps = append(ps, netip.MustParsePrefix(x))
		}
		return ps
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 4 && f[0] == "update":
			if err := s.Update(context.Background(), parse(f[2]), parse(f[3]), f[1] == "true"); err != nil {
				fmt.Fprintln(out, "err", err)
				continue
			}
			fmt.Fprintln(out, "ok")
		case len(f) == 1 && f[0] == "status":
			b, _ := json.Marshal(s.Status())
			fmt.Fprintln(out, string(b))
		case len(f) == 1 && f[0] == "mem":
			m, err := readMem()
			if err != nil {
				fmt.Fprintln(out, "err", err)
				continue
			}
			b, _ := json.Marshal(m)
			fmt.Fprintln(out, string(b))
		case len(f) == 1 && f[0] == "close":
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := s.Close(ctx)
			cancel()
			if err != nil {
				fmt.Fprintln(out, "err", err)
				return 1
			}
			fmt.Fprintln(out, "ok")
			return 0
		default:
			fmt.Fprintln(out, "err unknown command", sc.Text())
		}
	}
	return 0
}

// remoteSpeaker is a speaker helper process running in a namespace.
type remoteSpeaker struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startRemoteSpeaker(t *testing.T, ns *netnstest.NS, cfg Config) *remoteSpeaker {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := ns.Command(exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+string(b))
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	in, _ := cmd.StdinPipe()
	outp, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &remoteSpeaker{cmd: cmd, in: in, out: bufio.NewScanner(outp)}
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return r
}

func (r *remoteSpeaker) do(t *testing.T, line string) string {
	t.Helper()
	if _, err := fmt.Fprintln(r.in, line); err != nil {
		t.Fatalf("speaker helper: %v", err)
	}
	if !r.out.Scan() {
		t.Fatalf("speaker helper exited after %q", line)
	}
	reply := r.out.Text()
	if strings.HasPrefix(reply, "err") {
		t.Fatalf("speaker helper: %q: %s", line, reply)
	}
	return reply
}

func (r *remoteSpeaker) status(t *testing.T) Status {
	t.Helper()
	var st Status
	if err := json.Unmarshal([]byte(r.do(t, "status")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// bird is a BIRD 2 daemon in a namespace.
type bird struct {
	sock string
	ns   *netnstest.NS
}

// requireBIRD skips (fails on CI) unless BIRD 2 is installed.
func requireBIRD(t *testing.T) {
	t.Helper()
	for _, c := range []string{"bird", "birdc"} {
		if _, err := exec.LookPath(c); err != nil {
			testenv.SkipOrFailf(t, "needs BIRD 2 (%s not found; Debian package bird2)", c)
		}
	}
}

func startBIRD(t *testing.T, ns *netnstest.NS, conf string) *bird {
	t.Helper()
	dir := t.TempDir()
	confPath := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &bird{sock: filepath.Join(dir, "bird.ctl"), ns: ns}
	cmd := ns.Command("bird", "-c", confPath, "-s", b.sock, "-f")
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
		cmd.Stdout = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(b.sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("bird did not open its control socket")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return b
}

// routes returns `show route` of one protocol: prefix -> the route's lines.
func (b *bird) routes(t *testing.T, protocol string) map[string]string {
	t.Helper()
	out, err := exec.Command("birdc", "-s", b.sock, "show", "route", "protocol", protocol).CombinedOutput()
	if err != nil {
		t.Fatalf("birdc: %v: %s", err, out)
	}
	routes := map[string]string{}
	var cur string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || strings.HasPrefix(l, "BIRD") || strings.HasPrefix(l, "Table") {
			continue
		}
		if !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "\t") {
			if _, err := netip.ParsePrefix(f[0]); err == nil {
				cur = f[0]
			}
		}
		if cur != "" {
			routes[cur] += l + "\n"
		}
	}
	return routes
}

// waitRoutes polls until BIRD has exactly the prefixes want from protocol.
func (b *bird) waitRoutes(t *testing.T, protocol string, want ...string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := b.routes(t, protocol)
		ok := len(got) == len(want)
		for _, p := range want {
			if _, have := got[p]; !have {
				ok = false
			}
		}
		if ok {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("bird protocol %s routes %v, want %v", protocol, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

const birdConf = `
router id 192.0.2.1;
protocol device { scan time 1; }
protocol bgp xlat4 {
	local 192.0.2.1 as 64500;
	neighbor 192.0.2.2 as 64496;
	password "%[1]s";
	hold time 9;
	connect retry time 1;
	ipv4 { import all; export none; };
}
protocol bgp xlat6 {
	local 2001:db8:ff::1 as 64500;
	neighbor 2001:db8:ff::2 as 64496;
	hold time 9;
	connect retry time 1;
	ipv6 { import all; export none; };
	ipv4 { import all; export none; extended next hop on; };
}
`

// TestSpeakerBIRD peers the speaker with BIRD 2 over IPv4 (with a TCP MD5
// password) and over IPv6 (with IPv4 routes carried with an IPv6 next hop,
// RFC 8950), and checks what BIRD learns through health changes, a reload
// and Close.
func TestSpeakerBIRD(t *testing.T) {
	netnstest.Require(t, "bg-")
	requireBIRD(t)
	rtr := netnstest.New(t, "bg-r-")
	spk := netnstest.New(t, "bg-s-")
	netnstest.Veth(t, rtr, "dn0", spk, "up0")
	rtr.Run("ip", "addr", "add", "192.0.2.1/30", "dev", "dn0")
	rtr.Run("ip", "addr", "add", "2001:db8:ff::1/64", "dev", "dn0", "nodad")
	spk.Run("ip", "addr", "add", "192.0.2.2/30", "dev", "up0")
	spk.Run("ip", "addr", "add", "2001:db8:ff::2/64", "dev", "up0", "nodad")

	const password = "doc-example-secret"
	b := startBIRD(t, rtr, fmt.Sprintf(birdConf, password))
	s := startRemoteSpeaker(t, spk, Config{
		LocalAS: 64496, RouterID: netip.MustParseAddr("192.0.2.2"), ListenPort: 179,
		HoldTime: 9 * time.Second, Keepalive: 3 * time.Second, ConnectRetry: time.Second,
		IPv4NextHopIPv6: true,
		Neighbors: []Neighbor{
			{Address: netip.MustParseAddr("192.0.2.1"), RemoteAS: 64500, Password: password},
			{Address: netip.MustParseAddr("2001:db8:ff::1"), RemoteAS: 64500},
		},
	})
	s.do(t, "update true 198.51.100.0/24,203.0.113.0/25 2001:db8:64::/96")

	got4 := b.waitRoutes(t, "xlat4", "198.51.100.0/24", "203.0.113.0/25")
	t.Logf("BIRD learned over IPv4: %v", got4)
	for p, r := range got4 {
		if !strings.Contains(r, "via 192.0.2.2") || !strings.Contains(r, "AS64496") {
			t.Errorf("xlat4 %s: %q: want via 192.0.2.2 from AS64496", p, r)
		}
	}
	got6 := b.waitRoutes(t, "xlat6", "198.51.100.0/24", "203.0.113.0/25", "2001:db8:64::/96")
	t.Logf("BIRD learned over IPv6: %v", got6)
	for p, r := range got6 {
		if !strings.Contains(r, "via 2001:db8:ff::2") {
			t.Errorf("xlat6 %s: %q: want an IPv6 next hop 2001:db8:ff::2", p, r)
		}
	}
	st := s.status(t)
	for _, n := range st.Neighbors {
		if n.State != "established" {
			t.Errorf("neighbor %s state %s", n.Address, n.State)
		}
	}
	if len(st.Neighbors) != 2 {
		t.Errorf("status has %d neighbors, want 2", len(st.Neighbors))
	}

	// Unhealthy: BIRD loses every route, the sessions stay up.
	s.do(t, "update false 198.51.100.0/24,203.0.113.0/25 2001:db8:64::/96")
	b.waitRoutes(t, "xlat4")
	b.waitRoutes(t, "xlat6")

	// Healthy again with a reloaded mapping: one IPv4 prefix changed.
	s.do(t, "update true 198.51.100.0/24,203.0.113.128/25 2001:db8:64::/96")
	b.waitRoutes(t, "xlat4", "198.51.100.0/24", "203.0.113.128/25")
	b.waitRoutes(t, "xlat6", "198.51.100.0/24", "203.0.113.128/25", "2001:db8:64::/96")

	// The router restarts the IPv4 session: the speaker comes back by
	// itself, announces again, and counts the flap.
	if out, err := exec.Command("birdc", "-s", b.sock, "restart", "xlat4").CombinedOutput(); err != nil {
		t.Fatalf("birdc restart: %v: %s", err, out)
	}
	restarted := time.Now()
	for {
		st = s.status(t)
		if st.Neighbors[0].Address == "192.0.2.1" && st.Neighbors[0].Established && st.Neighbors[0].Flaps >= 1 {
			break
		}
		if time.Since(restarted) > 30*time.Second {
			t.Fatalf("IPv4 session not re-established with a flap counted: %+v", st.Neighbors)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.waitRoutes(t, "xlat4", "198.51.100.0/24", "203.0.113.128/25")
	t.Logf("IPv4 session back %.1f s after the router restarted it", time.Since(restarted).Seconds())
	// The metrics show both sessions up against BIRD and the flap.
	want := fmt.Sprintf(`
# HELP map646_bgp_session_established 1 while the BGP session with the neighbor is Established.
# TYPE map646_bgp_session_established gauge
map646_bgp_session_established{neighbor="192.0.2.1",remote_as="64500"} 1
map646_bgp_session_established{neighbor="2001:db8:ff::1",remote_as="64500"} 1
# HELP map646_bgp_session_flaps_total Times the BGP session left Established.
# TYPE map646_bgp_session_flaps_total counter
map646_bgp_session_flaps_total{neighbor="192.0.2.1"} %d
map646_bgp_session_flaps_total{neighbor="2001:db8:ff::1"} 0
# HELP map646_bgp_announced_prefixes Prefixes the BGP speaker announces, by address family.
# TYPE map646_bgp_announced_prefixes gauge
map646_bgp_announced_prefixes{family="ipv4"} 2
map646_bgp_announced_prefixes{family="ipv6"} 1
`, st.Neighbors[0].Flaps)
	if err := testutil.CollectAndCompare(statusCollector(func() Status { return st }), strings.NewReader(want),
		"map646_bgp_session_established", "map646_bgp_session_flaps_total", "map646_bgp_announced_prefixes"); err != nil {
		t.Error(err)
	}

	// Close: withdrawn everywhere and the sessions closed by a Cease.
	s.do(t, "close")
	b.waitRoutes(t, "xlat4")
	b.waitRoutes(t, "xlat6")
	out, _ := exec.Command("birdc", "-s", b.sock, "show", "protocols").CombinedOutput()
	if strings.Contains(string(out), "Established") {
		t.Errorf("a session is still established after Close:\n%s", out)
	}
}

// TestSpeakerBIRDWrongPassword shows the TCP MD5 password is really used: with
// the wrong one the IPv4 session never comes up while the IPv6 session
// (no password) beside it does.
func TestSpeakerBIRDWrongPassword(t *testing.T) {
	netnstest.Require(t, "bg-")
	requireBIRD(t)
	rtr := netnstest.New(t, "bg-r-")
	spk := netnstest.New(t, "bg-s-")
	netnstest.Veth(t, rtr, "dn0", spk, "up0")
	rtr.Run("ip", "addr", "add", "192.0.2.1/30", "dev", "dn0")
	rtr.Run("ip", "addr", "add", "2001:db8:ff::1/64", "dev", "dn0", "nodad")
	spk.Run("ip", "addr", "add", "192.0.2.2/30", "dev", "up0")
	spk.Run("ip", "addr", "add", "2001:db8:ff::2/64", "dev", "up0", "nodad")

	b := startBIRD(t, rtr, fmt.Sprintf(birdConf, "doc-example-secret"))
	s := startRemoteSpeaker(t, spk, Config{
		LocalAS: 64496, RouterID: netip.MustParseAddr("192.0.2.2"), ListenPort: 179,
		HoldTime: 9 * time.Second, Keepalive: 3 * time.Second, ConnectRetry: time.Second,
		Neighbors: []Neighbor{
			{Address: netip.MustParseAddr("192.0.2.1"), RemoteAS: 64500, Password: "not-the-secret"},
			{Address: netip.MustParseAddr("2001:db8:ff::1"), RemoteAS: 64500},
		},
	})
	s.do(t, "update true 198.51.100.0/24 2001:db8:64::/96")
	b.waitRoutes(t, "xlat6", "2001:db8:64::/96")
	// The IPv6 session is up. Wait until the kernels have refused several
	// IPv4 connection attempts for their signature (TCP MD5, RFC 2385):
	// each side retries every second or so.
	deadline := time.Now().Add(30 * time.Second)
	for md5Failures(t, rtr)+md5Failures(t, spk) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("no 3 TCP MD5 signature failures within 30 s (%d + %d)", md5Failures(t, rtr), md5Failures(t, spk))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := b.routes(t, "xlat4"); len(r) != 0 {
		t.Errorf("routes learned despite the wrong password: %v", r)
	}
	for _, n := range s.status(t).Neighbors {
		if n.Address == "192.0.2.1" && n.Established {
			t.Error("IPv4 session established with the wrong password")
		}
	}
}

// md5Failures is the namespace's count of TCP segments dropped for a wrong
// MD5 signature (TcpExt TCPMD5Failure in /proc/net/netstat).
func md5Failures(t *testing.T, ns *netnstest.NS) int {
	t.Helper()
	out := ns.MustRun(t, "cat", "/proc/net/netstat")
	lines := strings.Split(out, "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(values) != len(names) {
			continue
		}
		for j, n := range names {
			if n == "TCPMD5Failure" {
				v, err := strconv.Atoi(values[j])
				if err != nil {
					t.Fatalf("TCPMD5Failure %q: %v", values[j], err)
				}
				return v
			}
		}
	}
	t.Fatalf("no TcpExt TCPMD5Failure in /proc/net/netstat:\n%s", out)
	return 0
}
