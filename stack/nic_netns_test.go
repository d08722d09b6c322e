package stack

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/map646/map646/internal/netnstest"
	"github.com/map646/map646/internal/testenv"
	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// linkMode is how the translator namespace of a modeTopology is served.
type linkMode int

const (
	modeNIC     linkMode = iota // AF_PACKET on x4 and x6, kernel forwarding off
	modeFD                      // an inherited bare-IP tun fd (no vnet header), kernel routing into it
	modeKernel                  // no translator: the server also has IPv4 and the kernel forwards (the baseline of measurements)
	modeFDVnet                  // an inherited tun fd with a 12-byte virtio_net_hdr and offloads (fd_vnet_netns_test.go)
	modeTapVnet                 // an inherited tap fd with a 12-byte virtio_net_hdr and offloads, the kernel routing on-link into it
)

func (m linkMode) String() string {
	return [...]string{"nic", "fd", "kernel", "fd-vnet", "tap-vnet"}[m]
}

// newModeTopology is newTopology's address plan served in another link
// mode. In NIC mode every veth has GRO on (as NIC drivers do) and the
// client and server keep their veths' transmit offloads (partial
// checksums, TSO and GSO super-packets, which a veth hands its peer, the
// translator's NIC, as they are); the other modes have the client and
// server send complete packets.
func newModeTopology(t testing.TB, mode linkMode, mtu6, queues int) *topology {
	return newModeTopologyOffloads(t, mode, mtu6, queues, true)
}

// newModeTopologyOffloads is newModeTopology with, in NIC mode, the
// client's and server's TSO and GSO on (tso) or off: off, the
// super-packets the translator sees are GRO's alone.
func newModeTopologyOffloads(t testing.TB, mode linkMode, mtu6, queues int, tso bool) *topology {
	t.Helper()
	netnstest.RequireTun(t, "dp-")
	tp := &topology{
		cli:  netnstest.New(t, "dp-cli-"),
		xlat: netnstest.New(t, "dp-xlat-"),
		srv:  netnstest.New(t, "dp-srv-"),
	}
	netnstest.Veth(t, tp.cli, "c4", tp.xlat, "x4")
	netnstest.Veth(t, tp.xlat, "x6", tp.srv, "s6")
	for _, c := range [][]string{
		{"ip", "addr", "add", "203.0.113.2/28", "dev", "c4"},
		{"ip", "addr", "add", clientV4 + "/32", "dev", "lo"},
		{"ip", "route", "add", "198.51.100.0/24", "via", "203.0.113.1", "src", clientV4},
	} {
		tp.cli.Run(c...)
	}
	for _, c := range [][]string{
		{"ip", "link", "set", "s6", "mtu", strconv.Itoa(mtu6)},
		{"ip", "addr", "add", "2001:db8:ffff::2/64", "dev", "s6", "nodad"},
		{"ip", "addr", "add", serverV6 + "/128", "dev", "lo", "nodad"},
		{"ip", "route", "add", prefixV6, "via", "2001:db8:ffff::1", "src", serverV6, "advmss", "1460"},
	} {
		tp.srv.Run(c...)
	}
	if mode == modeNIC || mode.vnet() {
		for _, p := range []struct {
			ns   *netnstest.NS
			name string
		}{{tp.cli, "c4"}, {tp.srv, "s6"}, {tp.xlat, "x4"}, {tp.xlat, "x6"}} {
			// Both ends' transmit offloads and GRO, as NIC drivers and
			// VM managers' taps have them.
			setOffloads(t, p.ns, p.name, true, ethtoolSGRO, ethtoolSTXCSUM)
			setOffloads(t, p.ns, p.name, tso, ethtoolSTSO, ethtoolSGSO)
		}
	} else {
		setOffloads(t, tp.cli, "c4", false, ethtoolSTSO, ethtoolSGSO, ethtoolSTXCSUM)
		setOffloads(t, tp.srv, "s6", false, ethtoolSTSO, ethtoolSGSO, ethtoolSTXCSUM)
	}
	if mode == modeKernel {
		tp.srv.Run("ip", "addr", "add", "203.0.113.18/28", "dev", "s6")
		tp.srv.Run("ip", "addr", "add", serverV4+"/32", "dev", "lo")
		tp.srv.Run("ip", "route", "add", "192.0.2.0/24", "via", "203.0.113.17")
		tp.xlat.Run("ip", "addr", "add", "203.0.113.17/28", "dev", "x6")
		tp.xlat.Run("ip", "route", "add", "198.51.100.0/24", "via", "203.0.113.18")
	}
	forwarding := "1"
	if mode == modeNIC {
		forwarding = "0"
		// As the daemon does: no ICMPv6 "no route" from the kernel for
		// its copy of the packets to the prefix.
		tp.xlat.Run("ip", "-6", "route", "add", "blackhole", prefixV6)
	}
	for _, c := range [][]string{
		{"sysctl", "-qw", "net.ipv4.ip_forward=" + forwarding, "net.ipv6.conf.all.forwarding=" + forwarding,
			"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"},
		{"ip", "link", "set", "x6", "mtu", strconv.Itoa(mtu6)},
		{"ip", "addr", "add", "203.0.113.1/28", "dev", "x4"},
		{"ip", "addr", "add", "2001:db8:ffff::1/64", "dev", "x6", "nodad"},
		{"ip", "route", "add", "192.0.2.0/24", "via", "203.0.113.2"},
		{"ip", "route", "add", "2001:db8:6::/64", "via", "2001:db8:ffff::2"},
	} {
		tp.xlat.Run(c...)
	}

	// In NIC mode the engine knows the NICs' MTUs (the configuration
	// leaves them unset and ServeNIC follows them, as in the daemon), as
	// the kernel's forwarding would; with an fd the kernel routes, and its
	// errors are translated.
	cfg := *testEngine(t).Config()
	if mode == modeNIC {
		cfg.Policy.DecrementTTL = true
	}
	if mode == modeTapVnet {
		// As the daemon does on a tap: the translator is a router on
		// the segment, whose MTU bounds both sides.
		cfg.Policy.IPv4MTU, cfg.Policy.IPv6MTU = 1520, 1520
		cfg.Policy.DecrementTTL = true
	}
	eng, err := xlat.NewEngine(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	tp.eng = eng
	ctx, cancel := context.WithCancel(context.Background())
	switch mode {
	case modeNIC:
		err = tp.xlat.Do(func() (err error) {
			tp.dp, err = ServeNIC(ctx, eng, NICConfig{IPv4: "x4", IPv6: "x6", Queues: queues, SteerPrefix: nicSteerPrefix, FollowIPv4MTU: true, FollowIPv6MTU: true}, nil)
			return err
		})
	case modeFD:
		var fds []int
		if err := tp.xlat.Do(func() (err error) {
			fds, err = openTunQueues("dp-fd", max(queues, 1), 0)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			for _, fd := range fds {
				unix.Close(fd)
			}
		})
		tp.xlat.Run("ip", "link", "set", "dp-fd", "mtu", "1520", "up")
		tp.xlat.Run("ip", "route", "add", "198.51.100.0/24", "dev", "dp-fd")
		tp.xlat.Run("ip", "route", "add", prefixV6, "dev", "dp-fd")
		tp.dp, err = ServeFDQueues(ctx, eng, fds, 1520, 0, nil)
	case modeFDVnet, modeTapVnet:
		tp.dp, err = serveVnetFD(t, tp, ctx, mode == modeTapVnet)
	case modeKernel:
		cancel()
		return tp
	}
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := tp.dp.Wait(); err != nil {
			t.Errorf("data path: %v", err)
		}
		t.Logf("link stats %+v", tp.dp.LinkStats())
		tot := tp.eng.Totals()
		t.Logf("engine: packets %v, emitted %d", tot.Packets, tot.Emitted)
		for dir := range xlat.NumDirs {
			for r, n := range tot.Drops[dir] {
				if n != 0 {
					t.Logf("engine: %d dropped %s: %s", n, dir, xlat.Reason(r))
				}
			}
		}
	})
	return tp
}

