package daemon

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/internal/netnstest"
	"github.com/map646/map646/internal/testenv"
)

// TestMain doubles as the daemon for the namespace tests: started again
// with MAP646_TEST_DAEMON=<config>,<socket> (inside `ip netns exec`), the
// test binary runs Run like `map646 run` does and exits.
func TestMain(m *testing.M) {
	if spec := os.Getenv("MAP646_TEST_DAEMON"); spec != "" {
		cfg, sock, _ := strings.Cut(spec, ",")
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		log, _ := NewLogger(os.Stderr, "info", "text")
		err := Run(ctx, Options{ConfigPath: cfg, ControlSocket: sock, Logger: log,
			OnReady: func(r ReadyInfo) { fmt.Printf("READY %s %d\n", r.Tun, r.Mappings) }})
		if err != nil {
			fmt.Fprintln(os.Stderr, "daemon:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// topo is an IPv4-only client, the translator and an IPv6-only server,
// each in its own namespace:
//
//	cli 192.0.2.2/24 --- 192.0.2.1/24 xlat 2001:db8:6::1/64 --- 2001:db8:6::10/64 srv
//
// The server sees the client as 2001:db8:64::c000:202.
type topo struct {
	cli, x, srv *netnstest.NS
	dir         string
	extraFiles  []*os.File // handed to the daemon as fd 3, 4, ...
}

func newTopo(t *testing.T) *topo {
	t.Helper()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testenv.SkipOrFailf(t, "no /dev/net/tun: %v", err)
	}
	tp := &topo{cli: netnstest.New(t, "dm-c"), x: netnstest.New(t, "dm-x"), srv: netnstest.New(t, "dm-s"), dir: t.TempDir()}
	run := func(ns *netnstest.NS, cmd string) { ns.MustRun(t, strings.Fields(cmd)...) }
	run(tp.cli, "ip link add dmc0 type veth peer name dmx4")
	run(tp.cli, "ip link set dmx4 netns "+tp.x.Name)
	run(tp.x, "ip link add dmx6 type veth peer name dms0")
	run(tp.x, "ip link set dms0 netns "+tp.srv.Name)
	run(tp.cli, "ip addr add 192.0.2.2/24 dev dmc0")
	run(tp.cli, "ip link set dmc0 up")
	run(tp.cli, "ip route add default via 192.0.2.1")
	run(tp.x, "ip addr add 192.0.2.1/24 dev dmx4")
	run(tp.x, "ip addr add 2001:db8:6::1/64 dev dmx6 nodad")
	run(tp.x, "ip link set dmx4 up")
	run(tp.x, "ip link set dmx6 up")
	run(tp.srv, "ip addr add 2001:db8:6::10/64 dev dms0 nodad")
	run(tp.srv, "ip addr add 2001:db8:6::11/64 dev dms0 nodad")
	run(tp.srv, "ip link set dms0 up")
	run(tp.srv, "ip -6 route add 2001:db8:64::/96 via 2001:db8:6::1")
	return tp
}

// daemonProc is the test binary running Run inside the translator's
// namespace.
type daemonProc struct {
	cmd  *exec.Cmd
	sock string
	out  *lockedWriter
	exit chan error
}

func (tp *topo) startDaemon(t *testing.T, cfgPath string) *daemonProc {
	t.Helper()
	sock := filepath.Join(tp.dir, "ctl.sock")
	cmd := exec.Command("ip", "netns", "exec", tp.x.Name, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MAP646_TEST_DAEMON="+cfgPath+","+sock)
	cmd.ExtraFiles = tp.extraFiles
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &daemonProc{cmd: cmd, sock: sock, out: &lockedWriter{}, exit: make(chan error, 1)}
	cmd.Stderr = p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "READY ") {
				close(ready)
			}
		}
		p.exit <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	select {
	case <-ready:
	case err := <-p.exit:
		t.Fatalf("daemon exited before ready: %v\n%s", err, p.out)
	case <-time.After(60 * time.Second):
		t.Fatalf("daemon not ready within 60 s\n%s", p.out)
	}
	return p
}

// lockedWriter collects the daemon's stderr, written by exec's copying
// goroutine while the test reads it.
type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func (p *daemonProc) signal(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	// `ip netns exec` execs the program, so the PID is the daemon's.
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exit:
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("daemon did not exit after %v", sig)
		return nil
	}
}

func (tp *topo) config(t *testing.T, name string, extraMappings []string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("translator {\n  prefix = \"2001:db8:64::/96\"\n")
	for _, m := range append([]string{"198.51.100.10=2001:db8:6::10"}, extraMappings...) {
		v4, v6, _ := strings.Cut(m, "=")
		fmt.Fprintf(&b, "  mapping {\n    ipv4 = %q\n    ipv6 = %q\n  }\n", v4, v6)
	}
	b.WriteString("  tun {\n    name = \"dmtun\"\n    queues = 2\n    mtu = 1520\n  }\n}\n")
	p := filepath.Join(tp.dir, name)
	if err := os.WriteFile(p+".tmp", []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	// Atomic replace, as an operator's deploy tool would.
	if err := os.Rename(p+".tmp", p); err != nil {
		t.Fatal(err)
	}
	return p
}

// leftovers lists what a translator could have left in its namespace.
func (tp *topo) leftovers(t *testing.T) string {
	t.Helper()
	var s []string
	if out, err := tp.x.Output("ip", "link", "show", "dmtun"); err == nil {
		s = append(s, "tun: "+out)
	}
	if out := tp.x.MustRun(t, "ip", "route", "show", "proto", "64"); out != "" {
		s = append(s, "IPv4 routes: "+out)
	}
	if out := tp.x.MustRun(t, "ip", "-6", "route", "show", "proto", "64"); out != "" {
		s = append(s, "IPv6 routes: "+out)
	}
	if out := tp.x.MustRun(t, "ip", "route", "show", "table", "all", "proto", "64"); out != "" {
		s = append(s, "IPv4 routes in any table: "+out)
	}
	if out := tp.x.MustRun(t, "ip", "-6", "route", "show", "table", "all", "proto", "64"); out != "" {
		s = append(s, "IPv6 routes in any table: "+out)
	}
	for _, fam := range []string{"-4", "-6"} {
		if extra := extraRules(t, tp.x, fam); len(extra) > 0 {
			s = append(s, "rules: "+strings.Join(extra, "\n"))
		}
	}
	if out := tp.x.MustRun(t, "sysctl", "-n", "net.ipv4.ip_forward"); strings.TrimSpace(out) != "0" {
		s = append(s, "ip_forward still "+out)
	}
	return strings.Join(s, "\n")
}

// extraRules lists the policy rules of family fam ("-4", "-6") in ns
// other than the kernel's own (local, main, default): those a translator
// added, such as `iif <tun> lookup main`, which names no table 646.
func extraRules(t *testing.T, ns *netnstest.NS, fam string) []string {
	t.Helper()
	var extra []string
	for _, l := range strings.Split(strings.TrimSpace(ns.MustRun(t, "ip", fam, "rule", "show")), "\n") {
		switch l = strings.TrimSpace(l); {
		case l == "", strings.HasPrefix(l, "0:\tfrom all lookup local"),
			strings.HasPrefix(l, "32766:\tfrom all lookup main"), strings.HasPrefix(l, "32767:\tfrom all lookup default"):
		default:
			extra = append(extra, l)
		}
	}
	return extra
}

func ping(t *testing.T, ns *netnstest.NS, args ...string) (int, int) {
	t.Helper()
	out, _ := ns.Output(append([]string{"ping", "-n", "-q"}, args...)...)
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ping output: %s", out)
	}
	var sent, recv int
	fmt.Sscan(m[1], &sent)
	fmt.Sscan(m[2], &recv)
	return sent, recv
}

func TestDaemonInNamespacesStartsStopsAndSurvivesSIGKILL(t *testing.T) {
	tp := newTopo(t)
	cfg := tp.config(t, "map646.hcl", nil)

	d := tp.startDaemon(t, cfg)
	if sent, recv := ping(t, tp.cli, "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
		t.Fatalf("ping through the translator: %d/%d\n%s", recv, sent, d.out)
	}
	st, err := QueryStats(d.sock)
	if err != nil {
		t.Fatal(err)
	}
	var icmp uint64
	for _, c := range st.Packets {
		if c.Kind == "icmp" {
			icmp += c.Value
		}
	}
	if icmp < 6 || st.Mappings != 1 || st.Tun != "dmtun" {
		t.Errorf("stats after 3 pings: icmp %d, %+v", icmp, st)
	}
	if err := d.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, d.out)
	}
	if l := tp.leftovers(t); l != "" {
		t.Errorf("left after SIGTERM:\n%s", l)
	}

	// A crash leaves nothing that blocks the next start.
	d = tp.startDaemon(t, cfg)
	_ = d.signal(t, syscall.SIGKILL)
	if _, err := os.Stat(d.sock); err != nil {
		t.Logf("control socket after SIGKILL: %v", err)
	}
	d = tp.startDaemon(t, cfg)
	if sent, recv := ping(t, tp.cli, "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
		t.Fatalf("ping after a restart that followed SIGKILL: %d/%d\n%s", recv, sent, d.out)
	}
	if err := d.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit: %v\n%s", err, d.out)
	}
	// forwarding was already 1 when the third daemon started (the killed
	// one could not restore it), so only tun and routes are checked here.
	if out, err := tp.x.Output("ip", "link", "show", "dmtun"); err == nil {
		t.Errorf("tun left: %s", out)
	}
	if out := tp.x.MustRun(t, "ip", "route", "show", "proto", "64"); out != "" {
		t.Errorf("routes left: %s", out)
	}
}

