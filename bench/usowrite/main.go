// Command usowrite measures what a translator would save by writing a batch's
// UDP/IPv6 datagrams of one flow to its tun as one USO super-packet
// (virtio_net_hdr GSO_UDP_L4) instead of one write per datagram.
//
// The writer attaches to a tun (IFF_TUN|IFF_NO_PI|IFF_VNET_HDR, map646's
// virtio_net_hdr size and offloads) in the router namespace and writes
// translated-looking 64-byte-payload datagrams (NEEDS_CSUM, as map646 writes
// a flood's packets) that the kernel forwards through a veth to the server
// namespace's UDP socket; -n datagrams per group, either as n writes
// (-mode single) or one super-packet of n (-mode uso). It reports its
// thread's CPU time per datagram: every write's forwarding up to the
// server's socket runs in that thread (tun_get_user, the softirq at its
// bh enable). The server (-role server) counts what it receives and checks
// the sequence numbers (every datagram once, in order, its payload intact).
//
// -mode null writes what the tun refuses at once (shorter than its
// virtio_net_hdr): the system call's own cost, which a translator batching
// its writes on an io_uring already pays once per batch.
//
// It is a measuring instrument, not part of the product: run.sh sets up the
// namespaces and runs both roles; abwrap.sh and abstats.py are the A/B of two
// map646 binaries in the netns harness (docs/datapath.md, "The write-side
// USO merge, measured again").
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	vnetHdrLen = 10
	payloadLen = 64
	srcPort    = 5000
	dstPort    = 9000
)

func main() {
	role := flag.String("role", "writer", "writer or server")
	tunName := flag.String("tun", "uw0", "tun to attach to (writer)")
	mode := flag.String("mode", "single", "single: a write per datagram; uso: one USO write per group; null: a write per datagram that the tun refuses at once (the system call's own cost)")
	n := flag.Int("n", 8, "datagrams per group")
	total := flag.Int("total", 400000, "datagrams to write")
	src := flag.String("src", "2001:db8:2::1", "source address")
	dst := flag.String("dst", "2001:db8:1::2", "destination address")
	rcvbuf := flag.Int("rcvbuf", 64<<20, "server: SO_RCVBUFFORCE bytes (0: the namespace's default, which a flood overflows)")
	flag.Parse()
	var err error
	switch *role {
	case "writer":
		err = writer(*tunName, *mode, *n, *total, netip.MustParseAddr(*src), netip.MustParseAddr(*dst))
	case "server":
		err = server(*rcvbuf)
	default:
		err = fmt.Errorf("unknown role %q", *role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "usowrite:", err)
		os.Exit(1)
	}
}

func threadCPU() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

// pseudoSum is the one's complement sum of the IPv6 pseudo-header for a UDP
// length of l, not complemented: the partial checksum a NEEDS_CSUM packet
// carries.
func pseudoSum(src, dst netip.Addr, l int) uint16 {
	var s uint32
	a, b := src.As16(), dst.As16()
	for i := 0; i < 16; i += 2 {
		s += uint32(binary.BigEndian.Uint16(a[i:])) + uint32(binary.BigEndian.Uint16(b[i:]))
	}
	s += uint32(l) + unix.IPPROTO_UDP
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// build writes a virtio_net_hdr, IPv6 and UDP header and k payloads of
// payloadLen bytes (each starting with its sequence number) into b.
func build(b []byte, src, dst netip.Addr, seq uint64, k int) int {
	udpLen := 8 + k*payloadLen
	h := b[:vnetHdrLen]
	clear(h)
	h[0] = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
	if k > 1 {
		h[1] = 5 // VIRTIO_NET_HDR_GSO_UDP_L4
		binary.LittleEndian.PutUint16(h[2:], 40+8)
		binary.LittleEndian.PutUint16(h[4:], payloadLen)
	}
	binary.LittleEndian.PutUint16(h[6:], 40)
	binary.LittleEndian.PutUint16(h[8:], 6)
	ip := b[vnetHdrLen:]
	ip[0], ip[1], ip[2], ip[3] = 0x60, 0, 0, 0
	binary.BigEndian.PutUint16(ip[4:], uint16(udpLen))
	ip[6], ip[7] = unix.IPPROTO_UDP, 64
	s, d := src.As16(), dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	u := ip[40:]
	binary.BigEndian.PutUint16(u[0:], srcPort)
	binary.BigEndian.PutUint16(u[2:], dstPort)
	binary.BigEndian.PutUint16(u[4:], uint16(udpLen))
	binary.BigEndian.PutUint16(u[6:], pseudoSum(src, dst, udpLen))
	for i := 0; i < k; i++ {
		p := u[8+i*payloadLen : 8+(i+1)*payloadLen]
		binary.BigEndian.PutUint64(p, seq+uint64(i))
		for j := 8; j < payloadLen; j++ {
			p[j] = byte(seq + uint64(i) + uint64(j))
		}
	}
	return vnetHdrLen + 40 + udpLen
}

// openTun attaches to tun name as map646 opens its queues.
func openTun(name string) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_MULTI_QUEUE)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("TUNSETIFF: %w", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnetHdrLen); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, 0x01|0x02|0x04|0x20|0x40); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("TUNSETOFFLOAD: %w", err)
	}
	return fd, nil
}

