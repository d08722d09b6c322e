package tun

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/internal/netnstest"
	"github.com/map646/map646/internal/testenv"
	"github.com/map646/map646/mapping"
)

// l4 is a transport header (the part the steering program looks at).
func l4(proto uint8, port, peerPort, icmpID uint16, icmpType uint8) []byte {
	b := make([]byte, 8)
	switch proto {
	case unix.IPPROTO_ICMP, unix.IPPROTO_ICMPV6:
		b[0] = icmpType
		binary.BigEndian.PutUint16(b[4:], icmpID)
	default:
		binary.BigEndian.PutUint16(b[0:], port)
		binary.BigEndian.PutUint16(b[2:], peerPort)
	}
	return b
}

func ipv4Packet(src, dst netip.Addr, proto uint8, frag uint16, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[6:], frag)
	b[8], b[9] = 64, proto
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	copy(b[20:], payload)
	return b
}

func ipv6Packet(src, dst netip.Addr, next uint8, payload []byte) []byte {
	b := make([]byte, 40+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6], b[7] = next, 64
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	copy(b[40:], payload)
	return b
}

// requireBPF loads the steering program for bits or stops t: loading
// needs root (CAP_BPF).
func requireBPF(t testing.TB, bits int) int {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "loading a BPF program needs root")
	}
	insns, err := steeringProgram(bits)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := loadProgram(insns)
	if err != nil {
		t.Fatalf("the verifier refused the steering program for /%d: %v", bits, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// bpfTestRun is the BPF_PROG_TEST_RUN part of union bpf_attr.
type bpfTestRun struct {
	progFd      uint32
	retval      uint32
	dataSizeIn  uint32
	dataSizeOut uint32
	dataIn      uint64
	dataOut     uint64
	repeat      uint32
	duration    uint32
}

// steer runs program fd on packet as the kernel runs it on a packet for the
// tun (the packet at the network header) and returns its result.
func steer(t *testing.T, fd int, packet []byte) uint16 {
	t.Helper()
	// The test run takes an Ethernet frame and pulls the header off.
	frame := make([]byte, 14+len(packet))
	et := uint16(unix.ETH_P_IP)
	if packet[0]>>4 == 6 {
		et = unix.ETH_P_IPV6
	}
	binary.BigEndian.PutUint16(frame[12:], et)
	copy(frame[14:], packet)
	attr := bpfTestRun{progFd: uint32(fd), dataSizeIn: uint32(len(frame)), dataIn: uint64(uintptr(unsafe.Pointer(&frame[0]))), repeat: 1}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(frame)
	if errno != 0 {
		t.Fatalf("BPF_PROG_TEST_RUN: %v", errno)
	}
	return uint16(attr.retval) // tun_ebpf_select_queue keeps 16 bits
}

// TestSteeringPairsRequestAndReply: for every RFC 6052 prefix length, a
// packet from an IPv4 host and the translated reply to it (IPv6, to the
// host's address embedded in the prefix) get the same steering value, so
// they use the same queue whatever the number of queues; so do a packet
// from the IPv6 side to an IPv4 host and the IPv4 reply. Different ports
// of one host spread over the values.
func TestSteeringPairsRequestAndReply(t *testing.T) {
	host4 := netip.MustParseAddr("192.0.2.2")
	server4 := netip.MustParseAddr("198.51.100.10")
	server6 := netip.MustParseAddr("2001:db8:6::10")
	for _, p := range []string{"2001:db8:64::/96", "2001:db8:64::/64", "2001:db8:6400::/56", "2001:db8:64::/48", "2001:db8:6400::/40", "2001:db8::/32"} {
		prefix := netip.MustParsePrefix(p)
		fd := requireBPF(t, prefix.Bits())
		mp, err := mapping.NewPrefix(prefix)
		if err != nil {
			t.Fatal(err)
		}
		v6, _ := mp.Embed(host4.As4())
		host6 := netip.AddrFrom16(v6)
		for _, tc := range []struct {
			name              string
			fromHost, toHost  []byte
			proto4, proto6    uint8
			samePortOtherHost bool
		}{
			{name: "ICMP echo", fromHost: ipv4Packet(host4, server4, unix.IPPROTO_ICMP, 0, l4(unix.IPPROTO_ICMP, 0, 0, 0x1234, 8)),
				toHost: ipv6Packet(server6, host6, unix.IPPROTO_ICMPV6, l4(unix.IPPROTO_ICMPV6, 0, 0, 0x1234, 129))},
			{name: "UDP", fromHost: ipv4Packet(host4, server4, unix.IPPROTO_UDP, 0x4000, l4(unix.IPPROTO_UDP, 40000, 53, 0, 0)),
				toHost: ipv6Packet(server6, host6, unix.IPPROTO_UDP, l4(unix.IPPROTO_UDP, 53, 40000, 0, 0))},
			{name: "TCP", fromHost: ipv4Packet(host4, server4, unix.IPPROTO_TCP, 0x4000, l4(unix.IPPROTO_TCP, 50123, 443, 0, 0)),
				toHost: ipv6Packet(server6, host6, unix.IPPROTO_TCP, l4(unix.IPPROTO_TCP, 443, 50123, 0, 0))},
			// Started on the IPv6 side: the IPv6 packet first, the IPv4 reply.
			{name: "ICMPv6 echo from the IPv6 side", toHost: ipv6Packet(server6, host6, unix.IPPROTO_ICMPV6, l4(unix.IPPROTO_ICMPV6, 0, 0, 77, 128)),
				fromHost: ipv4Packet(host4, server4, unix.IPPROTO_ICMP, 0, l4(unix.IPPROTO_ICMP, 0, 0, 77, 0))},
			// Fragments carry no port: the host alone decides.
			{name: "fragments", fromHost: ipv4Packet(host4, server4, unix.IPPROTO_UDP, 0x2000, l4(unix.IPPROTO_UDP, 40000, 53, 0, 0)),
				toHost: ipv6Packet(server6, host6, unix.IPPROTO_FRAGMENT, make([]byte, 16))},
		} {
			a, b := steer(t, fd, tc.fromHost), steer(t, fd, tc.toHost)
			if a != b {
				t.Errorf("%s, %s: from the IPv4 host %#04x, to it %#04x: different queues", p, tc.name, a, b)
			}
		}
		seen := map[uint16]bool{}
		for port := range uint16(64) {
			seen[steer(t, fd, ipv4Packet(host4, server4, unix.IPPROTO_UDP, 0, l4(unix.IPPROTO_UDP, 40000+port, 53, 0, 0)))%2] = true
			seen[steer(t, fd, ipv4Packet(host4, server4, unix.IPPROTO_UDP, 0, l4(unix.IPPROTO_UDP, 40000+port, 53, 0, 0)))%4+2] = true
		}
		if len(seen) != 2+4 {
			t.Errorf("%s: 64 UDP ports of one host used %d of 2+4 queues (of two and of four)", p, len(seen))
		}
		// A packet cut short (a header longer than the packet): queue 0.
		short := ipv4Packet(host4, server4, unix.IPPROTO_UDP, 0, l4(unix.IPPROTO_UDP, 40000, 53, 0, 0))
		short[0] = 0x4f
		if got := steer(t, fd, short); got != 0 {
			t.Errorf("%s: a packet shorter than its header steered to %#x, want 0", p, got)
		}
	}
}

// TestSteeringRejectsOtherPrefixLengths: only RFC 6052's prefix lengths
// have a place for the IPv4 address.
func TestSteeringRejectsOtherPrefixLengths(t *testing.T) {
	for _, bits := range []int{0, 31, 33, 80, 128} {
		if _, err := steeringProgram(bits); err == nil {
			t.Errorf("/%d: no error", bits)
		}
	}
	if err := setSteering(-1, netip.MustParsePrefix("192.0.2.0/24")); err == nil {
		t.Error("an IPv4 prefix: no error")
	}
}

// TestNetnsSteeringOneQueuePerFlow: through a real two-queue tun, packets
// the kernel routes into it from an IPv4 host and to that host's address
// under the prefix arrive on the same queue, for every one of several
// ports (with the kernel's own choice, each pair had even odds).
func TestNetnsSteeringOneQueuePerFlow(t *testing.T) {
	netnstest.RequireTun(t, "st-")
	ns := netnstest.New(t, "st-")
	prefix := netip.MustParsePrefix("2001:db8:64::/96")
	var dev *Device
	if err := ns.Do(func() (err error) {
		dev, err = Open(Config{Name: "st0", Queues: 2, SteerPrefix: prefix})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if err := dev.SteeringErr(); err != nil {
		t.Fatalf("steering: %v", err)
	}
	// Packets from 192.0.2.2 (an address of the namespace) to 198.51.100.10,
	// and from 2001:db8:6::10 to 2001:db8:64::c000:202, both routed into
	// the tun.
	ns.MustRun(t, "ip", "addr", "add", "192.0.2.2/32", "dev", "lo")
	ns.MustRun(t, "ip", "addr", "add", "2001:db8:6::10/128", "dev", "lo")
	ns.MustRun(t, "ip", "route", "add", "198.51.100.0/24", "dev", "st0")
	ns.MustRun(t, "ip", "route", "add", prefix.String(), "dev", "st0")
	buf := make([]byte, 65536)
	// arrival returns the queue a UDP datagram from src:sport to dst:dport
	// reached.
	arrival := func(src, dst string, sport, dport int) int {
		t.Helper()
		if err := ns.Do(func() error {
			c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(src), uint16(sport))),
				net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(dst), uint16(dport))))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("x"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			for i, q := range dev.Queues() {
				// Only the datagram sent: the kernel may send its own
				// (IPv6 router solicitations, MLD reports) into the tun.
				if n, err := q.Read(buf); err == nil && isUDPTo(buf[VnetHdrLen:n], dport) {
					return i
				}
			}
		}
		t.Fatalf("no packet from %s:%d in the tun", src, sport)
		return -1
	}
	queues := map[int]bool{}
	for port := 40000; port < 40008; port++ {
		a := arrival("192.0.2.2", "198.51.100.10", port, 53)
		b := arrival("2001:db8:6::10", "2001:db8:64::c000:202", 53, port)
		if a != b {
			t.Errorf("port %d: from the IPv4 host on queue %d, to it on queue %d", port, a, b)
		}
		queues[a] = true
	}
	t.Logf("8 flows used queues %v", queues)
}

// isUDPTo reports whether p is a UDP datagram (IPv4 without options, or
// IPv6 without extension headers) to port.
func isUDPTo(p []byte, port int) bool {
	switch {
	case len(p) >= 28 && p[0] == 0x45 && p[9] == unix.IPPROTO_UDP:
		return int(binary.BigEndian.Uint16(p[22:])) == port
	case len(p) >= 48 && p[0]>>4 == 6 && p[6] == unix.IPPROTO_UDP:
		return int(binary.BigEndian.Uint16(p[42:])) == port
	}
	return false
}

// TestSteeringLoadsUnderSignals: loads made while the runtime signals the
// process's threads (garbage collections back to back, whose preemption
// requests the verifier sees as a pending signal and answers with EAGAIN)
// all succeed. Without the retry one load in a few hundred failed here
// (make test, 17:50 UTC).
func TestSteeringLoadsUnderSignals(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "loading a BPF program needs root")
	}
	insns, err := steeringProgram(96)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	for range 2 {
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
					runtime.GC()
				}
			}
		}()
	}
	for i := range 400 {
		fd, err := loadProgram(insns)
		if err != nil {
			t.Fatalf("load %d: %v", i, err)
		}
		unix.Close(fd)
	}
}