// TestDaemonAnswersPingOnItsIPv6Address (issue 10, "a translator you can
// ping"): the translator's own address as the IPv6 side sees it, its
// ipv4_address inside the prefix (here the default 192.0.0.8), answers
// ping from a mapped server and from an IPv6 host without a mapping, and
// the replies are the engine's (counted as emitted), not the kernel's.
func TestDaemonAnswersPingOnItsIPv6Address(t *testing.T) {
	tp := newTopo(t)
	d := tp.startDaemon(t, tp.config(t, "map646.hcl", nil))
	const self6 = "2001:db8:64::c000:8" // 192.0.0.8 in the prefix
	for _, src := range []string{"2001:db8:6::10", "2001:db8:6::11"} {
		if sent, recv := ping(t, tp.srv, "-6", "-c", "2", "-i", "0.2", "-W", "2", "-I", src, self6); recv != sent {
			t.Errorf("ping %s from %s: %d/%d\n%s", self6, src, recv, sent, d.out)
		}
	}
	st, err := QueryStats(d.sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Emitted < 4 {
		t.Errorf("%d packets emitted by the translator after 4 answered pings", st.Emitted)
	}
	if err := d.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, d.out)
	}
}

// TestReloadUnderTraffic: a UDP stream and a ping run through the
// translator to 198.51.100.10 while 100 reloads add and remove other
// mappings (including 198.51.100.11, whose route aggregates with .10's
// into a /31 and splits again). Nothing sent to the address that stayed
// mapped may be lost.
func TestReloadUnderTraffic(t *testing.T) {
	tp := newTopo(t)
	cfg := tp.config(t, "map646.hcl", nil)
	d := tp.startDaemon(t, cfg)

	// The receiver is a socket in the server's namespace.
	var recvConn *net.UDPConn
	if err := tp.srv.Do(func() (err error) {
		recvConn, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.ParseIP("2001:db8:6::10"), Port: 9000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer recvConn.Close()
	var sendConn *net.UDPConn
	if err := tp.cli.Do(func() (err error) {
		sendConn, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.ParseIP("198.51.100.10"), Port: 9000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sendConn.Close()

	var received atomic.Int64
	seen := make([]atomic.Bool, 1<<20)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := recvConn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if n >= 4 && from.IP.Equal(net.ParseIP("2001:db8:64::c000:202")) {
				seq := binary.BigEndian.Uint32(buf)
				if int(seq) < len(seen) && !seen[seq].Swap(true) {
					received.Add(1)
				}
			}
		}
	}()
	stopSend := make(chan struct{})
	sentc := make(chan int)
	go func() {
		buf := make([]byte, 200)
		seq := 0
		tick := time.NewTicker(500 * time.Microsecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSend:
				sentc <- seq
				return
			case <-tick.C:
			}
			binary.BigEndian.PutUint32(buf, uint32(seq))
			if _, err := sendConn.Write(buf); err != nil {
				t.Errorf("send %d: %v", seq, err)
			}
			seq++
		}
	}()
	pingDone := make(chan [2]int)
	go func() {
		s, r := ping(t, tp.cli, "-c", "400", "-i", "0.01", "-W", "2", "198.51.100.10")
		pingDone <- [2]int{s, r}
	}()

	start := time.Now()
	for i := range 100 {
		var extra []string
		if i%2 == 0 {
			extra = append(extra, "198.51.100.11=2001:db8:6::11")
		}
		for j := range 64 {
			if (i+j)%3 == 0 {
				extra = append(extra, fmt.Sprintf("198.51.100.%d=2001:db8:6::%x", 100+j, 0x100+j))
			}
		}
		tp.config(t, "map646.hcl", extra)
		res, err := RequestReload(d.sock)
		if err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		if res.Unchanged {
			t.Fatalf("reload %d: unchanged", i)
		}
		time.Sleep(15 * time.Millisecond)
	}
	reloadTime := time.Since(start)
	p := <-pingDone
	close(stopSend)
	sent := <-sentc
	// Datagrams still in flight: wait until all arrived, or give the
	// stragglers 5 s before counting the rest as lost.
	for deadline := time.Now().Add(5 * time.Second); received.Load() < int64(sent) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	got := received.Load()
	for _, ns := range []*netnstest.NS{tp.cli, tp.x, tp.srv} {
		out, _ := ns.Output("nstat", "-az")
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) >= 2 && f[1] != "0" && (strings.Contains(l, "Err") || strings.Contains(l, "Drop") || strings.Contains(l, "Discard") || strings.Contains(l, "NoRoutes")) {
				t.Logf("%s: %s", ns.Name, l)
			}
		}
	}
	t.Logf("100 reloads in %v; UDP %d/%d received; ping %d/%d", reloadTime.Round(time.Millisecond), got, sent, p[1], p[0])
	if got != int64(sent) {
		t.Errorf("UDP: %d of %d datagrams lost during reloads", int64(sent)-got, sent)
	}
	if p[1] != p[0] {
		t.Errorf("ping: %d of %d lost during reloads", p[0]-p[1], p[0])
	}
	st, err := QueryStats(d.sock)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Drops {
		if c.Value > 0 {
			t.Logf("translator dropped %s %s: %d", c.Dir, c.Kind, c.Value)
		}
	}
	for _, c := range st.Link {
		t.Logf("link %s: %d", c.Kind, c.Value)
	}
	if st.Reloads.OK != 100 || st.Reloads.Failed != 0 {
		t.Errorf("reloads: %+v", st.Reloads)
	}
	// The last configuration (i = 99, odd) has no .11: its route split
	// back into a /32 for .10.
	out := tp.x.MustRun(t, "ip", "route", "show", "table", "646", "proto", "64")
	if !strings.Contains(out, "198.51.100.10 dev dmtun") || strings.Contains(out, "198.51.100.10/31") {
		t.Errorf("routes after the last reload:\n%s", out)
	}

	// An added mapping carries traffic at once; a removed one no longer.
	tp.config(t, "map646.hcl", []string{"198.51.100.11=2001:db8:6::11"})
	if _, err := RequestReload(d.sock); err != nil {
		t.Fatal(err)
	}
	if sent, recv := ping(t, tp.cli, "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.11"); recv != sent {
		t.Errorf("ping to a mapping added by reload: %d/%d", recv, sent)
	}
	tp.config(t, "map646.hcl", nil)
	if _, err := RequestReload(d.sock); err != nil {
		t.Fatal(err)
	}
	if _, recv := ping(t, tp.cli, "-c", "2", "-i", "0.2", "-W", "1", "198.51.100.11"); recv != 0 {
		t.Errorf("ping to a mapping removed by reload: %d replies", recv)
	}

	if err := d.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit: %v\n%s", err, d.out)
	}
	if l := tp.leftovers(t); l != "" {
		t.Errorf("left after SIGTERM:\n%s", l)
	}
}