// flood writes total datagrams (rounded down to groups of n) to the tun
// fd as mode says, numbered from 0, and counts the writes and the failed
// ones.
func flood(fd int, mode string, n, total int, src, dst netip.Addr) (datagrams uint64, writes, errs int) {
	buf := make([]byte, 65536)
	pkts := make([][]byte, n)
	for i := range pkts {
		pkts[i] = make([]byte, 256)
	}
	var seq uint64
	for g := 0; g < total/n; g++ {
		switch mode {
		case "null":
			// The system call alone: a write the tun refuses at once
			// (shorter than its virtio_net_hdr), one per datagram.
			for i := 0; i < n; i++ {
				if _, err := unix.Write(fd, pkts[i][:1]); err != nil {
					errs++
				}
				writes++
			}
		case "uso":
			l := build(buf, src, dst, seq, n)
			if _, err := unix.Write(fd, buf[:l]); err != nil {
				errs++
			}
			writes++
		default:
			for i := 0; i < n; i++ {
				l := build(pkts[i], src, dst, seq+uint64(i), 1)
				if _, err := unix.Write(fd, pkts[i][:l]); err != nil {
					errs++
				}
				writes++
			}
		}
		seq += uint64(n)
	}
	return seq, writes, errs
}

func writer(name, mode string, n, total int, src, dst netip.Addr) error {
	if mode != "single" && mode != "uso" && mode != "null" {
		return fmt.Errorf("unknown mode %q", mode)
	}
	runtime.LockOSThread()
	fd, err := openTun(name)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	t0, c0 := time.Now(), threadCPU()
	seq, writes, errs := flood(fd, mode, n, total, src, dst)
	cpu, wall := threadCPU()-c0, time.Since(t0)
	fmt.Printf("mode=%s n=%d datagrams=%d writes=%d errors=%d cpu_ns_per_dgram=%.0f wall_ns_per_dgram=%.0f\n",
		mode, n, seq, writes, errs, float64(cpu)/float64(seq), float64(wall)/float64(seq))
	return nil
}

// openServer is the server's socket on dstPort, with a receive buffer of
// rcvbuf bytes (0: the default) and reads that time out after 200 ms.
func openServer(rcvbuf int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if rcvbuf > 0 {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet6{Port: dstPort}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000})
	return fd, nil
}

// received is what the server counted: datagrams, those not as build made
// them (size or payload), and sequence numbers that did not follow the
// previous one (a loss or a reordering); next follows the last one.
type received struct{ got, bad, gaps, next uint64 }

// receive reads datagrams from fd until done reports true (checked
// between reads and after every read timeout).
func receive(fd int, done func(received) bool) received {
	var r received
	buf := make([]byte, 2048)
	for !done(r) {
		k, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue
		}
		r.got++
		if k != payloadLen {
			r.bad++
			continue
		}
		s := binary.BigEndian.Uint64(buf)
		for j := 8; j < payloadLen; j++ {
			if buf[j] != byte(s+uint64(j)) {
				r.bad++
				break
			}
		}
		if s != r.next {
			r.gaps++
		}
		r.next = s + 1
	}
	return r
}

func server(rcvbuf int) error {
	runtime.LockOSThread()
	fd, err := openServer(rcvbuf)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	fmt.Println("ready")
	c0 := threadCPU()
	r := receive(fd, func(received) bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	})
	cpu := threadCPU() - c0
	per := 0.0
	if r.got > 0 {
		per = float64(cpu) / float64(r.got)
	}
	fmt.Printf("received=%d bad=%d gaps=%d next=%d cpu_ns_per_dgram=%.0f\n", r.got, r.bad, r.gaps, r.next, per)
	return nil
}
