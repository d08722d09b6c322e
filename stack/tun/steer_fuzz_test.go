package tun

import (
	"encoding/binary"
	"net/netip"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// steerModel is what the steering program computes for packet, written
// out in Go from its comments (steeringProgram): the verifier proves the
// program cannot fault, and this model pins down what it returns for
// every packet, hostile ones included. A load past the packet's end ends
// the program with 0, as an eBPF LD_ABS or LD_IND does.
func steerModel(bits int, p []byte) uint16 {
	emb, _ := embeddedOffsets(bits)
	ok := true
	ld8 := func(off int) uint32 {
		if off < 0 || off+1 > len(p) {
			ok = false
			return 0
		}
		return uint32(p[off])
	}
	ld16 := func(off int) uint32 {
		if off < 0 || off+2 > len(p) {
			ok = false
			return 0
		}
		return uint32(binary.BigEndian.Uint16(p[off:]))
	}
	ld32 := func(off int) uint32 {
		if off < 0 || off+4 > len(p) {
			ok = false
			return 0
		}
		return binary.BigEndian.Uint32(p[off:])
	}
	b0 := ld8(0)
	if !ok {
		return 0
	}
	var host, port uint32
	switch b0 >> 4 {
	case 4:
		hl := int(b0&0xf) * 4
		host = ld32(12)
		frag := ld16(6)&0x3fff != 0
		if !ok {
			return 0
		}
		if !frag {
			switch ld8(9) {
			case unix.IPPROTO_ICMP:
				port = ld16(hl + 4)
			case unix.IPPROTO_TCP, unix.IPPROTO_UDP:
				port = ld16(hl)
			}
		}
	case 6:
		for i, shift := range []int{24, 16, 8, 0} {
			host |= ld8(24+int(emb[i])) << shift
		}
		switch ld8(6) {
		case unix.IPPROTO_ICMPV6:
			port = ld16(44)
		case unix.IPPROTO_TCP, unix.IPPROTO_UDP:
			port = ld16(42)
		}
	default:
		return 0
	}
	if !ok {
		return 0
	}
	r := port * 0x85ebca6b
	r ^= host
	r *= 0x9e3779b1
	return uint16(r >> 16)
}

// steerRaw is steer for any packet: the frame's EtherType is one the
// test run does not check the packet against (it refuses an IPv4 or IPv6
// EtherType in front of fewer bytes than that header), which the program
// never looks at: it reads the packet from the network header on.
func steerRaw(t testing.TB, fd int, packet []byte) uint16 {
	t.Helper()
	frame := make([]byte, 14+len(packet))
	binary.BigEndian.PutUint16(frame[12:], 0x88b5) // IEEE 802 local experimental
	copy(frame[14:], packet)
	attr := bpfTestRun{progFd: uint32(fd), dataSizeIn: uint32(len(frame)), dataIn: uint64(uintptr(unsafe.Pointer(&frame[0]))), repeat: 1}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(frame)
	if errno != 0 {
		t.Fatalf("BPF_PROG_TEST_RUN of %d bytes: %v", len(packet), errno)
	}
	return uint16(attr.retval)
}

// steerBits are the RFC 6052 prefix lengths the steering program is made
// for.
var steerBits = []int{32, 40, 48, 56, 64, 96}

// steerSeeds are hostile packets: truncated at every header, not IP,
// IPv4 with a header length past the end or below 20 bytes, fragments,
// IPv6 behind extension headers, ICMP with the identifier cut off.
func steerSeeds() [][]byte {
	host4 := netip.MustParseAddr("192.0.2.2")
	server4 := netip.MustParseAddr("198.51.100.10")
	server6 := netip.MustParseAddr("2001:db8:6::10")
	host6 := netip.MustParseAddr("2001:db8:64::c000:202")
	udp4 := ipv4Packet(host4, server4, unix.IPPROTO_UDP, 0x4000, l4(unix.IPPROTO_UDP, 40000, 53, 0, 0))
	icmp4 := ipv4Packet(host4, server4, unix.IPPROTO_ICMP, 0, l4(unix.IPPROTO_ICMP, 0, 0, 0x1234, 8))
	udp6 := ipv6Packet(server6, host6, unix.IPPROTO_UDP, l4(unix.IPPROTO_UDP, 53, 40000, 0, 0))
	icmp6 := ipv6Packet(server6, host6, unix.IPPROTO_ICMPV6, l4(unix.IPPROTO_ICMPV6, 0, 0, 77, 128))
	seeds := [][]byte{
		{0x45}, {0x60}, {0x00}, {0xff}, {0x20, 0, 0, 0},
		ipv4Packet(host4, server4, unix.IPPROTO_UDP, 0x2000, l4(unix.IPPROTO_UDP, 40000, 53, 0, 0)), // first fragment
		ipv4Packet(host4, server4, unix.IPPROTO_UDP, 0x0010, nil),                                   // later fragment
		ipv6Packet(server6, host6, unix.IPPROTO_FRAGMENT, make([]byte, 16)),
		ipv6Packet(server6, host6, 0, append([]byte{unix.IPPROTO_UDP, 0, 1, 4, 0, 0, 0, 0}, l4(unix.IPPROTO_UDP, 53, 40000, 0, 0)...)), // hop-by-hop
		ipv6Packet(server6, host6, unix.IPPROTO_TCP, nil),                                                                              // TCP, no header
	}
	for _, p := range [][]byte{udp4, icmp4, udp6, icmp6} {
		for n := range len(p) + 1 {
			seeds = append(seeds, p[:n])
		}
	}
	for _, ihl := range []byte{0, 1, 4, 15} {
		p := append([]byte(nil), udp4...)
		p[0] = 0x40 | ihl
		seeds = append(seeds, p)
	}
	return seeds
}

// TestSteeringHostilePackets: on every hostile seed and for every prefix
// length, the loaded program returns what steerModel says (the test run
// never fails: the verifier has proven the program safe). The tun takes
// the result modulo its number of queues (tun_ebpf_select_queue), so no
// value is out of range.
func TestSteeringHostilePackets(t *testing.T) {
	for _, bits := range steerBits {
		fd := requireBPF(t, bits)
		for _, p := range steerSeeds() {
			if got, want := steerRaw(t, fd, p), steerModel(bits, p); got != want {
				t.Errorf("/%d: % x: program %#04x, model %#04x", bits, p, got, want)
			}
		}
	}
}

func FuzzSteering(f *testing.F) {
	for _, p := range steerSeeds() {
		f.Add(uint8(5), p)
	}
	fds := map[int]int{}
	for _, bits := range steerBits {
		fds[bits] = requireBPF(f, bits)
	}
	f.Fuzz(func(t *testing.T, b uint8, p []byte) {
		bits := steerBits[int(b)%len(steerBits)]
		// The test run takes at most about a page; the program never
		// reads past byte 64.
		p = p[:min(len(p), 1500)]
		if got, want := steerRaw(t, fds[bits], p), steerModel(bits, p); got != want {
			t.Fatalf("/%d: % x: program %#04x, model %#04x", bits, p, got, want)
		}
	})
}