// TestMillionMappings measures loading a configuration with 1M mappings
// and installing its routes in a namespace: contiguous mappings (routes
// aggregate to one) and every other address (nothing aggregates: 1M /32
// routes). It reports the times; it does not assert them. It runs only
// with MAP646_LARGE=1 (make test-large).
func TestMillionMappings(t *testing.T) {
	testenv.RequireLarge(t)
	for _, tc := range []struct {
		name   string
		stride int
		routes int
	}{
		{"contiguous", 1, 2},     // 10.0.0.0/12 and the /96
		{"sparse", 2, 1<<20 + 1}, // every other address of 10.0.0.0/11
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := newTopo(t)
			const n = 1 << 20
			csv := filepath.Join(tp.dir, "mappings.csv")
			f, err := os.Create(csv)
			if err != nil {
				t.Fatal(err)
			}
			w := bufio.NewWriter(f)
			// 10.0.0.0/11: the routes live only in the test's namespace
			// and no packet is sent to them.
			for i := range n {
				a := i * tc.stride
				fmt.Fprintf(w, "%s,2001:db8:6::%x:%x\n", netip.AddrFrom4([4]byte{10, byte(a >> 16), byte(a >> 8), byte(a)}), a>>16, a&0xffff)
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			cfg := filepath.Join(tp.dir, "big.hcl")
			if err := os.WriteFile(cfg, []byte(`translator {
  prefix = "2001:db8:64::/96"
  mappings_file = "mappings.csv"
  tun {
    name = "dmtun"
    queues = 1
  }
}
`), 0o644); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			d := tp.startDaemon(t, cfg)
			took := time.Since(start)
			st, err := QueryStats(d.sock)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mappings != n || st.Routes != tc.routes {
				t.Errorf("mappings %d routes %d, want %d %d", st.Mappings, st.Routes, n, tc.routes)
			}
			setup := "?"
			if m := regexp.MustCompile(`msg="translator set up".*took=(\S+)`).FindStringSubmatch(d.out.String()); m != nil {
				setup = m[1]
			}
			t.Logf("1M mappings (%s): process start to ready %v; tun + %d routes set up in %s", tc.name, took.Round(time.Millisecond), st.Routes, setup)
			if tc.stride == 1 {
				// A reload that drops one mapping from the middle: the
				// aggregate splits into 20 prefixes around the hole.
				b, err := os.ReadFile(csv)
				if err != nil {
					t.Fatal(err)
				}
				lines := strings.SplitAfter(string(b), "\n")
				hole := n / 2
				if err := os.WriteFile(csv, []byte(strings.Join(lines[:hole], "")+strings.Join(lines[hole+1:], "")), 0o644); err != nil {
					t.Fatal(err)
				}
				res, err := RequestReload(d.sock)
				if err != nil {
					t.Fatal(err)
				}
				if res.Mappings != n-1 || res.RoutesAdded != 20 || res.RoutesRemoved != 1 {
					t.Errorf("reload: %+v", res)
				}
				t.Logf("reload of 1M mappings minus one: %d ms (+%d -%d routes)", res.DurationMillis, res.RoutesAdded, res.RoutesRemoved)
			}
			stop := time.Now()
			if err := d.signal(t, syscall.SIGTERM); err != nil {
				t.Fatalf("exit: %v\n%s", err, d.out)
			}
			t.Logf("stop and clean-up: %v", time.Since(stop).Round(time.Millisecond))
			if l := tp.leftovers(t); l != "" && !strings.HasPrefix(l, "ip_forward") {
				t.Errorf("left after SIGTERM:\n%.500s", l)
			}
		})
	}
}