// setOffloads switches the offloads of cmds (ethtool set commands) on or
// off on interface name in ns.
func setOffloads(t testing.TB, ns *netnstest.NS, name string, on bool, cmds ...uint32) {
	t.Helper()
	err := ns.Do(func() error {
		fd, err := ethtoolSocket()
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for _, cmd := range cmds {
			if err := setOffload(fd, name, cmd, on); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// openTunQueues opens queues queues of a tun that carries bare IP packets
// (IFF_NO_PI; IFF_MULTI_QUEUE for more than one), behind a virtio_net_hdr
// of vnet bytes (IFF_VNET_HDR, TUNSETVNETHDRSZ) unless vnet is 0, as a
// supervisor would hand them over, in the calling thread's namespace.
func openTunQueues(name string, queues, vnet int) ([]int, error) {
	var fds []int
	fail := func(err error) ([]int, error) {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, err
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if queues > 1 {
		flags |= unix.IFF_MULTI_QUEUE
	}
	if vnet > 0 {
		flags |= unix.IFF_VNET_HDR
	}
	for range queues {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fail(err)
		}
		fds = append(fds, fd)
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return fail(err)
		}
		ifr.SetUint16(flags)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			return fail(fmt.Errorf("TUNSETIFF: %w", err))
		}
	}
	if vnet > 0 {
		if err := unix.IoctlSetPointerInt(fds[0], unix.TUNSETVNETHDRSZ, vnet); err != nil {
			return fail(fmt.Errorf("TUNSETVNETHDRSZ: %w", err))
		}
	}
	return fds, nil
}

// TestNetnsModes runs the traffic of the tun tests through NIC mode and an
// inherited fd: ping both ways, 10 MB of TCP each way with SHA-256, UDP of
// several sizes, a translated Port Unreachable (ECONNREFUSED), and path
// MTU discovery over a 1280-byte IPv6 link.
func TestNetnsModes(t *testing.T) {
	for _, mode := range []linkMode{modeNIC, modeFD} {
		t.Run(mode.String(), func(t *testing.T) {
			tp := newModeTopology(t, mode, 1520, 1)
			t.Run("ping", func(t *testing.T) {
				for _, c := range []struct {
					ns   *netnstest.NS
					args []string
				}{
					{tp.cli, []string{"ping", "-c", "3", "-i", "0.2", "-W", "2", serverV4}},
					{tp.srv, []string{"ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", clientInV6}},
				} {
					out := c.ns.MustRun(t, c.args...)
					if strings.Contains(out, "DUP!") {
						t.Errorf("duplicate replies (the kernel forwarded too?):\n%s", out)
					}
				}
			})
			t.Run("tcp", func(t *testing.T) {
				transferTCP(t, tp, 10<<20, true)
				transferTCP(t, tp, 10<<20, false)
			})
			t.Run("udp", func(t *testing.T) { udpEcho(t, tp) })
			t.Run("ttl", func(t *testing.T) {
				// The hops the translator counts: one in NIC mode (it
				// decrements itself), two with an fd (the kernel routes
				// into the tun and out of it).
				hops := map[linkMode]int{modeNIC: 1, modeFD: 2}[mode]
				out, _ := tp.cli.Output("ping", "-c", "1", "-t", strconv.Itoa(hops), "-W", "2", serverV4)
				if !strings.Contains(out, "Time to live exceeded") {
					t.Errorf("TTL %d did not expire at the translator:\n%s", hops, out)
				}
				tp.cli.MustRun(t, "ping", "-c", "1", "-t", strconv.Itoa(hops+1), "-W", "2", serverV4)
			})
			t.Run("port-unreachable", func(t *testing.T) {
				var c net.Conn
				if err := tp.cli.Do(func() (err error) {
					c, err = net.Dial("udp4", serverV4+":9")
					return err
				}); err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if _, err := udpExchange(c, []byte("anyone there?")); !errors.Is(err, unix.ECONNREFUSED) {
					t.Fatalf("got %v, want ECONNREFUSED", err)
				}
			})
			if s := tp.dp.LinkStats(); s.ReadErrors != 0 {
				t.Errorf("link stats %+v", s)
			}
			if !tp.dp.Healthy() {
				t.Errorf("unhealthy: %v", tp.dp.Check())
			}
		})
	}
}

// TestNetnsModesPathMTU: behind a 1280-byte IPv6 link a TCP transfer
// completes, and a DF datagram too large for the link makes the client's
// socket learn MTU 1260 from a Fragmentation Needed: in NIC mode the
// engine makes it (it knows the NIC's MTU), with an fd the kernel's Packet
// Too Big is translated.
func TestNetnsModesPathMTU(t *testing.T) {
	for _, mode := range []linkMode{modeNIC, modeFD} {
		t.Run(mode.String(), func(t *testing.T) {
			tp := newModeTopology(t, mode, 1280, 1)
			transferTCP(t, tp, 4<<20, true)
			learnsMTU(t, tp, 1260)
		})
	}
}

// learnsMTU sends DF datagrams too large for the path from the client
// until its socket learns mtu from a Fragmentation Needed.
func learnsMTU(t *testing.T, tp *topology, mtu int) {
	t.Helper()
	var c net.Conn
	if err := tp.cli.Do(func() (err error) {
		c, err = net.Dial("udp4", serverV4+":9")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, _ := c.(*net.UDPConn).SyscallConn()
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
	})
	var got int
	waitFor(t, fmt.Sprintf("the client's socket to learn MTU %d", mtu), func() bool {
		c.Write(make([]byte, 1400))
		rc.Control(func(fd uintptr) { got, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU) })
		return got == mtu
	})
}

// TestNetnsNICFollowsMTU: when the IPv6 NIC's MTU drops while running, NIC
// mode answers DF packets that no longer fit with Fragmentation Needed for
// the new MTU (the engine follows the NIC), instead of failing to send.
// The daemon's reloads (a new mapping table, MTUs left to the NICs), also
// while the MTU changes, keep the NIC's MTU, and the MTU changes keep the
// reloads' table; a configured MTU stays as configured. Run with -race.
func TestNetnsNICFollowsMTU(t *testing.T) {
	tp := newModeTopology(t, modeNIC, 1520, 1)
	if got := tp.eng.Config().Policy; got.IPv4MTU != 1500 || got.IPv6MTU != 1520 {
		t.Fatalf("engine MTUs %d, %d at the start, want the NICs' 1500, 1520", got.IPv4MTU, got.IPv6MTU)
	}
	tp.cli.Run("ping", "-c", "1", "-W", "2", serverV4)
	tp.srv.Run("ip", "link", "set", "s6", "mtu", "1280")
	daemonConfig := func() *xlat.Config {
		c := *testEngine(t).Config() // a new table each time
		c.Policy.DecrementTTL = true
		return &c
	}
	stop := make(chan struct{})
	reloaded := make(chan int)
	go func() { // the daemon's reloads
		n := 0
		defer func() { reloaded <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := tp.eng.Reload(daemonConfig()); err != nil {
				t.Error(err)
				return
			}
			n++
			time.Sleep(time.Millisecond)
		}
	}()
	for mtu := 1400; mtu > 1280; mtu -= 20 {
		tp.xlat.Run("ip", "link", "set", "x6", "mtu", strconv.Itoa(mtu))
	}
	tp.xlat.Run("ip", "link", "set", "x6", "mtu", "1280")
	waitFor(t, "the engine to take MTU 1280", func() bool { return tp.eng.Config().Policy.IPv6MTU == 1280 })
	close(stop)
	t.Logf("%d reloads while the MTU changed", <-reloaded)
	last := daemonConfig()
	if err := tp.eng.Reload(last); err != nil {
		t.Fatal(err)
	}
	if got := tp.eng.Config(); got.Policy.IPv6MTU != 1280 || got.Map != last.Map {
		t.Fatalf("after a reload: IPv6 MTU %d, want the NIC's 1280 (the reload's table: %v)", got.Policy.IPv6MTU, got.Map == last.Map)
	}
	learnsMTU(t, tp, 1260)

	set := daemonConfig()
	set.Policy.IPv6MTU = 1300
	if err := tp.eng.Reload(set); err != nil {
		t.Fatal(err)
	}
	tp.xlat.Run("ip", "link", "set", "x6", "mtu", "1290")
	// The kernel's events come in order: once x4's is in, x6's was.
	tp.xlat.Run("ip", "link", "set", "x4", "mtu", "1400")
	waitFor(t, "the engine to take IPv4 MTU 1400", func() bool { return tp.eng.Config().Policy.IPv4MTU == 1400 })
	if got := tp.eng.Config().Policy.IPv6MTU; got != 1300 {
		t.Errorf("a configured IPv6 MTU became %d after the NIC's changed, want 1300", got)
	}
	if err := tp.eng.Reload(daemonConfig()); err != nil {
		t.Fatal(err)
	}
	if got := tp.eng.Config().Policy; got.IPv4MTU != 1400 || got.IPv6MTU != 1290 {
		t.Errorf("MTUs left to the NICs again: %d, %d, want the NICs' 1400, 1290", got.IPv4MTU, got.IPv6MTU)
	}

	// Below IPv6's minimum (RFC 8200 section 5): the engine keeps 1290.
	tp.xlat.Run("ip", "link", "set", "x6", "mtu", "1200")
	tp.xlat.Run("ip", "link", "set", "x4", "mtu", "1300")
	waitFor(t, "the engine to take IPv4 MTU 1300", func() bool { return tp.eng.Config().Policy.IPv4MTU == 1300 })
	if got := tp.eng.Config().Policy.IPv6MTU; got != 1290 {
		t.Errorf("IPv6 MTU %d after the NIC's went to 1200, want the last valid one, 1290", got)
	}
}

// TestNetnsNICHostTraffic: in NIC mode the appliance's own traffic stays
// the kernel's: pings to the translator's addresses are answered once, by
// the kernel, and never reach a Handler.
func TestNetnsNICHostTraffic(t *testing.T) {
	tp := newModeTopology(t, modeNIC, 1520, 1)
	before := tp.dp.LinkStats()
	for _, c := range []struct {
		ns   *netnstest.NS
		args []string
	}{
		{tp.cli, []string{"ping", "-c", "2", "-i", "0.2", "-W", "2", "203.0.113.1"}},
		{tp.srv, []string{"ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "2001:db8:ffff::1"}},
	} {
		if out := c.ns.Run(c.args...); strings.Contains(out, "DUP!") {
			t.Errorf("duplicate replies:\n%s", out)
		}
	}
	if after := tp.dp.LinkStats(); after.Reads != before.Reads {
		t.Errorf("the translator read %d packets meant for the host", after.Reads-before.Reads)
	}
}

// nicSteerPrefix is the SteerPrefix of newModeTopology's NIC mode: the
// translator's prefix, as the daemon sets it.
var nicSteerPrefix = netip.MustParsePrefix(prefixV6)

// TestNetnsNICFanout: a NIC's sockets share its traffic flow by flow, and
// one queue loop reads the sockets of one index of both NICs. With the
// steering program (SteerPrefix) a flow's request, read from x4, and its
// reply, read from x6, come to sockets of the same index, so one queue
// loop translates both: of 32 UDP flows every exchange's two packets are
// one queue's, and both queues get flows. With the kernel's flow hash (no
// SteerPrefix) the flows spread too, but request and reply are hashed
// apart (different addresses), so some exchanges are split between the
// queues: what the steering removes.
func TestNetnsNICFanout(t *testing.T) {
	for _, steer := range []bool{true, false} {
		t.Run(map[bool]string{true: "steered", false: "hash"}[steer], func(t *testing.T) {
			if !steer {
				saved := nicSteerPrefix
				nicSteerPrefix = netip.Prefix{}
				t.Cleanup(func() { nicSteerPrefix = saved })
			}
			tp := newModeTopology(t, modeNIC, 1520, 2)
			port := startUDPEcho(t, tp.srv)
			// Handler queues: one per index, each reading x4's and
			// x6's socket of that index.
			qs := tp.dp.handler.queues
			if len(qs) != 2 {
				t.Fatalf("%d handler queues, want 2 (one per index of the NICs' sockets)", len(qs))
			}
			reads := func() [2]uint64 { return [2]uint64{qs[0].stats.Reads.Load(), qs[1].stats.Reads.Load()} }
			// 32 flows (source ports): the chance that a hash puts all
			// on one queue, or splits none, is 2^-31.
			var flows [2]int
			split := 0
			for i := range 32 {
				c := dialServerUDP(t, tp.cli, port)
				before := reads()
				if _, err := udpExchange(c, []byte(fmt.Sprintf("flow %d", i))); err != nil {
					t.Fatalf("flow %d: %v", i, err)
				}
				c.Close()
				after := reads()
				d0, d1 := after[0]-before[0], after[1]-before[1]
				switch {
				case d0+d1 != 2:
					t.Fatalf("flow %d: queues read %d and %d packets, want 2 in all", i, d0, d1)
				case d0 == 2:
					flows[0]++
				case d1 == 2:
					flows[1]++
				default:
					split++
				}
			}
			t.Logf("exchanges on queue 0: %d, on queue 1: %d, split between them: %d", flows[0], flows[1], split)
			if steer {
				if split > 0 {
					t.Errorf("%d of 32 exchanges had their request and reply read by different queues", split)
				}
				if flows[0] == 0 || flows[1] == 0 {
					t.Errorf("exchanges per queue %v: no spread", flows)
				}
			} else if split == 0 || flows[0]+split == 0 || flows[1]+split == 0 {
				t.Errorf("hash: exchanges per queue %v, split %d: want a spread and some split exchanges", flows, split)
			}
		})
	}
}

// TestNICPathAllocs: in NIC mode the host filter, the Handler, the engine
// and the socket's Write (next hop lookup, sendto on a real AF_PACKET
// socket) allocate nothing per packet once the next hop is resolved.
func TestNICPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts of gVisor's pooled PacketBuffers are meaningless under -race")
	}
	netnstest.Require(t, "dp-")
	ns := netnstest.New(t, "dp-alloc-")
	peer := netnstest.New(t, "dp-peer-")
	netnstest.Veth(t, ns, "x6", peer, "p6")
	// Room for the translated 1500-byte packet on both ends.
	ns.Run("ip", "link", "set", "x6", "mtu", "1520")
	peer.Run("ip", "link", "set", "p6", "mtu", "1520")
	n := &nicPath{log: slog.New(slog.DiscardHandler)}
	t.Cleanup(n.close)
	err := ns.Do(func() error {
		ifc, err := net.InterfaceByName("x6")
		if err != nil {
			return err
		}
		p := &nicPort{name: "x6", ifindex: ifc.Index, mtu: ifc.MTU}
		n.ports = []*nicPort{p}
		fd, ring, err := openPacketSocket(ifc.Index, true, p, ringFrames, -1, nil)
		if err != nil {
			return err
		}
		p.fds, p.rings = []int{fd}, []*nicRing{ring}
		p.files = []*os.File{os.NewFile(uintptr(fd), "x6")}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	n.res = newResolver(&fakeNeighKernel{}, []int{n.ports[0].ifindex}, n.log)
	n.res.dsts[netip.MustParseAddr(serverV6)] = nextHop{ifindex: n.ports[0].ifindex, via: netip.MustParseAddr(serverV6), mac: [6]byte{2, 0, 0, 0, 0, 1}, resolved: true}
	conn, err := newNICConn(n, n.ports[0].files[0], 0)
	if err != nil {
		t.Fatal(err)
	}
	conn.useRing(n.ports[0].rings[0]) // as ServeNIC does: Writes go in batches
	probe := append(make([]byte, tun.VnetHdrLen), ipv6(header.UDPProtocolNumber, cli6, srv6, make([]byte, 8))...)
	if _, err := conn.Write(probe); err != nil {
		t.Errorf("write: %v", err)
	}
	ep := tun.NewEndpointConns([]tun.Conn{conn}, 1520, allOffloads)
	h := NewHandler(ep, 1, func() Translator { return testEngine(t).NewWorker() }, nil)
	f := &hostFilter{local: &n.local, h: h}
	if !f.TakesFrames(ep) {
		t.Fatal("the filter does not pass the endpoint's frames to the Handler")
	}
	c := handlerCases()[0] // IPv4 TCP, 1500 bytes, to the server
	frame := ep.Frame(0)
	deliver := func() {
		// What the endpoint does for each packet it reads.
		copy(frame.Bytes()[tun.FramePacket:], c.pkt)
		frame.Offload = xlat.Offload{}
		pkt := frame.PacketBuffer(tun.FramePacket, tun.FramePacket+len(c.pkt))
		f.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt)
		pkt.DecRef()
	}
	deliver()
	if a := testing.AllocsPerRun(500, deliver); a != 0 {
		t.Errorf("%v allocations per packet", a)
	}
	if s := h.Stats(); s.Writes == 0 || s.WriteErrors != 0 {
		t.Errorf("handler stats %+v", s)
	}
}

// TestNetnsNICSuperPackets: in NIC mode GSO super-packets cross the
// translator whole, both ways, whether the sender's TSO made them (tso) or
// the translator's NIC's GRO merged them (gro, the senders' TSO and GSO
// off): 2 x 20 MiB of TCP (SHA-256 checked) take far fewer reads than
// segments, with partial checksums from the senders' transmit checksum
// offload completed by the kernel on the way out. A UDP_SEGMENT (USO)
// send of ten datagrams crosses as one super-packet each way and arrives
// as ten intact datagrams.
func TestNetnsNICSuperPackets(t *testing.T) {
	for _, tso := range []bool{true, false} {
		name := map[bool]string{true: "tso", false: "gro"}[tso]
		t.Run(name, func(t *testing.T) {
			tp := newModeTopologyOffloads(t, modeNIC, 1520, 1, tso)
			const size = 20 << 20
			before := tp.dp.LinkStats().Reads
			transferTCP(t, tp, size, true)
			transferTCP(t, tp, size, false)
			reads := tp.dp.LinkStats().Reads - before
			// Over 14000 full-size segments each way, and ACKs.
			t.Logf("%d reads for 2 x %d bytes", reads, size)
			if reads > size/1448 {
				t.Errorf("%d reads for 2 x %d bytes: no super-packets", reads, size)
			}
			if tso {
				usoCrosses(t, tp, xlat.Dir46)
				usoCrosses(t, tp, xlat.Dir64)
			}
			s := tp.dp.LinkStats()
			if s.WriteErrors != 0 || s.InvalidVnetHdr != 0 || s.ReadErrors != 0 || s.NoNextHop != 0 {
				t.Errorf("link errors: %+v", s)
			}
		})
	}
}

// usoCrosses sends ten datagrams of 1000 bytes in one UDP_SEGMENT write
// across the translator in direction dir (4to6: client to server) and
// checks that they arrive intact and that the engine translated one
// super-packet.
func usoCrosses(t *testing.T, tp *topology, dir xlat.Dir) {
	t.Helper()
	from, to := tp.cli, tp.srv
	lnet, lip, dnet, dip := "udp6", serverV6, "udp4", serverV4
	if dir == xlat.Dir64 {
		from, to = tp.srv, tp.cli
		lnet, lip, dnet, dip = "udp4", clientV4, "udp6", clientInV6
	}
	var srv *net.UDPConn
	if err := to.Do(func() (err error) {
		srv, err = net.ListenUDP(lnet, &net.UDPAddr{IP: net.ParseIP(lip)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var c *net.UDPConn
	if err := from.Do(func() error {
		cc, err := net.Dial(dnet, net.JoinHostPort(dip, strconv.Itoa(srv.LocalAddr().(*net.UDPAddr).Port)))
		c, _ = cc.(*net.UDPConn)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, _ := c.SyscallConn()
	var serr error
	rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, 1000) })
	if serr != nil {
		testenv.SkipOrFailf(t, "UDP_SEGMENT: %v", serr)
	}
	before := tp.eng.Totals().Packets[dir][xlat.ProtoUDP]
	const n = 10
	msg := make([]byte, n*1000)
	for i := range msg {
		msg[i] = byte(i/1000 + 1)
	}
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range n {
		m, err := srv.Read(buf)
		if err != nil {
			t.Fatalf("%s: datagram %d: %v", dir, i, err)
		}
		if m != 1000 || !bytes.Equal(buf[:m], msg[i*1000:(i+1)*1000]) {
			t.Fatalf("%s: datagram %d: %d bytes, first %d", dir, i, m, buf[0])
		}
	}
	// The queue publishes its counts when it finds its socket empty.
	var got uint64
	for deadline := time.Now().Add(5 * time.Second); got == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		got = tp.eng.Totals().Packets[dir][xlat.ProtoUDP] - before
	}
	if got != 1 {
		t.Errorf("%s: engine translated %d UDP packets for one USO send, want 1 super-packet", dir, got)
	}
}

// TestNetnsNICDeleted: when one of its NICs is deleted, the NIC data path
// stops, Wait returns an error naming the NIC, and it reports unhealthy
// (the daemon then withdraws its routes).
func TestNetnsNICDeleted(t *testing.T) {
	netnstest.Require(t, "dp-")
	ns := netnstest.New(t, "dp-nicdel-")
	peer := netnstest.New(t, "dp-nicpeer-")
	netnstest.Veth(t, ns, "x4", peer, "p4")
	netnstest.Veth(t, ns, "x6", peer, "p6")
	ns.Run("sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var d *Datapath
	if err := ns.Do(func() (err error) {
		d, err = ServeNIC(ctx, testEngine(t), NICConfig{IPv4: "x4", IPv6: "x6", Queues: 2}, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !d.Healthy() {
		t.Fatalf("unhealthy at start: %v", d.Check())
	}
	ns.Run("ip", "link", "del", "x4")
	done := make(chan error, 1)
	go func() { done <- d.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "x4") {
			t.Errorf("Wait = %v, want an error naming x4", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("data path still running after its NIC was deleted")
	}
	if d.Healthy() {
		t.Error("healthy without its NIC")
	}
}

// TestNetnsNICMTUBelowIPv6Minimum: an IPv6 NIC whose MTU is below IPv6's
// minimum (RFC 8200 section 5) cannot be followed: ServeNIC refuses to
// start, naming the MTU, and leaves the engine as it was; with the IPv6
// MTU configured it starts.
func TestNetnsNICMTUBelowIPv6Minimum(t *testing.T) {
	netnstest.Require(t, "dp-")
	ns := netnstest.New(t, "dp-nicmtu-")
	peer := netnstest.New(t, "dp-nicmtupeer-")
	netnstest.Veth(t, ns, "x4", peer, "p4")
	netnstest.Veth(t, ns, "x6", peer, "p6")
	ns.Run("sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0")
	ns.Run("ip", "link", "set", "x6", "mtu", "1200")
	eng := testEngine(t)
	before := eng.Config()
	err := ns.Do(func() error {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		d, err := ServeNIC(ctx, eng, NICConfig{IPv4: "x4", IPv6: "x6", FollowIPv4MTU: true, FollowIPv6MTU: true}, nil)
		if err == nil {
			cancel()
			d.Wait()
		}
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "1200") {
		t.Fatalf("ServeNIC with IPv6 NIC MTU 1200 = %v, want an error naming the MTU", err)
	}
	if eng.Config() != before {
		t.Error("the refused start changed the engine's configuration")
	}
	set := *before
	set.Policy.IPv6MTU = 1280
	if err := eng.Reload(&set); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var d *Datapath
	if err := ns.Do(func() (err error) {
		d, err = ServeNIC(ctx, eng, NICConfig{IPv4: "x4", IPv6: "x6", FollowIPv4MTU: true, FollowIPv6MTU: true}, nil)
		return err
	}); err != nil {
		t.Fatalf("ServeNIC with ipv6 MTU configured: %v", err)
	}
	if got := eng.Config().Policy; got.IPv4MTU != 1500 || got.IPv6MTU != 1280 {
		t.Errorf("engine MTUs %d/%d, want the NIC's 1500 and the configured 1280", got.IPv4MTU, got.IPv6MTU)
	}
	cancel()
	d.Wait()
}

// ringQueue opens a NIC queue (an AF_PACKET socket with a receive ring of
// frames frames for 1500-byte packets) on a veth of a new namespace whose
// link MTU is 9000, not attached to an endpoint: the test reads it. send
// sends an IPv6 packet to it from the veth's peer; the veth is x6 in ns.
func ringQueue(t *testing.T, frames int) (ns *netnstest.NS, n *nicPath, conn *nicConn, send func(ip []byte)) {
	t.Helper()
	netnstest.Require(t, "dp-")
	ns = netnstest.New(t, "dp-ring-")
	peer := netnstest.New(t, "dp-ringpeer-")
	n = &nicPath{log: slog.New(slog.DiscardHandler)}
	t.Cleanup(n.close)
	conn, send = ringSocket(t, ns, peer, n, "x6", "p6", frames)
	return ns, n, conn, send
}

// pairedQueue is ringQueue with a second veth, y6 (peer q6), whose socket
// the queue of x6 reads too (nicConn.pair, as ServeNIC pairs the two NICs'
// sockets of one index); send6 sends to x6, sendOther to y6.
func pairedQueue(t *testing.T, frames int) (ns *netnstest.NS, conn *nicConn, send6, sendOther func(ip []byte)) {
	t.Helper()
	ns, n, conn, send6 := ringQueue(t, frames)
	peer := netnstest.New(t, "dp-ringpeer2-")
	other, sendOther := ringSocket(t, ns, peer, n, "y6", "q6", frames)
	if err := conn.pair(other); err != nil {
		t.Fatal(err)
	}
	return ns, conn, send6, sendOther
}

// ringSocket opens a NIC queue on a new veth name in ns (peer peerName in
// peer), as ringQueue describes, adds it to n and returns it and the
// peer's send.
func ringSocket(t *testing.T, ns, peer *netnstest.NS, n *nicPath, name, peerName string, frames int) (conn *nicConn, send func(ip []byte)) {
	t.Helper()
	netnstest.Veth(t, ns, name, peer, peerName)
	// Jumbo frames on the link, but a ring sized for 1500-byte packets:
	// a test can send packets that do not fit a frame.
	ns.Run("ip", "link", "set", name, "mtu", "9000")
	peer.Run("ip", "link", "set", peerName, "mtu", "9000")
	var mac [6]byte
	if err := ns.Do(func() error {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		mac = [6]byte(ifc.HardwareAddr)
		p := &nicPort{name: name, ifindex: ifc.Index, mtu: 1500}
		n.ports = append(n.ports, p)
		fd, ring, err := openPacketSocket(ifc.Index, true, p, frames, -1, nil)
		if err != nil {
			return err
		}
		p.fds, p.rings = []int{fd}, []*nicRing{ring}
		p.files = []*os.File{os.NewFile(uintptr(fd), name)}
		if ring.frames != frames {
			t.Errorf("ring of %d frames, want %d", ring.frames, frames)
		}
		// Room to send GSO super-packets while the NIC holds the
		// earlier ones (sends do not wait: a full buffer loses them).
		if sndbuf, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF); err != nil || sndbuf < socketBuffer {
			t.Errorf("send buffer %d bytes (%v), want %d or more", sndbuf, err, socketBuffer)
		}
		if conn, err = newNICConn(n, p.files[0], 0); err != nil {
			return err
		}
		conn.useRing(ring)
		conn.port = p
		n.ringConns = append(n.ringConns, conn)
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// The peer sends Ethernet frames straight to the veth's link address.
	if err := peer.Do(func() error {
		ifc, err := net.InterfaceByName(peerName)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		t.Cleanup(func() { unix.Close(fd) })
		sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: ifc.Index, Halen: 6}
		copy(sa.Addr[:], mac[:])
		send = func(ip []byte) {
			f := append(append(append(mac[:], ifc.HardwareAddr...), 0x86, 0xdd), ip...)
			if err := unix.Sendto(fd, f, 0, sa); err != nil {
				t.Fatalf("sending %d bytes: %v", len(f), err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return conn, send
}

// TestNetnsNICRingBound: a NIC socket's queue is bounded in packets, not
// bytes: with nobody reading, a burst of small packets fills the ring's
// frames and the kernel drops the rest (a flood cannot build a long
// queue); a packet larger than a frame arrives whole, from the receive
// queue, in its place among the others; reading the ring allocates
// nothing; and a read deadline in the past ends reading (the endpoint's
// stop) even with packets waiting, since the ring needs no system call.
func TestNetnsNICRingBound(t *testing.T) {
	const frames = 16
	_, n, conn, send := ringQueue(t, frames)
	small := func(i int) []byte {
		return ipv6(header.UDPProtocolNumber, cli6, srv6, append(make([]byte, 8), byte(i), byte(i>>8)))
	}
	bigPayload := make([]byte, 4000)
	for i := range bigPayload {
		bigPayload[i] = byte(i * 7)
	}
	big := ipv6(header.UDPProtocolNumber, cli6, srv6, bigPayload)
	const burst = 200
	send(small(0))
	send(big)
	for i := 1; i < burst; i++ {
		send(small(i))
	}
	time.Sleep(100 * time.Millisecond) // the peer's softirq has run

	buf := make([]byte, tun.VnetHdrLen+tun.GSOMaxSize)
	var got [][]byte
	conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	for {
		m, err := conn.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, bytes.Clone(buf[tun.VnetHdrLen:m]))
	}
	// Frame by frame: small 0, the large packet (whole), small 1, 2, ...
	want := [][]byte{small(0), big}
	for i := 1; len(want) < frames; i++ {
		want = append(want, small(i))
	}
	if len(got) != len(want) {
		t.Errorf("read %d packets of a burst of %d into a ring of %d frames, want %d", len(got), burst+1, frames, len(want))
	}
	for i := range min(len(got), len(want)) {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("packet %d: %d bytes, want %d (% x)", i, len(got[i]), len(want[i]), got[i][:min(len(got[i]), 48)])
		}
	}
	var s LinkStats
	conn.stats.AddTo(&s)
	if s != (LinkStats{}) {
		t.Errorf("frames skipped: %+v", s)
	}
	if st, err := unix.GetsockoptTpacketStats(n.ports[0].fds[0], unix.SOL_PACKET, unix.PACKET_STATISTICS); err != nil {
		t.Error(err)
	} else if st.Drops != burst+1-frames {
		t.Errorf("kernel dropped %d packets, want %d", st.Drops, burst+1-frames)
	}

	// Reading the ring allocates nothing.
	for i := range frames {
		send(small(i))
	}
	time.Sleep(50 * time.Millisecond)
	conn.SetReadDeadline(time.Time{})
	if a := testing.AllocsPerRun(frames-2, func() {
		if _, err := conn.Read(buf); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("%v allocations per packet read from the ring", a)
	}
	// A frame still waits; a deadline in the past ends the read anyway.
	conn.SetReadDeadline(time.Unix(1, 0))
	if _, err := conn.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past the deadline with packets in the ring: %v", err)
	}
	conn.SetReadDeadline(time.Time{})
	if _, err := conn.Read(buf); err != nil {
		t.Errorf("the last packet: %v", err)
	}
}

// batchedQueue is one ring queue of a NIC path on a veth, x6 in ns, whose
// peer p6 is in another namespace: conn (with its batch, registered in the
// path's ringConns as ServeNIC does), the peer's link address, and recv,
// which returns the next UDP over IPv6 packet that reached p6 (nil after
// 200 ms without one).
func batchedQueue(t *testing.T, name string) (ns *netnstest.NS, n *nicPath, conn *nicConn, peerMAC [6]byte, recv func() []byte) {
	netnstest.Require(t, "dp-")
	ns = netnstest.New(t, "dp-"+name+"-")
	peer := netnstest.New(t, "dp-"+name+"p-")
	netnstest.Veth(t, ns, "x6", peer, "p6")
	ns.Run("ip", "link", "set", "x6", "mtu", "9000")
	peer.Run("ip", "link", "set", "p6", "mtu", "9000")
	n = &nicPath{log: slog.New(slog.DiscardHandler)}
	t.Cleanup(n.close)
	if err := ns.Do(func() error {
		ifc, err := net.InterfaceByName("x6")
		if err != nil {
			return err
		}
		p := &nicPort{name: "x6", ifindex: ifc.Index, mtu: 1500, mac: [6]byte(ifc.HardwareAddr)}
		n.ports = []*nicPort{p}
		fd, ring, err := openPacketSocket(ifc.Index, true, p, 16, -1, nil)
		if err != nil {
			return err
		}
		p.fds, p.rings = []int{fd}, []*nicRing{ring}
		p.files = []*os.File{os.NewFile(uintptr(fd), "x6")}
		if conn, err = newNICConn(n, p.files[0], 0); err != nil {
			return err
		}
		conn.useRing(ring)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The peer reads the IPv6 packets that reach p6.
	if err := peer.Do(func() error {
		ifc, err := net.InterfaceByName("p6")
		if err != nil {
			return err
		}
		peerMAC = [6]byte(ifc.HardwareAddr)
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IPV6)))
		if err != nil {
			return err
		}
		t.Cleanup(func() { unix.Close(fd) })
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: ifc.Index}); err != nil {
			return err
		}
		tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		recv = func() []byte {
			buf := make([]byte, 9000)
			for {
				m, _, err := unix.Recvfrom(fd, buf, 0)
				if err != nil {
					return nil
				}
				if m > 40 && buf[6] == uint8(header.UDPProtocolNumber) {
					return buf[:m]
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	n.ringConns = []*nicConn{conn}
	return ns, n, conn, peerMAC, recv
}

// TestNetnsNICBatchedWrites: a NIC queue's translated packets wait in its
// batch and leave together, in order: when the queue finds its ring empty
// (before it waits), when the batch is full, or before a packet too large
// to batch, which then follows them.
func TestNetnsNICBatchedWrites(t *testing.T) {
	_, n, conn, peerMAC, recv := batchedQueue(t, "batch")
	n.res = newResolver(&fakeNeighKernel{}, []int{n.ports[0].ifindex}, n.log)
	n.res.dsts[netip.MustParseAddr(serverV6)] = nextHop{ifindex: n.ports[0].ifindex, via: netip.MustParseAddr(serverV6), mac: peerMAC, resolved: true}
	pkt := func(i, size int) []byte {
		payload := make([]byte, size)
		payload[8], payload[9] = byte(i), byte(i>>8)
		return append(make([]byte, tun.VnetHdrLen), ipv6(header.UDPProtocolNumber, cli6, srv6, payload)...)
	}
	write := func(b []byte) {
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(what string, want ...[]byte) {
		t.Helper()
		for i, w := range want {
			got := recv()
			if !bytes.Equal(got, w[tun.VnetHdrLen:]) {
				t.Fatalf("%s: packet %d: got %d bytes, want %d", what, i, len(got), len(w)-tun.VnetHdrLen)
			}
		}
	}

	// Batched until the queue finds its ring empty.
	var small [][]byte
	for i := range 5 {
		small = append(small, pkt(i, 64))
		write(small[i])
	}
	if got := recv(); got != nil {
		t.Fatalf("a batched packet (%d bytes) left before the queue was idle", len(got))
	}
	conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := conn.Read(make([]byte, 65536)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read of an empty ring: %v", err)
	}
	expect("flushed by the empty ring", small...)

	// A full batch leaves at once.
	var full [][]byte
	for i := range batchLen {
		full = append(full, pkt(100+i, 64))
		write(full[i])
	}
	expect("a full batch", full...)

	// A packet too large for a slot follows the batched ones at once.
	a, b, big := pkt(200, 64), pkt(201, 64), pkt(202, 3000)
	write(a)
	write(b)
	write(big)
	expect("a large packet behind a batch", a, b, big)

	var s LinkStats
	conn.stats.AddTo(&s)
	if s != (LinkStats{}) {
		t.Errorf("errors: %+v", s)
	}
}

// TestNetnsNICParkedAfterBatch: a flow whose next hop's neighbour entry is
// lost and found again keeps its order. Its older packets wait in the
// queue's batch (the ring was not empty yet), its newer ones are parked
// while the entry is gone; when the entry comes back the resolver's
// goroutine sends the parked ones, and they must not overtake the batched
// ones. Packets after that go through the batch again, and nothing counts
// as an error.
func TestNetnsNICParkedAfterBatch(t *testing.T) {
	ns, n, conn, peerMAC, recv := batchedQueue(t, "park")
	ifindex, via := n.ports[0].ifindex, netip.MustParseAddr(serverV6)
	n.res = newResolver(&fakeNeighKernel{}, []int{ifindex}, n.log)
	n.res.send = n.sendParked // as ServeNIC does
	n.res.dsts[via] = nextHop{ifindex: ifindex, via: via, mac: peerMAC, resolved: true}
	var sent []uint16
	write := func(i int) {
		t.Helper()
		payload := make([]byte, 64)
		payload[8], payload[9] = byte(i), byte(i>>8)
		b := append(make([]byte, tun.VnetHdrLen), ipv6(header.UDPProtocolNumber, cli6, srv6, payload)...)
		if _, err := conn.Write(b); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		sent = append(sent, uint16(i))
	}
	idle := func() { // the queue finds its ring empty: its batch leaves
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := conn.Read(make([]byte, 65536)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read of an empty ring: %v", err)
		}
		conn.SetReadDeadline(time.Time{})
	}

	for i := range 3 {
		write(i) // batched
	}
	n.res.neighbourUpdate(ifindex, via, [6]byte{}, false) // the entry is lost
	for i := 3; i < 6; i++ {
		write(i) // parked
	}
	n.res.neighbourUpdate(ifindex, via, peerMAC, true) // and found again
	write(6)                                           // resolved: batched
	idle()

	var got []uint16
	for b := recv(); b != nil; b = recv() {
		if len(b) >= 40+10 {
			got = append(got, uint16(b[40+8])|uint16(b[40+9])<<8)
		}
	}
	if !slices.Equal(got, sent) {
		t.Errorf("the peer got the flow's packets in the order %v, sent %v", got, sent)
	}
	var s LinkStats
	conn.stats.AddTo(&s)
	if s != (LinkStats{}) || n.parkedErrors.Load() != 0 {
		t.Errorf("errors: %+v, parked packets not sent: %d", s, n.parkedErrors.Load())
	}

	// The NIC goes down before the entry comes back: the batched packet
	// and the parked one are lost, and each counts as a write error
	// (the queue's Write had returned success for both).
	write(7)
	n.res.neighbourUpdate(ifindex, via, [6]byte{}, false)
	write(8)
	ns.MustRun(t, "ip", "link", "set", "x6", "down")
	n.res.neighbourUpdate(ifindex, via, peerMAC, true)
	ns.MustRun(t, "ip", "link", "set", "x6", "up")
	s = LinkStats{}
	conn.stats.AddTo(&s)
	if s.WriteErrors != 1 || n.parkedErrors.Load() != 1 {
		t.Errorf("lost with the NIC down: %d batched, %d parked; want 1 and 1", s.WriteErrors, n.parkedErrors.Load())
	}
}

// TestNetnsNICLinkFlap: after its NICs went down and up again (as an
// appliance's do at boot: its sockets are opened before the interface
// blocks bring the NICs up), the first packet each way gets through. The
// kernel leaves each socket a pending ENETDOWN that the next send returns
// once instead of sending; the NIC path sends again.
func TestNetnsNICLinkFlap(t *testing.T) {
	tp := newModeTopology(t, modeNIC, 1520, 1)
	tp.xlat.Run("sysctl", "-qw", "net.ipv6.conf.x6.keep_addr_on_down=1")
	for _, c := range [][]string{
		{"ip", "link", "set", "x4", "down"},
		{"ip", "link", "set", "x6", "down"},
		{"ip", "link", "set", "x4", "up"},
		{"ip", "link", "set", "x6", "up"},
		// Down took the routes through them.
		{"ip", "route", "replace", "192.0.2.0/24", "via", "203.0.113.2"},
		{"ip", "route", "replace", "2001:db8:6::/64", "via", "2001:db8:ffff::2"},
	} {
		tp.xlat.MustRun(t, c...)
	}
	before := tp.dp.LinkStats()
	// One echo request, one reply: each is the first packet its socket
	// sends since the flap. -W covers neighbour resolution (the packets
	// are parked meanwhile).
	if out, err := tp.cli.Output("ping", "-c", "1", "-W", "5", serverV4); err != nil {
		t.Errorf("the first ping after the NICs went down and up was lost: %v\n%s", err, out)
	}
	if after := tp.dp.LinkStats(); after.WriteErrors != before.WriteErrors {
		t.Errorf("%d write errors after the flap", after.WriteErrors-before.WriteErrors)
	}
}

// TestNetnsNICIgnoresOtherVLANs: a frame that arrives tagged with a VLAN
// on a NIC the translator serves belongs to that VLAN's interface (or to
// nobody, if the host has none), not to the untagged link: the kernel
// strips the tag into the packet's metadata before packet sockets see it
// (skb_vlan_untag in __netif_receive_skb_core), so the host filter must
// refuse it, or traffic from another VLAN would be translated and sent
// out untagged. A priority-tagged frame (VLAN 0, IEEE 802.1Q) is the
// untagged link's, as the kernel takes it, and so is translated.
func TestNetnsNICIgnoresOtherVLANs(t *testing.T) {
	tp := newModeTopology(t, modeNIC, 1520, 1)
	x4, err := net.ParseMAC(strings.TrimSpace(tp.xlat.Run("cat", "/sys/class/net/x4/address")))
	if err != nil {
		t.Fatal(err)
	}
	c4, err := net.ParseMAC(strings.TrimSpace(tp.cli.Run("cat", "/sys/class/net/c4/address")))
	if err != nil {
		t.Fatal(err)
	}
	udp := ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, payload(100, 1), false), 0, 0)
	// send writes udp to x4 from c4 behind an 802.1Q tag of VLAN vid
	// (none if vid < 0).
	send := func(vid int) {
		f := append(append([]byte{}, x4...), c4...)
		if vid >= 0 {
			f = binary.BigEndian.AppendUint16(f, unix.ETH_P_8021Q)
			f = binary.BigEndian.AppendUint16(f, uint16(vid))
		}
		f = binary.BigEndian.AppendUint16(f, unix.ETH_P_IP)
		f = append(f, udp...)
		if err := tp.cli.Do(func() error {
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			ifi, err := net.InterfaceByName("c4")
			if err != nil {
				return err
			}
			return unix.Sendto(fd, f, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6})
		}); err != nil {
			t.Fatal(err)
		}
	}
	// What the engine counted from the IPv4 side: the server's ICMPv6
	// errors about the UDP packets come back the other way while later
	// cases run.
	from4 := func() uint64 {
		tot := tp.eng.Totals()
		var n uint64
		for _, c := range tot.Packets[xlat.Dir46] {
			n += c
		}
		for _, c := range tot.Drops[xlat.Dir46] {
			n += c
		}
		return n
	}
	for _, tc := range []struct {
		name string
		vid  int
		read bool
	}{
		{"untagged", -1, true},
		{"VLAN 20", 20, false},
		{"VLAN 4094", 4094, false},
		{"priority-tagged", 0, true},
		{"VLAN 20 with priority 5", 5<<13 | 20, false},
	} {
		before := from4()
		send(tc.vid)
		if tc.read {
			waitFor(t, tc.name+" translated", func() bool { return from4() > before })
			continue
		}
		time.Sleep(300 * time.Millisecond)
		if after := from4(); after != before {
			t.Errorf("%s: the translator took the frame", tc.name)
		}
	}
}
