package failovertest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The experiment's address plan (documentation addresses only):
//
//	cli  c0 192.0.2.2/29 ── r0 192.0.2.1/29  rtr (BIRD 2, ECMP)
//	                         ra0 192.0.2.9/30 ── up0 192.0.2.10/30  xa ─ dn0 2001:db8:6::a/64 ─┐
//	                         rb0 192.0.2.13/30 ─ up0 192.0.2.14/30  xb ─ dn0 2001:db8:6::b/64 ─┤ br0 in srv
//	                                                                    srv 2001:db8:6::10/64 ──┘
//
// Both translators map 198.51.100.10 <-> 2001:db8:6::10 with the prefix
// 2001:db8:64::/96, announce 198.51.100.10/32 to BIRD by BGP and the /96 to
// the server by router advertisements.
const (
	serverV4   = "198.51.100.10"
	serverV6   = "2001:db8:6::10"
	echoPort   = 50007
	udpFlows   = 6
	udpEvery   = 20 * time.Millisecond
	pingEvery  = 20 * time.Millisecond
	tunName    = "xlat-tun"
	birdRouter = `
router id 192.0.2.1;
protocol device { scan time 1; }
protocol kernel {
	ipv4 { import none; export all; };
	merge paths on;
}
template bgp xlat {
	local as 64500;
	hold time 9;
	keepalive time 3;
	connect retry time 1;
	error wait time 1, 2;
	ipv4 { import all; export none; };
}
protocol bgp xa from xlat { local 192.0.2.9; neighbor 192.0.2.10 as 64496; }
protocol bgp xb from xlat { local 192.0.2.13; neighbor 192.0.2.14 as 64496; }
`
)

// translatorHCL is the configuration of one translator: the contract's
// translator block, a bgp block and a router_advertisement block.
func translatorHCL(routerID, neighbor string) string {
	return fmt.Sprintf(`
translator {
  prefix = "2001:db8:64::/96"
  mapping {
    ipv4 = "%s"
    ipv6 = "%s"
  }
  tun {
    name   = "%s"
    queues = 1
  }
}

bgp {
  local_as      = 64496
  router_id     = "%s"
  hold_time     = 9
  connect_retry = 1
  neighbor "%s" {
    remote_as = 64500
  }
}

router_advertisement "dn0" {
  preference     = "medium"
  interval       = 4
  route_lifetime = 12
}
`, serverV4, serverV6, tunName, routerID, neighbor)
}

// translator is one translator process in its namespace.
type translator struct {
	name, conf, logPath string
	ns                  *Netns
	cmd                 *exec.Cmd
	logf                *os.File
}

func (x *translator) start(t *testing.T) {
	t.Helper()
	if bin := os.Getenv("MAP646_BIN"); bin != "" {
		x.cmd = x.ns.Command(bin, "run", "-c", x.conf)
	} else {
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		x.cmd = x.ns.Command(exe)
		x.cmd.Env = append(os.Environ(), helperEnv+"="+x.conf)
	}
	f, err := os.OpenFile(x.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	x.logf = f
	x.cmd.Stdout, x.cmd.Stderr = f, f
	if err := x.cmd.Start(); err != nil {
		t.Fatal(err)
	}
}

// stop asks the translator to stop (SIGTERM) and waits for it.
func (x *translator) stop(t *testing.T) {
	t.Helper()
	if x.cmd == nil {
		return
	}
	x.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- x.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("translator %s exited: %v", x.name, err)
		}
	case <-time.After(15 * time.Second):
		x.cmd.Process.Kill()
		<-done
		t.Errorf("translator %s did not stop within 15 s of SIGTERM", x.name)
	}
	x.cmd = nil
	x.logf.Close()
}

// kill ends the translator without warning, as a crash would.
func (x *translator) kill() {
	if x.cmd == nil {
		return
	}
	x.cmd.Process.Kill()
	x.cmd.Wait()
	x.cmd = nil
	x.logf.Close()
}