// TestDaemonNICMode: `nic { ipv4, ipv6 }` runs the translator on the
// namespace's veths through AF_PACKET: pings cross both ways with the
// kernel's forwarding off, the kernel still answers for its own address,
// and forwarding is restored when the daemon stops.
func TestDaemonNICMode(t *testing.T) {
	tp := newTopo(t)
	tp.x.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	p := filepath.Join(tp.dir, "nic.hcl")
	cfg := "translator {\n  prefix = \"2001:db8:64::/96\"\n  mapping {\n    ipv4 = \"198.51.100.10\"\n    ipv6 = \"2001:db8:6::10\"\n  }\n" +
		"  nic {\n    ipv4 = \"dmx4\"\n    ipv6 = \"dmx6\"\n    queues = 2\n  }\n}\n"
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := tp.startDaemon(t, p)
	for _, key := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
		if out := strings.TrimSpace(tp.x.MustRun(t, "sysctl", "-n", key)); out != "0" {
			t.Errorf("%s = %s in NIC mode, want 0", key, out)
		}
	}
	// The first packet each way waits for neighbour resolution (parked,
	// not dropped).
	if sent, recv := ping(t, tp.cli, "-c", "4", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
		t.Errorf("ping 4->6 through NIC mode: %d/%d\n%s", recv, sent, d.out)
	}
	if sent, recv := ping(t, tp.srv, "-6", "-I", "2001:db8:6::10", "-c", "4", "-i", "0.2", "-W", "2", "2001:db8:64::c000:202"); recv != sent {
		t.Errorf("ping 6->4 through NIC mode: %d/%d\n%s", recv, sent, d.out)
	}
	if sent, recv := ping(t, tp.cli, "-c", "2", "-i", "0.2", "-W", "2", "192.0.2.1"); recv != sent {
		t.Errorf("ping to the appliance itself: %d/%d", recv, sent)
	}
	if out := tp.x.MustRun(t, "ip", "-6", "route", "show", "2001:db8:64::/96"); !strings.Contains(out, "blackhole") {
		t.Errorf("no blackhole route for the prefix: %q", out)
	}
	st, err := QueryStats(d.sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Tun != "nic dmx4,dmx6" || !st.Healthy {
		t.Errorf("stats: link %q, healthy %v (the NICs are up)", st.Tun, st.Healthy)
	}
	if err := d.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, d.out)
	}
	for _, key := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
		if out := strings.TrimSpace(tp.x.MustRun(t, "sysctl", "-n", key)); out != "1" {
			t.Errorf("%s = %s after stop, want 1 restored", key, out)
		}
	}
	if out := tp.x.MustRun(t, "ip", "-6", "route", "show", "2001:db8:64::/96"); out != "" {
		t.Errorf("blackhole route left: %q", out)
	}
}

