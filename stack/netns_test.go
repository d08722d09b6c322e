package stack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/internal/netnstest"
	"github.com/map646/map646/internal/testenv"
	"github.com/map646/map646/mapping"
	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// The conformance suite's address plan.
const (
	clientV4     = "192.0.2.2"
	serverV4     = "198.51.100.10"
	serverV6     = "2001:db8:6::10"
	prefixV6     = "2001:db8:64::/96"
	clientInV6   = "2001:db8:64::c000:202" // prefix ‖ 192.0.2.2
	icmpPool6791 = "203.0.113.64/26"
)

// testEngine is the translator configuration of the address plan.
func testEngine(t testing.TB) *xlat.Engine {
	t.Helper()
	p, err := mapping.NewPrefix(netip.MustParsePrefix(prefixV6))
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := mapping.NewTable([]mapping.Entry{
		{IPv4: netip.MustParsePrefix(serverV4 + "/32"), IPv6: netip.MustParsePrefix(serverV6 + "/128")},
		{IPv4: netip.MustParsePrefix("198.51.100.11/32"), IPv6: netip.MustParsePrefix("2001:db8:6::11/128")},
	})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := mapping.NewSnapshot(p, tbl)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := xlat.NewEngine(&xlat.Config{Map: snap, Policy: xlat.Policy{
		LowestIPv6MTU:  1280,
		ICMPSourcePool: []netip.Prefix{netip.MustParsePrefix(icmpPool6791)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

// topology is an IPv4 client namespace, the translator namespace with the
// tun and the in-process data path, and an IPv6-only server namespace:
//
//	cli: c4 203.0.113.2/28, 192.0.2.2 on lo
//	xlat: x4 203.0.113.1/28, x6 2001:db8:ffff::1/64, tun dp-tun
//	srv: s6 2001:db8:ffff::2/64, 2001:db8:6::10 on lo
type topology struct {
	cli, xlat, srv *netnstest.NS
	eng            *xlat.Engine
	dev            *tun.Device
	dp             *Datapath
}

// newTopology builds the topology and serves its tun as the daemon does
// (ServeTun: tun.Endpoint with a Handler attached).
func newTopology(t testing.TB, offload bool, mtu6 int) *topology {
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
		// advmss: the server offers the MSS of a 1500-byte IPv4 path
		// whatever its own link, so that the client's segments must go
		// through path MTU discovery when the IPv6 link is smaller.
		{"ip", "route", "add", prefixV6, "via", "2001:db8:ffff::1", "src", serverV6, "advmss", "1460"},
	} {
		tp.srv.Run(c...)
	}
	for _, c := range [][]string{
		{"sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
			"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"},
		{"ip", "link", "set", "x6", "mtu", strconv.Itoa(mtu6)},
		{"ip", "addr", "add", "203.0.113.1/28", "dev", "x4"},
		{"ip", "addr", "add", "2001:db8:ffff::1/64", "dev", "x6", "nodad"},
		{"ip", "route", "add", "192.0.2.0/24", "via", "203.0.113.2"},
		{"ip", "route", "add", "2001:db8:6::/64", "via", "2001:db8:ffff::2"},
	} {
		tp.xlat.Run(c...)
	}

	tp.eng = testEngine(t)
	err := tp.xlat.Do(func() (err error) {
		tp.dev, err = tun.Open(tun.Config{Name: "dp-tun", Queues: 2, MTU: 1520, Offload: offload})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.dev.Close() })
	tp.xlat.Run("sysctl", "-qw", "net.ipv4.conf.dp-tun.rp_filter=0")
	tp.xlat.Run("ip", "route", "add", "198.51.100.0/24", "dev", "dp-tun")
	tp.xlat.Run("ip", "route", "add", prefixV6, "dev", "dp-tun")
	t.Logf("tun %s, offloads %s", tp.dev.Name(), tp.dev.Offloads())

	ctx, cancel := context.WithCancel(context.Background())
	tp.dp, err = ServeTun(ctx, tp.eng, tp.dev, nil)
	if err != nil {
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

func TestNetnsPing(t *testing.T) {
	tp := newTopology(t, true, 1520)
	tp.cli.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", serverV4)
	tp.srv.Run("ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", clientInV6)
	if !tp.dp.Healthy() {
		t.Errorf("unhealthy: %v", tp.dp.Check())
	}
}

// TestNetnsLinkChatter: the kernel's own MLD reports and duplicate address
// detection on the tun (from :: and fe80::/10 to ff02::/16) are counted as
// link chatter, not as engine drops.
func TestNetnsLinkChatter(t *testing.T) {
	tp := newTopology(t, true, 1520)
	before := tp.dp.LinkStats().LinkChatter
	// A new address makes the kernel join its solicited-node group (MLD)
	// and probe it (DAD: a neighbour solicitation from ::) on the tun.
	tp.xlat.Run("ip", "addr", "add", "2001:db8:ffff:1::1/64", "dev", "dp-tun")
	waitFor(t, "the kernel's MLD and DAD on the tun", func() bool { return tp.dp.LinkStats().LinkChatter >= before+2 })
	tot := tp.eng.Totals()
	for _, r := range []xlat.Reason{xlat.ReasonSrcIllegal, xlat.ReasonDstIllegal, xlat.ReasonICMPType} {
		if n := tot.Drops[xlat.Dir64][r]; n != 0 {
			t.Errorf("6to4 %s: %d: the host's link chatter counted as dropped traffic", r, n)
		}
	}
}

func TestNetnsTCP(t *testing.T) {
	for _, offload := range []bool{true, false} {
		t.Run(fmt.Sprintf("offload=%v", offload), func(t *testing.T) {
			tp := newTopology(t, offload, 1520)
			transferTCP(t, tp, 100<<20, true)
			transferTCP(t, tp, 100<<20, false)
			if s := tp.dp.LinkStats(); s.WriteErrors != 0 || s.InvalidVnetHdr != 0 {
				t.Errorf("link errors: %+v", s)
			}
		})
	}
}

// transferTCP sends size pseudo-random bytes from the IPv4 client to the
// IPv6 server (upload) or back, and compares SHA-256 digests of what was
// sent and what arrived.
func transferTCP(t *testing.T, tp *topology, size int64, upload bool) {
	t.Helper()
	var ln net.Listener
	if err := tp.srv.Do(func() (err error) {
		ln, err = net.Listen("tcp6", "["+serverV6+"]:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	srvDone := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvDone <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		if upload {
			sum, n, err := drain(c)
			srvDone <- result{sum, n, err}
		} else {
			sum, err := sendRandom(c, size, 2)
			srvDone <- result{sum, size, err}
		}
	}()

	var c net.Conn
	if err := tp.cli.Do(func() (err error) {
		c, err = net.DialTimeout("tcp4", net.JoinHostPort(serverV4, strconv.Itoa(port)), 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	start := time.Now()
	var sent, got [32]byte
	var n int64
	var err error
	if upload {
		sent, err = sendRandom(c, size, 1)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		if err != nil {
			t.Fatalf("upload: %v", err)
		}
		r := <-srvDone
		if r.err != nil {
			t.Fatalf("server: %v", r.err)
		}
		got, n = r.sum, r.n
	} else {
		got, n, err = drain(c)
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		r := <-srvDone
		if r.err != nil {
			t.Fatalf("server: %v", r.err)
		}
		sent = r.sum
	}
	elapsed := time.Since(start)
	if n != size || got != sent {
		t.Fatalf("upload=%v: %d of %d bytes arrived, digest %x, sent %x", upload, n, size, got[:8], sent[:8])
	}
	t.Logf("upload=%v: %d MB verified in %v (%.2f Gbit/s)", upload, size>>20, elapsed.Round(time.Millisecond),
		float64(size*8)/elapsed.Seconds()/1e9)
}

// sendRandom writes size bytes of a seeded pseudo-random stream to w and
// returns their SHA-256.
func sendRandom(w io.Writer, size int64, seed uint64) ([32]byte, error) {
	rng := rand.NewChaCha8([32]byte{byte(seed)})
	h := sha256.New()
	buf := make([]byte, 256<<10)
	for size > 0 {
		b := buf[:min(int64(len(buf)), size)]
		rng.Read(b)
		h.Write(b)
		if _, err := w.Write(b); err != nil {
			return [32]byte{}, err
		}
		size -= int64(len(b))
	}
	return [32]byte(h.Sum(nil)), nil
}

func drain(r io.Reader) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 256<<10))
	return [32]byte(h.Sum(nil)), n, err
}

func TestNetnsUDP(t *testing.T) {
	udpEcho(t, newTopology(t, true, 1520))
}

// startUDPEcho runs a UDP echo server on serverV6 in ns until the test
// ends, and returns its port.
func startUDPEcho(t *testing.T, ns *netnstest.NS) int {
	t.Helper()
	var srv *net.UDPConn
	if err := ns.Do(func() (err error) {
		srv, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.ParseIP(serverV6)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := srv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			srv.WriteToUDP(buf[:n], from)
		}
	}()
	return srv.LocalAddr().(*net.UDPAddr).Port
}

// dialServerUDP connects a UDP socket in ns to the server's mapped IPv4
// address and port.
func dialServerUDP(t testing.TB, ns *netnstest.NS, port int) net.Conn {
	t.Helper()
	var c net.Conn
	if err := ns.Do(func() (err error) {
		c, err = net.Dial("udp4", net.JoinHostPort(serverV4, strconv.Itoa(port)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return c
}

// udpEcho exchanges datagrams of several sizes between the IPv4 client and
// an echo server on the IPv6 side.
func udpEcho(t *testing.T, tp *topology) {
	t.Helper()
	port := startUDPEcho(t, tp.srv)

	c := dialServerUDP(t, tp.cli, port)
	defer c.Close()
	// 4000 bytes do not fit the links: both sides fragment (IPv4 fragments
	// become IPv6 fragments and back).
	for _, size := range []int{1, 1000, 1472, 4000} {
		msg := make([]byte, size)
		for i := range msg {
			msg[i] = byte(i*31 + size)
		}
		got, err := udpExchange(c, msg)
		if err != nil {
			t.Fatalf("%d-byte datagram: %v", size, err)
		}
		if !bytes.Equal(got, msg) {
			t.Errorf("%d-byte datagram came back as %d bytes", size, len(got))
		}
	}
}

// udpExchange sends msg and waits for an answer of the same length (an
// echo of an earlier, retried message is skipped), retrying a lost one.
func udpExchange(c net.Conn, msg []byte) ([]byte, error) {
	buf := make([]byte, 65536)
	var err error
	for range 3 {
		if _, err = c.Write(msg); err != nil {
			return nil, err
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		for {
			var n int
			n, err = c.Read(buf)
			if err != nil {
				break
			}
			if n == len(msg) {
				return buf[:n], nil
			}
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		return nil, err
	}
	return nil, err
}

// TestNetnsPortUnreachable: the server's ICMPv6 Port Unreachable, translated
// to ICMPv4, reaches the client's connected UDP socket as ECONNREFUSED.
func TestNetnsPortUnreachable(t *testing.T) {
	tp := newTopology(t, true, 1520)
	var c net.Conn
	if err := tp.cli.Do(func() (err error) {
		c, err = net.Dial("udp4", serverV4+":9") // nothing listens on discard
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err := udpExchange(c, []byte("anyone there?"))
	if !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("got %v, want ECONNREFUSED", err)
	}
}

// TestNetnsPathMTU: with a 1280-byte IPv6 link behind the translator, the
// kernel's Packet Too Big comes back through the translator as
// Fragmentation Needed (1280 - 20), the client's TCP lowers its segments,
// the transfer completes, and no IPv6 fragment is made for DF traffic.
func TestNetnsPathMTU(t *testing.T) {
	for _, offload := range []bool{true, false} {
		t.Run(fmt.Sprintf("offload=%v", offload), func(t *testing.T) {
			tp := newTopology(t, offload, 1280)
			transferTCP(t, tp, 8<<20, true)
			out := tp.cli.Run("ip", "route", "get", serverV4, "from", clientV4)
			if !strings.Contains(out, "mtu 1260") {
				t.Errorf("client did not learn the path MTU: %s", out)
			}
			// A DF datagram that does not fit: the first send provokes
			// the error, a later one is refused locally.
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
			var mtu int
			waitFor(t, "the client's socket to learn MTU 1260", func() bool {
				c.Write(make([]byte, 1400))
				rc.Control(func(fd uintptr) { mtu, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU) })
				return mtu == 1260
			})
			for _, ns := range []*netnstest.NS{tp.xlat, tp.srv} {
				for _, counter := range []string{"Ip6FragCreates", "Ip6ReasmReqds"} {
					if n := snmp6(t, ns, counter); n != 0 {
						t.Errorf("%s: %s = %d, want no IPv6 fragments", ns.Name, counter, n)
					}
				}
			}
		})
	}
}

func snmp6(t *testing.T, ns *netnstest.NS, name string) int {
	t.Helper()
	for _, line := range strings.Split(ns.Run("cat", "/proc/net/snmp6"), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == name {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatalf("%s: no %s in /proc/net/snmp6", ns.Name, name)
	return 0
}

// BenchmarkNetnsTCP measures one TCP stream through the real data path
// (client namespace -> tun -> engine -> tun -> server namespace, or back):
// b.N MiB, no hashing, so that the translator and the kernel are what is
// measured. It needs root like the tests; the netns harness in bench/
// compares it with native forwarding and TAYGA.
func BenchmarkNetnsTCP(b *testing.B) {
	for _, offload := range []bool{true, false} {
		for _, upload := range []bool{true, false} {
			b.Run(fmt.Sprintf("offload=%v/upload=%v", offload, upload), func(b *testing.B) {
				benchTCP(b, newTopology(b, offload, 1520), upload)
			})
		}
	}
}

// benchTCP measures one TCP stream from the client to the server (upload)
// or back across tp's translator, in bytes per second.
func benchTCP(b *testing.B, tp *topology, upload bool) {
	var ln net.Listener
	if err := tp.srv.Do(func() (err error) {
		ln, err = net.Listen("tcp6", "["+serverV6+"]:0")
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var c net.Conn
	if err := tp.cli.Do(func() (err error) {
		c, err = net.Dial("tcp4", net.JoinHostPort(serverV4, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)))
		return err
	}); err != nil {
		b.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	src, dst := c, s
	if !upload {
		src, dst = s, c
	}
	done := make(chan int64)
	go func() {
		n, _ := io.CopyBuffer(io.Discard, dst, make([]byte, 256<<10))
		done <- n
	}()
	chunk := make([]byte, 1<<20)
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	for range b.N {
		if _, err := src.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	src.(*net.TCPConn).CloseWrite()
	if n := <-done; n != int64(b.N)*int64(len(chunk)) {
		b.Fatalf("%d of %d bytes arrived", n, b.N*len(chunk))
	}
	b.StopTimer()
	c.Close()
	s.Close()
}

// TestNetnsTunDeleted: when the interface is deleted under the data path,
// every worker stops with an error and the data path reports unhealthy,
// so that the daemon withdraws its routes.
func TestNetnsTunDeleted(t *testing.T) {
	netnstest.RequireTun(t, "dp-")
	ns := netnstest.New(t, "dp-del-")
	var dev *tun.Device
	if err := ns.Do(func() (err error) {
		dev, err = tun.Open(tun.Config{Name: "dp-tun", Queues: 2, Offload: true})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	d, err := ServeTun(context.Background(), testEngine(t), dev, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Healthy() {
		t.Fatalf("unhealthy at start: %v", d.Check())
	}
	ns.Run("ip", "link", "del", "dp-tun")
	done := make(chan error)
	go func() { done <- d.Wait() }()
	select {
	case err := <-done:
		if !errors.Is(err, unix.EBADFD) {
			t.Errorf("Wait = %v, want EBADFD", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("workers still running after the interface was deleted")
	}
	if d.Healthy() {
		t.Error("healthy without an interface")
	}
}

// TestNetnsUDPSegmentation: a UDP_SEGMENT (USO) send of ten datagrams
// crosses the translator as one super-packet when the tun has USO, and
// arrives as ten intact datagrams at the IPv6 server.
func TestNetnsUDPSegmentation(t *testing.T) {
	tp := newTopology(t, true, 1520)
	if !strings.Contains(tp.dev.Offloads(), "uso4") {
		testenv.SkipOrFailf(t, "the kernel did not grant USO (offloads %s)", tp.dev.Offloads())
	}
	usoCrosses(t, tp, xlat.Dir46)
}

// TestNetnsLinkEndpoint runs traffic through a real tun served the general
// way, tun.Endpoint as a gVisor LinkEndpoint with Handler attached: pings
// both ways, TCP both ways (with offloads: TSO super-packets with partial
// checksums), UDP echo with fragments.
func TestNetnsLinkEndpoint(t *testing.T) {
	for _, offload := range []bool{true, false} {
		t.Run(fmt.Sprintf("offload=%v", offload), func(t *testing.T) {
			tp := newTopology(t, offload, 1520)
			tp.cli.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", serverV4)
			tp.srv.Run("ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", clientInV6)
			const size = 20 << 20
			before := tp.dp.LinkStats().Reads
			transferTCP(t, tp, size, true)
			transferTCP(t, tp, size, false)
			reads := tp.dp.LinkStats().Reads - before
			udpEcho(t, tp)
			if !tp.dp.Healthy() {
				t.Errorf("unhealthy: %v", tp.dp.Check())
			}
			s := tp.dp.LinkStats()
			if s.WriteErrors != 0 || s.InvalidVnetHdr != 0 || s.ReadErrors != 0 {
				t.Errorf("link errors: %+v", s)
			}
			// 2 x 20 MiB is over 28000 full-size segments each way with
			// their ACKs; with TSO the data crosses in super-packets.
			t.Logf("%d reads for the two transfers (offloads %s)", reads, tp.dev.Offloads())
			if offload && strings.Contains(tp.dev.Offloads(), "tso4") && reads > 2*size/1448 {
				t.Errorf("%d reads for 2 x %d bytes: no super-packets", reads, size)
			}
		})
	}
}

// TestNetnsQueueSpread: the kernel spreads flows over the tun's queues by
// their hash, and each queue's dispatch loop translates its own: with 32
// UDP flows over two queues, both carry traffic, every datagram arrives,
// and what the server sends back is translated too.
func TestNetnsQueueSpread(t *testing.T) {
	queueSpread(t, newTopology(t, true, 1520))
}

// queueSpread sends 32 UDP flows from the client to the server and back
// through tp's translator, one datagram each way per flow, and checks that
// every one arrives and that more than one of the translator's queues
// carried them.
func queueSpread(t *testing.T, tp *topology) {
	t.Helper()
	var srv *net.UDPConn
	if err := tp.srv.Do(func() (err error) {
		srv, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.ParseIP(serverV6)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	port := strconv.Itoa(srv.LocalAddr().(*net.UDPAddr).Port)
	const flows = 32
	var conns []net.Conn
	for range flows {
		var c net.Conn
		if err := tp.cli.Do(func() (err error) {
			c, err = net.Dial("udp4", net.JoinHostPort(serverV4, port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	buf := make([]byte, 2048)
	for i, c := range conns {
		msg := []byte(fmt.Sprintf("flow %d", i))
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		srv.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := srv.ReadFromUDP(buf)
		if err != nil || string(buf[:n]) != string(msg) {
			t.Fatalf("flow %d: got %q, %v", i, buf[:n], err)
		}
		srv.WriteToUDP(msg, from)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(buf); err != nil || string(buf[:n]) != string(msg) {
			t.Fatalf("flow %d: reply %q, %v", i, buf[:n], err)
		}
	}
	var busy int
	for i, q := range tp.dp.handler.queues {
		r := q.stats.Reads.Load()
		t.Logf("queue %d: %d packets", i, r)
		if r > 0 {
			busy++
		}
	}
	if busy < 2 {
		t.Errorf("%d flows each way all went through one queue of %d", flows, len(tp.dp.handler.queues))
	}
}

// BenchmarkNetnsPingRTT measures a packet's latency through the
// translator with the kernel on both sides: ping's average round trip from
// the IPv4 client to the IPv6 server (the request and the reply are each
// translated once), 200 pings 10 ms apart per iteration.
func BenchmarkNetnsPingRTT(b *testing.B) {
	tp := newTopology(b, true, 1520)
	tp.cli.Run("ping", "-c", "3", "-i", "0.05", "-W", "2", serverV4) // warm neighbour caches
	var sum float64
	for range b.N {
		out := tp.cli.Run("ping", "-q", "-c", "200", "-i", "0.01", "-W", "2", serverV4)
		// rtt min/avg/max/mdev = 0.050/0.071/0.112/0.011 ms
		const label = "rtt min/avg/max/mdev = "
		i := strings.Index(out, label)
		if i < 0 {
			b.Fatalf("no rtt in %q", out)
		}
		f := strings.Split(strings.Fields(out[i+len(label):])[0], "/")
		avg, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			b.Fatal(err)
		}
		sum += avg
	}
	b.ReportMetric(sum/float64(b.N)*1000, "µs/rtt")
}
