package stack

import (
	"encoding/binary"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	xipv4 "golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/map646/map646/internal/testenv"
	"github.com/map646/map646/stack/xlat"
)

// TestNetnsUDPGROForwarding: with GRO and UDP GRO forwarding on the veth a
// UDP flood arrives on (as the appliance sets up its NICs), the kernel
// merges datagrams that one NAPI poll finds together into a UDP
// super-packet (SKB_GSO_UDP_L4) and hands it to the tun as USO. Bursts of
// small datagrams of mixed sizes must still reach the IPv6 server one by
// one, each intact and in its own boundaries (the kernel checks the UDP
// checksums the translator wrote on the way in).
//
// The second case sends datagrams without DF that are too big for the IPv6
// side once translated (1400 bytes of payload: 1448-byte IPv6 packets over
// lowest-ipv6-mtu's 1280, and over the IPv6 links' MTU of 1280, which the
// engine is not told): merged, the engine cuts the super-packet into its
// datagrams and fragments each (RFC 7915 section 4), as it would each
// alone; it used to pass the super-packet on whole, and the kernel then
// dropped every datagram at the 1280-byte link.
func TestNetnsUDPGROForwarding(t *testing.T) {
	t.Run("small datagrams", func(t *testing.T) {
		udpGROForwarding(t, func(i int) int {
			if i%16 == 15 {
				return 9 + i%40
			}
			return 64
		}, false, 1520)
	})
	t.Run("DF=0 datagrams too big for IPv6", func(t *testing.T) {
		udpGROForwarding(t, func(i int) int {
			if i%16 == 15 {
				return 200 + i%40
			}
			return 1400
		}, true, 1280)
	})
}

// udpGROForwarding sends bursts of datagrams of size(i) bytes (most of one
// size, which GRO merges; the shorter ones end a merge, since only the last
// segment of a super-packet may be short), with DF cleared if noDF, and
// checks that each arrives once and intact and that super-packets crossed;
// the IPv6 links have an MTU of mtu6.
func udpGROForwarding(t *testing.T, size func(i int) int, noDF bool, mtu6 int) {
	tp := newTopology(t, true, mtu6)
	if !strings.Contains(tp.dev.Offloads(), "uso4") {
		testenv.SkipOrFailf(t, "the kernel did not grant USO (offloads %s)", tp.dev.Offloads())
	}
	if out, err := tp.xlat.Output("ethtool", "-K", "x4", "gro", "on", "rx-udp-gro-forwarding", "on"); err != nil {
		testenv.SkipOrFailf(t, "UDP GRO forwarding on x4: %v: %s", err, out)
	}
	// Threaded NAPI polls x4 from a kernel thread, which finds most of
	// a burst waiting when it runs; the softirq run at the end of each
	// send finds one datagram.
	if out, err := tp.xlat.Output("sh", "-c", "echo 1 > /sys/class/net/x4/threaded"); err != nil {
		testenv.SkipOrFailf(t, "threaded NAPI on x4: %v: %s", err, out)
	}
	// A poll that found work stays scheduled for 200 µs (up to 100 polls
	// in a row) instead of waiting for the next packet's wake-up: the
	// datagrams of a burst that arrive meanwhile wait in the veth's ring
	// and the next poll merges them. Without it, a NAPI thread that runs
	// at each wake-up (with both CPUs busy, as beside make test's QEMU
	// boots) found one datagram per poll: 5 rounds of 2560 crossed as
	// 12800 packets, nothing merged.
	if out, err := tp.xlat.Output("sh", "-c", "echo 200000 > /sys/class/net/x4/gro_flush_timeout && echo 100 > /sys/class/net/x4/napi_defer_hard_irqs"); err != nil {
		testenv.SkipOrFailf(t, "deferred NAPI completion on x4: %v: %s", err, out)
	}
	var srv *net.UDPConn
	if err := tp.srv.Do(func() (err error) {
		srv, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.ParseIP(serverV6)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.SetReadBuffer(4 << 20); err != nil {
		t.Fatal(err)
	}
	var c net.Conn
	if err := tp.cli.Do(func() (err error) {
		c, err = net.Dial("udp4", net.JoinHostPort(serverV4, strconv.Itoa(srv.LocalAddr().(*net.UDPAddr).Port)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if noDF {
		rc, err := c.(*net.UDPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)
		}); err != nil || serr != nil {
			t.Fatalf("clearing DF: %v %v", err, serr)
		}
	}
	pc := xipv4.NewPacketConn(c.(*net.UDPConn))

	// Datagram i carries its number and a pattern derived from it.
	fill := func(b []byte, i int) {
		binary.BigEndian.PutUint32(b, uint32(i))
		for j := 4; j < len(b); j++ {
			b[j] = byte(i*7 + j)
		}
	}
	// Rounds of 40 bursts, until one round saw GRO merge (at most
	// maxRounds): how much a NAPI poll finds waiting depends on when its
	// thread runs, and on a loaded machine a round may find one datagram
	// per poll throughout.
	const bursts, burst, maxRounds = 40, 64, 5
	buf := make([]byte, 65536)
	msgs := make([]xipv4.Message, burst)
	for r := range maxRounds {
		before := tp.eng.Totals().Packets[xlat.Dir46][xlat.ProtoUDP]
		for b := r * bursts; b < (r+1)*bursts; b++ {
			for k := range msgs {
				i := b*burst + k
				d := make([]byte, size(i))
				fill(d, i)
				msgs[k] = xipv4.Message{Buffers: [][]byte{d}}
			}
			for sent := 0; sent < burst; {
				n, err := pc.WriteBatch(msgs[sent:], 0)
				if err != nil {
					t.Fatalf("burst %d: sendmmsg: %v", b, err)
				}
				sent += n
			}
			// Every datagram of the burst arrives, once and intact; the
			// next burst goes only then, so no queue on the way overflows.
			seen := make(map[int]bool, burst)
			srv.SetReadDeadline(time.Now().Add(5 * time.Second))
			for len(seen) < burst {
				n, err := srv.Read(buf)
				if err != nil {
					t.Fatalf("burst %d: %d of %d datagrams arrived: %v", b, len(seen), burst, err)
				}
				if n < 4 {
					t.Fatalf("burst %d: a %d-byte datagram", b, n)
				}
				i := int(binary.BigEndian.Uint32(buf))
				want := make([]byte, size(i))
				fill(want, i)
				if i/burst != b || seen[i] || n != len(want) || string(buf[:n]) != string(want) {
					t.Fatalf("burst %d: datagram %d (%d bytes, want %d) is not what was sent or came twice", b, i, n, len(want))
				}
				seen[i] = true
			}
		}
		// Fewer translated packets than datagrams: super-packets crossed.
		// The queues publish their counts when they find their tun empty.
		var got uint64
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			n := tp.eng.Totals().Packets[xlat.Dir46][xlat.ProtoUDP] - before
			if n > 0 && n == got {
				break
			}
			got = n
		}
		t.Logf("round %d: %d datagrams crossed as %d translated UDP packets", r, bursts*burst, got)
		if got == 0 {
			t.Fatalf("round %d: no translated UDP packet counted", r)
		}
		if got < bursts*burst {
			return
		}
	}
	t.Errorf("%d rounds of %d datagrams each crossed as as many translated UDP packets: GRO merged none, so no super-packet was checked", maxRounds, bursts*burst)
}