// TestDaemonFDMode: a supervisor (the test) opens a bare-IP tun in the
// translator's namespace, routes into it and hands it over as fd 3; with
// `fd { fd = 3 }` the daemon translates on it and leaves forwarding and
// routes alone.
func TestDaemonFDMode(t *testing.T) {
	tp := newTopo(t)
	tp.x.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	var tunFile *os.File
	err := tp.x.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq("dmfd")
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return err
		}
		tunFile = os.NewFile(uintptr(fd), "tun:dmfd")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tunFile.Close()
	for _, c := range []string{"ip link set dmfd mtu 1520 up", "ip route add 198.51.100.10/32 dev dmfd", "ip -6 route add 2001:db8:64::/96 dev dmfd"} {
		tp.x.MustRun(t, strings.Fields(c)...)
	}
	tp.extraFiles = []*os.File{tunFile}
	p := filepath.Join(tp.dir, "fd.hcl")
	cfg := "translator {\n  prefix = \"2001:db8:64::/96\"\n  mapping {\n    ipv4 = \"198.51.100.10\"\n    ipv6 = \"2001:db8:6::10\"\n  }\n" +
		"  fd {\n    fd = 3\n  }\n}\n"
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := tp.startDaemon(t, p)
	if sent, recv := ping(t, tp.cli, "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
		t.Errorf("ping through the inherited fd: %d/%d\n%s", recv, sent, d.out)
	}
	st, err := QueryStats(d.sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Tun != "fd 3" || st.Routes != 0 || !st.Healthy {
		t.Errorf("stats: link %q, %d routes, healthy %v (an fd is no link to watch)", st.Tun, st.Routes, st.Healthy)
	}
	if err := d.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, d.out)
	}
	// The supervisor's routes and forwarding are untouched.
	if out := tp.x.MustRun(t, "ip", "route", "show", "dev", "dmfd"); !strings.Contains(out, "198.51.100.10") {
		t.Errorf("the supervisor's route is gone: %q", out)
	}
	if out := strings.TrimSpace(tp.x.MustRun(t, "sysctl", "-n", "net.ipv4.ip_forward")); out != "1" {
		t.Errorf("ip_forward = %s after stop, want the supervisor's 1", out)
	}
}

