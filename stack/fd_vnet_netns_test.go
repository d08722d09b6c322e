package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/internal/netnstest"
	"github.com/map646/map646/stack/xlat"
)

// vnet reports whether the mode serves a descriptor with a virtio_net_hdr.
func (m linkMode) vnet() bool { return m == modeFDVnet || m == modeTapVnet }

// Addresses of the kernel's side of the tap in modeTapVnet: the
// translator's gateways.
const (
	tapKernelV4 = "203.0.113.33"
	tapKernelV6 = "2001:db8:fffe::1"
)

// openVnetTun opens a tun (or a tap) named name with IFF_VNET_HDR and a
// 12-byte header, as QEMU and Firecracker open a VM's tap, in the calling
// thread's namespace.
func openVnetTun(name string, tap bool) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if tap {
		flags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("TUNSETIFF: %w", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, maxVnetHdr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("TUNSETVNETHDRSZ: %w", err)
	}
	return fd, nil
}

// serveVnetFD opens the tun or tap of modeFDVnet or modeTapVnet in the
// translator's namespace, routes the public IPv4 prefix and the /96 into
// it, and serves it as the daemon does: ProbeFD for its framing,
// SetFDOffloads, then ServeFDQueues or ServeTap.
func serveVnetFD(t testing.TB, tp *topology, ctx context.Context, tap bool) (*Datapath, error) {
	t.Helper()
	var fd, offloads int
	var info FDInfo
	if err := tp.xlat.Do(func() (err error) {
		if fd, err = openVnetTun("dp-vnet", tap); err != nil {
			return err
		}
		if info, err = ProbeFD(fd); err != nil {
			return err
		}
		offloads, err = SetFDOffloads(fd)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if !info.Tun || info.Tap != tap || info.VnetHdr != maxVnetHdr || info.Interface != "dp-vnet" {
		t.Fatalf("ProbeFD: %+v", info)
	}
	t.Logf("offloads %#x", offloads)
	tp.xlat.Run("ip", "link", "set", "dp-vnet", "mtu", "1520", "up")
	if !tap {
		tp.xlat.Run("ip", "route", "add", "198.51.100.0/24", "dev", "dp-vnet")
		tp.xlat.Run("ip", "route", "add", prefixV6, "dev", "dp-vnet")
		return ServeFDQueues(ctx, tp.eng, []int{fd}, 1520, info.VnetHdr, nil)
	}
	// On-link routes: the kernel resolves the mapped IPv4 addresses and
	// the prefix's, which the translator answers for; the translator
	// sends to the kernel's own addresses on the tap.
	for _, c := range [][]string{
		{"sysctl", "-qw", "net.ipv6.conf.dp-vnet.accept_dad=0"},
		{"ip", "addr", "add", tapKernelV4 + "/28", "dev", "dp-vnet"},
		{"ip", "addr", "add", tapKernelV6 + "/64", "dev", "dp-vnet", "nodad"},
		{"ip", "route", "add", "198.51.100.0/24", "dev", "dp-vnet"},
		{"ip", "route", "add", prefixV6, "dev", "dp-vnet"},
	} {
		tp.xlat.Run(c...)
	}
	return ServeTap(ctx, tp.eng, TapConfig{FD: fd, MTU: 1520, VnetHdr: info.VnetHdr, MAC: tapMAC,
		IPv4Gateway: netip.MustParseAddr(tapKernelV4), IPv6Gateway: netip.MustParseAddr(tapKernelV6)}, nil)
}

// TestNetnsFDVnet: a tun and a tap handed over with IFF_VNET_HDR (12
// bytes, as VM managers set it) carry the tun tests' traffic with the
// senders' TSO and every veth's GRO on: ping both ways, 2 x 20 MiB of TCP
// (SHA-256 checked) in far fewer reads than segments (super-packets
// crossed whole, partial checksums completed by the kernel behind the
// fd), a UDP_SEGMENT send as one super-packet each way, a translated Port
// Unreachable, the TTL hops, and path MTU discovery behind a 1280-byte
// IPv6 link.
func TestNetnsFDVnet(t *testing.T) {
	for _, mode := range []linkMode{modeFDVnet, modeTapVnet} {
		t.Run(mode.String(), func(t *testing.T) {
			tp := newModeTopology(t, mode, 1520, 1)
			for _, c := range [][]string{
				{"ping", "-c", "3", "-i", "0.2", "-W", "2", serverV4},
			} {
				tp.cli.MustRun(t, c...)
			}
			tp.srv.MustRun(t, "ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", clientInV6)
			const size = 20 << 20
			before := tp.dp.LinkStats().Reads
			transferTCP(t, tp, size, true)
			transferTCP(t, tp, size, false)
			reads := tp.dp.LinkStats().Reads - before
			t.Logf("%d reads for 2 x %d bytes", reads, size)
			if reads > size/1448 {
				t.Errorf("%d reads for 2 x %d bytes: no super-packets", reads, size)
			}
			usoCrosses(t, tp, xlat.Dir46)
			usoCrosses(t, tp, xlat.Dir64)
			udpEcho(t, tp)
			var c net.Conn
			if err := tp.cli.Do(func() (err error) {
				c, err = net.Dial("udp4", serverV4+":9")
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if _, err := udpExchange(c, []byte("anyone there?")); !errors.Is(err, unix.ECONNREFUSED) {
				t.Errorf("UDP to a closed port: got %v, want ECONNREFUSED (a translated Port Unreachable)", err)
			}
			c.Close()
			// Two hops of the kernel around a tun; with a tap the
			// translator is a router of its own (DecrementTTL) too.
			hops := map[linkMode]int{modeFDVnet: 2, modeTapVnet: 3}[mode]
			out, _ := tp.cli.Output("ping", "-c", "1", "-t", strconv.Itoa(hops), "-W", "2", serverV4)
			if !strings.Contains(out, "Time to live exceeded") {
				t.Errorf("TTL %d did not expire on the way:\n%s", hops, out)
			}
			tp.cli.MustRun(t, "ping", "-c", "1", "-t", strconv.Itoa(hops+1), "-W", "2", serverV4)
			s := tp.dp.LinkStats()
			if s.WriteErrors != 0 || s.InvalidVnetHdr != 0 || s.ShortVnetHdr != 0 || s.ReadErrors != 0 || s.NoNextHop != 0 {
				t.Errorf("link errors: %+v", s)
			}
			if !tp.dp.Healthy() {
				t.Errorf("unhealthy: %v", tp.dp.Check())
			}
		})
	}
}

// TestNetnsFDVnetPathMTU: behind a 1280-byte IPv6 link, TCP super-packets
// still cross (the kernel behind the fd segments them to a gso_size that
// fits) and a DF datagram too large for the link teaches the client MTU
// 1260 through a translated Packet Too Big.
func TestNetnsFDVnetPathMTU(t *testing.T) {
	for _, mode := range []linkMode{modeFDVnet, modeTapVnet} {
		t.Run(mode.String(), func(t *testing.T) {
			tp := newModeTopology(t, mode, 1280, 1)
			transferTCP(t, tp, 4<<20, true)
			transferTCP(t, tp, 4<<20, false)
			learnsMTU(t, tp, 1260)
		})
	}
}

// TestNetnsFDVnetDeleted: when the tun behind a descriptor with a
// virtio_net_hdr is deleted, the data path stops and Wait returns the
// error, which names the fd.
func TestNetnsFDVnetDeleted(t *testing.T) {
	netnstest.RequireTun(t, "dp-")
	ns := netnstest.New(t, "dp-del-")
	var fd int
	if err := ns.Do(func() (err error) {
		fd, err = openVnetTun("dp-gone", false)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	ns.Run("ip", "link", "set", "dp-gone", "up")
	d, err := ServeFDQueues(context.Background(), testEngine(t), []int{fd}, 1500, maxVnetHdr, nil)
	if err != nil {
		t.Fatal(err)
	}
	ns.Run("ip", "link", "del", "dp-gone")
	done := make(chan error, 1)
	go func() { done <- d.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("fd %d", fd)) {
			t.Errorf("Wait: %v, want an error naming fd %d", err, fd)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after the tun was deleted")
	}
	if d.Healthy() {
		t.Error("healthy after the tun was deleted")
	}
}

// BenchmarkNetnsFDTCP: one TCP stream each way through an inherited fd:
// a bare tun without a virtio_net_hdr (every segment alone; the client's
// and server's offloads off, as TestNetnsModes has them), and a tun and a
// tap with a 12-byte header (super-packets whole). Same-run ratios only:
// docs/benchmarks.md has the harness's numbers.
func BenchmarkNetnsFDTCP(b *testing.B) {
	for _, mode := range []linkMode{modeFD, modeFDVnet, modeTapVnet} {
		for _, upload := range []bool{true, false} {
			b.Run(fmt.Sprintf("%s/upload=%v", mode, upload), func(b *testing.B) {
				benchTCP(b, newModeTopology(b, mode, 1520, 1), upload)
			})
		}
	}
}