// tunPackets reads the packets the kernel handed to the translator's tun
// (both directions) from the process's own view of /proc/net/dev.
func (x *translator) tunPackets() (pid int, packets uint64, ok bool) {
	if x.cmd == nil || x.cmd.Process == nil {
		return 0, 0, false
	}
	pid = x.cmd.Process.Pid
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/dev", pid))
	if err != nil {
		return 0, 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		name, rest, found := strings.Cut(strings.TrimSpace(l), ":")
		if !found || name != tunName {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 10 {
			return 0, 0, false
		}
		tx, err := strconv.ParseUint(f[9], 10, 64)
		return pid, tx, err == nil
	}
	return 0, 0, false
}

// ecmpNextHops returns the router's kernel next hops for the server's IPv4
// address.
func ecmpNextHops(rtr *Netns) []string {
	out, _ := rtr.Output("ip", "-4", "route", "show", serverV4)
	var hops []string
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "via" {
			hops = append(hops, f[i+1])
		}
	}
	sort.Strings(hops)
	return hops
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// TestFailover is the failover experiment of the map646 paper, with
// routing doing the work: two stateless translators, an upstream router
// with equal-cost routes to both (BGP), an IPv6-only server that learns the
// way back from their router advertisements. A ping and six UDP streams
// run from the IPv4 client while one translator is stopped and started
// again. Traffic must go on through the other, come back, and lose nothing
// outside the moments of change.
//
// MAP646_BIN=path runs the translators as `map646 run -c file`; without it
// they run as this test binary's translator helper (the same packages, the
// same HCL). MAP646_FAILOVER_OUT=dir writes the timeline there as
// failover.svg and the numbers as failover-results.md.
func TestFailover(t *testing.T) {
	for _, v := range []variant{
		// A is shut down: it withdraws its BGP routes, sends a final RA
		// and only then stops translating.
		{name: "graceful", out: "failover", window: 2 * time.Second, away: 5 * time.Second},
		// A's VM dies: the process is killed and its links go down. The
		// router notices at once (link down ends the BGP session); the
		// server keeps A's RA route until its neighbour entry fails or
		// the route lifetime (12 s) runs out.
		{name: "crash", out: "failover-crash", crash: true, window: 14 * time.Second, away: 16 * time.Second},
	} {
		t.Run(v.name, func(t *testing.T) { failover(t, v) })
	}
}

// variant is one way of stopping translator A.
type variant struct {
	name, out string
	crash     bool
	window    time.Duration // losses allowed this long after each change
	away      time.Duration // how long A stays away
}

func failover(t *testing.T, v variant) {
	RequireNetns(t)
	for _, c := range []string{"bird", "birdc", "ping"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("needs %s (Debian packages bird2, iputils-ping)", c)
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("needs /dev/net/tun")
	}
	dir := t.TempDir()

	cli, rtr := NewNetns(t, "cli"), NewNetns(t, "rtr")
	xa, xb, srv := NewNetns(t, "xa"), NewNetns(t, "xb"), NewNetns(t, "srv")
	Veth(t, cli, "c0", rtr, "r0")
	Veth(t, rtr, "ra0", xa, "up0")
	Veth(t, rtr, "rb0", xb, "up0")
	Veth(t, xa, "dn0", srv, "pa")
	Veth(t, xb, "dn0", srv, "pb")

	cli.Run("ip", "addr", "add", "192.0.2.2/29", "dev", "c0")
	cli.Run("ip", "route", "add", "default", "via", "192.0.2.1")

	rtr.Sysctl("net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1")
	rtr.Run("ip", "addr", "add", "192.0.2.1/29", "dev", "r0")
	rtr.Run("ip", "addr", "add", "192.0.2.9/30", "dev", "ra0")
	rtr.Run("ip", "addr", "add", "192.0.2.13/30", "dev", "rb0")

	for _, x := range []struct {
		ns *Netns
		up, gw,
		dn string
	}{{xa, "192.0.2.10/30", "192.0.2.9", "2001:db8:6::a/64"}, {xb, "192.0.2.14/30", "192.0.2.13", "2001:db8:6::b/64"}} {
		x.ns.Sysctl("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.dn0.keep_addr_on_down=1",
			"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
		x.ns.Run("ip", "addr", "add", x.up, "dev", "up0")
		x.ns.Run("ip", "route", "add", "default", "via", x.gw)
		x.ns.Run("ip", "addr", "add", x.dn, "dev", "dn0", "nodad")
	}

	srv.Run("ip", "link", "add", "br0", "type", "bridge")
	srv.Sysctl("net.ipv6.conf.br0.accept_dad=0", "net.ipv6.conf.br0.accept_ra=1",
		"net.ipv6.conf.br0.accept_ra_rt_info_max_plen=128", "net.ipv6.conf.br0.accept_ra_rtr_pref=1")
	srv.Run("ip", "link", "set", "pa", "master", "br0")
	srv.Run("ip", "link", "set", "pb", "master", "br0")
	srv.Run("ip", "link", "set", "br0", "up")
	srv.Run("ip", "addr", "add", serverV6+"/64", "dev", "br0", "nodad")

	// The router.
	birdConf := filepath.Join(dir, "bird.conf")
	os.WriteFile(birdConf, []byte(birdRouter), 0o644)
	birdSock := filepath.Join(dir, "bird.ctl")
	bird := rtr.Command("bird", "-c", birdConf, "-s", birdSock, "-f")
	birdLog, _ := os.Create(filepath.Join(dir, "bird.log"))
	bird.Stdout, bird.Stderr = birdLog, birdLog
	if err := bird.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bird.Process.Kill(); bird.Wait() })

	// The translators.
	trs := map[string]*translator{}
	for _, x := range []struct {
		name     string
		ns       *Netns
		id, peer string
	}{{"A", xa, "192.0.2.10", "192.0.2.9"}, {"B", xb, "192.0.2.14", "192.0.2.13"}} {
		conf := filepath.Join(dir, "xlat-"+x.name+".hcl")
		if err := os.WriteFile(conf, []byte(translatorHCL(x.id, x.peer)), 0o644); err != nil {
			t.Fatal(err)
		}
		tr := &translator{name: x.name, conf: conf, ns: x.ns, logPath: filepath.Join(dir, "xlat-"+x.name+".log")}
		trs[x.name] = tr
		tr.start(t)
		t.Cleanup(func() {
			if tr.cmd != nil {
				tr.cmd.Process.Kill()
				tr.cmd.Wait()
			}
		})
	}
	defer func() {
		if t.Failed() {
			for _, f := range []string{"xlat-A.log", "xlat-B.log", "bird.log"} {
				b, _ := os.ReadFile(filepath.Join(dir, f))
				t.Logf("--- %s ---\n%s", f, b)
			}
			out, _ := exec.Command("birdc", "-s", birdSock, "show", "protocols", "all").CombinedOutput()
			t.Logf("--- birdc show protocols all ---\n%s", out)
		}
	}()
	both := []string{"192.0.2.10", "192.0.2.14"}
	waitFor(t, "ECMP route via both translators", 60*time.Second, func() bool {
		return strings.Join(ecmpNextHops(rtr), " ") == strings.Join(both, " ")
	})
	waitFor(t, "the server's routes to the /96 from both translators' RAs", 30*time.Second, func() bool {
		out, _ := srv.Output("ip", "-6", "route", "show", "2001:db8:64::/96")
		return strings.Count(out, "fe80::") >= 1
	})

	// The probes: an echo server on the IPv6-only server; a ping and UDP
	// streams from the IPv4 client.
	var echo net.PacketConn
	srv.Do(func() {
		var err error
		if echo, err = net.ListenPacket("udp6", fmt.Sprintf("[%s]:%d", serverV6, echoPort)); err != nil {
			t.Fatal(err)
		}
	})
	go EchoUDP(echo)
	defer echo.Close()

	t0 := time.Now()
	var flows []*UDPFlow
	cli.Do(func() {
		for i := range udpFlows {
			c, err := net.Dial("udp4", net.JoinHostPort(serverV4, strconv.Itoa(echoPort)))
			if err != nil {
				t.Fatal(err)
			}
			flows = append(flows, NewUDPFlow(fmt.Sprintf("udp-%d", i+1), uint32(i+1), c, udpEvery, t0))
		}
	})
	var pingOut bytes.Buffer
	ping := cli.Command("ping", "-D", "-n", "-i", strconv.FormatFloat(pingEvery.Seconds(), 'f', 3, 64), "-W", "1", serverV4)
	ping.Stdout = &pingOut
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range flows {
		f.Start()
	}

	// Sample the packet rate through each translator every 100 ms.
	rates := map[string][]RatePoint{}
	stopSampling := make(chan struct{})
	samplingDone := make(chan struct{})
	go func() {
		defer close(samplingDone)
		type last struct {
			pid int
			n   uint64
			at  time.Time
		}
		prev := map[string]last{}
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case now := <-tk.C:
				for name, tr := range trs {
					pid, n, ok := tr.tunPackets()
					p, had := prev[name]
					pps := 0.0
					if ok && had && p.pid == pid && n >= p.n {
						pps = float64(n-p.n) / now.Sub(p.at).Seconds()
					}
					if ok {
						prev[name] = last{pid, n, now}
					} else {
						delete(prev, name)
					}
					rates[name] = append(rates[name], RatePoint{At: now.Sub(t0), PPS: pps})
				}
			}
		}
	}()

	var events []Event
	mark := func(label string) time.Duration {
		at := time.Since(t0)
		events = append(events, Event{At: at, Label: label})
		t.Logf("%6.3f s  %s", at.Seconds(), label)
		return at
	}
	time.Sleep(4 * time.Second)
	var stopAt time.Duration
	if v.crash {
		stopAt = mark("A crashes")
		trs["A"].kill()
		xa.Run("ip", "link", "set", "up0", "down")
		xa.Run("ip", "link", "set", "dn0", "down")
	} else {
		stopAt = mark("stop A")
		trs["A"].stop(t)
		mark("A stopped")
	}
	waitFor(t, "the router to drop A", 20*time.Second, func() bool {
		return strings.Join(ecmpNextHops(rtr), " ") == "192.0.2.14"
	})
	mark("router dropped A")
	time.Sleep(stopAt + v.away - time.Since(t0))
	startAt := mark("start A")
	if v.crash {
		xa.Run("ip", "link", "set", "up0", "up")
		xa.Run("ip", "link", "set", "dn0", "up")
		xa.Run("ip", "route", "replace", "default", "via", "192.0.2.9")
	}
	trs["A"].start(t)
	waitFor(t, "ECMP via both translators again", 60*time.Second, func() bool {
		return strings.Join(ecmpNextHops(rtr), " ") == strings.Join(both, " ")
	})
	backAt := mark("A back in ECMP")
	time.Sleep(5 * time.Second)
	endAt := time.Since(t0)

	// Stop the probes and collect.
	ping.Process.Signal(syscall.SIGINT)
	ping.Wait()
	for _, f := range flows {
		f.StopSending()
	}
	time.Sleep(time.Second) // late echoes
	var samples []Sample
	for _, f := range flows {
		samples = append(samples, f.Samples()...)
	}
	close(stopSampling)
	<-samplingDone
	ps, err := ParsePing(&pingOut, "icmp", t0, pingEvery)
	if err != nil {
		t.Fatalf("%v\n%s", err, pingOut.String())
	}
	samples = append(samples, ps...)

	tl := &Timeline{
		Title:   fmt.Sprintf("map646 failover, %s: translator A stopped and restarted (BGP ECMP + RA routes, netns)", v.name),
		Samples: samples,
		Events:  events,
		Rates:   rates,
	}
	report := summarize(tl, stopAt, startAt, backAt)
	t.Log("\n" + report)
	if out := os.Getenv("MAP646_FAILOVER_OUT"); out != "" {
		writeOut(t, out, v.out, tl, report)
	}

	// Traffic went on through B while A was away, and every flow was
	// answered in each phase.
	flowNames := []string{"icmp"}
	for _, f := range flows {
		flowNames = append(flowNames, f.Name)
	}
	for _, f := range flowNames {
		for _, ph := range []struct {
			name     string
			from, to time.Duration
		}{
			{"before the stop", 0, stopAt},
			{"while A was away", stopAt + v.window, startAt},
			{"after A returned", backAt + time.Second, endAt},
		} {
			if Received(samples, f, ph.from, ph.to) == 0 {
				t.Errorf("%s: nothing answered %s", f, ph.name)
			}
		}
	}
	// Nothing lost outside the moments of change: up to v.window after
	// stopping A (withdrawal on the router, RA goodbye or expiry on the
	// server) and after starting it (its routes coming back).
	if un := Unexplained(samples, []Event{{At: stopAt}, {At: startAt}, {At: backAt}}, 100*time.Millisecond, v.window); len(un) > 0 {
		t.Errorf("%d probes lost outside the failover windows, first %+v", len(un), un[0])
	}
	// A carried traffic again after its return (both directions count).
	var aAfter float64
	for _, r := range rates["A"] {
		if r.At > backAt+500*time.Millisecond {
			aAfter += r.PPS
		}
	}
	if aAfter == 0 {
		t.Error("translator A carried no traffic after it returned")
	}
}