// TestDaemonFDModeQueues: a supervisor opens a two-queue tun
// (IFF_MULTI_QUEUE) and hands both queues over as fds 3 and 4; with
// `fd { fd = 3, queues = 2 }` the daemon translates on both. Flows from
// many source ports are spread over the queues by the kernel; every ping
// and datagram comes back whichever queue it used.
func TestDaemonFDModeQueues(t *testing.T) {
	tp := newTopo(t)
	tp.x.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	var queues []*os.File
	err := tp.x.Do(func() error {
		for range 2 {
			fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			ifr, err := unix.NewIfreq("dmfq")
			if err != nil {
				unix.Close(fd)
				return err
			}
			ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_MULTI_QUEUE)
			if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
				unix.Close(fd)
				return err
			}
			queues = append(queues, os.NewFile(uintptr(fd), "tun:dmfq"))
		}
		return nil
	})
	for _, f := range queues {
		defer f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"ip link set dmfq mtu 1520 up", "ip route add 198.51.100.10/32 dev dmfq", "ip -6 route add 2001:db8:64::/96 dev dmfq"} {
		tp.x.MustRun(t, strings.Fields(c)...)
	}
	tp.extraFiles = queues
	p := filepath.Join(tp.dir, "fdq.hcl")
	cfg := "translator {\n  prefix = \"2001:db8:64::/96\"\n  mapping {\n    ipv4 = \"198.51.100.10\"\n    ipv6 = \"2001:db8:6::10\"\n  }\n" +
		"  fd {\n    fd = 3\n    queues = 2\n  }\n}\n"
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := tp.startDaemon(t, p)
	if sent, recv := ping(t, tp.cli, "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
		t.Errorf("ping through the inherited queues: %d/%d\n%s", recv, sent, d.out)
	}
	// UDP echo from 32 source ports: the server answers each datagram.
	var srv *net.UDPConn
	if err := tp.srv.Do(func() (err error) {
		srv, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.ParseIP("2001:db8:6::10"), Port: 7007})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, a, err := srv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			srv.WriteToUDP(buf[:n], a)
		}
	}()
	echoed := 0
	for i := range 32 {
		var c *net.UDPConn
		if err := tp.cli.Do(func() (err error) {
			c, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.ParseIP("198.51.100.10"), Port: 7007})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		msg := []byte(fmt.Sprintf("flow %d", i))
		c.Write(msg)
		buf := make([]byte, 100)
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == string(msg) {
			echoed++
		}
		c.Close()
	}
	if echoed != 32 {
		t.Errorf("%d of 32 flows echoed\n%s", echoed, d.out)
	}
	st, err := QueryStats(d.sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Tun != "fd 3-4" || !st.Healthy {
		t.Errorf("stats: link %q, healthy %v", st.Tun, st.Healthy)
	}
	if err := d.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, d.out)
	}
}