// summarize is the experiment's result as a Markdown table.
func summarize(tl *Timeline, stopAt, startAt, backAt time.Duration) string {
	var b strings.Builder
	total, lost := 0, 0
	for _, s := range tl.Samples {
		total++
		if s.Lost {
			lost++
		}
	}
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| probes sent | %d (ICMP every %v, %d UDP flows every %v) |\n", total, pingEvery, udpFlows, udpEvery)
	fmt.Fprintf(&b, "| probes lost | %d |\n", lost)
	fmt.Fprintf(&b, "| median RTT | %v |\n", MedianRTT(tl.Samples).Round(time.Microsecond))
	fmt.Fprintf(&b, "| 99th percentile RTT | %v |\n", quantile(tl.Samples, 0.99).Round(time.Microsecond))
	fmt.Fprintf(&b, "| A stopped at | %.3f s |\n| A started at | %.3f s |\n| A back in the router's ECMP route | %.3f s (%.3f s after start) |\n",
		stopAt.Seconds(), startAt.Seconds(), backAt.Seconds(), (backAt - startAt).Seconds())
	ws := LossWindows(tl.Samples)
	if len(ws) == 0 {
		fmt.Fprintf(&b, "| loss windows | none |\n")
	}
	for _, w := range ws {
		fmt.Fprintf(&b, "| loss window | %s: %d lost, sent %.3f–%.3f s (%.0f ms) |\n", w.Flow, w.Lost, w.From.Seconds(), w.To.Seconds(), float64(w.To-w.From)/float64(time.Millisecond))
	}
	return b.String()
}

func writeOut(t *testing.T, dir, name string, tl *Timeline, report string) {
	t.Helper()
	var svg bytes.Buffer
	if err := tl.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".svg"), svg.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+"-results.md"), []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
}
