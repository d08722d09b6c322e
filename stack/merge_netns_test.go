package stack

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/map646/map646/internal/testenv"
)

// mergeDgram is one datagram of TestNetnsUDPMerge's bursts.
type mergeDgram struct {
	flow byte // 0 or 1: source port 4000 + flow
	seq  uint16
	size int // UDP payload bytes
	bad  bool
}

// mergeBursts is a round of datagrams as a flood brings them: two flows
// in runs and interleaved, sizes that end a merge (a shorter one), and
// two datagrams with a bad UDP checksum in the middle of a run.
func mergeBursts(round int) []mergeDgram {
	var s []mergeDgram
	seq := [2]uint16{uint16(round * 1000), uint16(round * 1000)}
	add := func(flow byte, size int, n int, bad ...int) {
		for i := range n {
			d := mergeDgram{flow: flow, seq: seq[flow], size: size}
			for _, b := range bad {
				d.bad = d.bad || b == i
			}
			seq[flow]++
			s = append(s, d)
		}
	}
	add(0, 100, 8)
	add(1, 300, 8)
	for range 4 {
		add(0, 100, 1)
		add(1, 300, 1)
	}
	add(0, 100, 6, 3)
	add(0, 40, 1) // shorter: ends A's merge
	add(0, 100, 3)
	add(1, 300, 12, 5)
	add(0, 64, 16)
	add(1, 1000, 6)
	return s
}

// build is d as an IPv4 UDP datagram from the client to the server, DF
// set, with the UDP checksum right unless d.bad.
func (d mergeDgram) build(dport int) []byte {
	p := make([]byte, 28+d.size)
	ip := header.IPv4(p)
	src, dst := tcpip.AddrFrom4([4]byte{192, 0, 2, 2}), tcpip.AddrFrom4([4]byte{198, 51, 100, 10})
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(p)), ID: d.seq, Flags: header.IPv4FlagDontFragment, TTL: 64, Protocol: 17, SrcAddr: src, DstAddr: dst})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(p[20:])
	u.Encode(&header.UDPFields{SrcPort: 4000 + uint16(d.flow), DstPort: uint16(dport), Length: uint16(8 + d.size)})
	pl := p[28:]
	pl[0] = d.flow
	binary.BigEndian.PutUint16(pl[1:], d.seq)
	for i := 3; i < len(pl); i++ {
		pl[i] = byte(i*13) ^ byte(d.seq)
	}
	s := header.PseudoHeaderChecksum(17, src, dst, uint16(8+d.size))
	c := ^checksum.Checksum(u, s)
	if c == 0 {
		c = 0xffff
	}
	if d.bad {
		c ^= 0x1234
	}
	u.SetChecksum(c)
	return p
}

// sendmmsgRaw sends pkts on the connected raw socket fd in one sendmmsg.
func sendmmsgRaw(fd int, pkts [][]byte) error {
	msgs := make([]mmsghdr, len(pkts))
	iovs := make([]unix.Iovec, len(pkts))
	for i, p := range pkts {
		iovs[i].Base = &p[0]
		iovs[i].SetLen(len(p))
		msgs[i].hdr.Iov = &iovs[i]
		msgs[i].hdr.SetIovlen(1)
	}
	for sent := 0; sent < len(msgs); {
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[sent])), uintptr(len(msgs)-sent), 0, 0, 0)
		if errno != 0 {
			return errno
		}
		sent += int(r)
	}
	return nil
}

// TestNetnsUDPMerge: bursts of IPv4 datagrams of two flows (sendmmsg,
// several sizes, two bad checksums in each, the flows in runs and
// interleaved) cross the tun's queues on their io_uring, which write each
// batch's datagrams of one flow as USO super-packets: every datagram with
// a good checksum reaches the IPv6 server once, intact, in order within
// its flow; the ones with a bad checksum are written on their own,
// unchanged, and the server's kernel drops them (Udp6InCsumErrors); the
// counters show merged writes.
func TestNetnsUDPMerge(t *testing.T) {
	tp := newTopology(t, true, 1520)
	if !strings.Contains(tp.dev.Offloads(), "uso6") {
		testenv.SkipOrFailf(t, "the kernel did not grant USO (offloads %s)", tp.dev.Offloads())
	}
	var srv *net.UDPConn
	if err := tp.srv.Do(func() (err error) {
		srv, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.ParseIP(serverV6)})
		if err == nil {
			err = srv.SetReadBuffer(4 << 20)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	port := srv.LocalAddr().(*net.UDPAddr).Port
	csumErrors := func() int {
		var n int
		tp.srv.Do(func() error {
			b, err := os.ReadFile("/proc/thread-self/net/snmp6")
			if err != nil {
				return err
			}
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Fields(l); len(f) == 2 && f[0] == "Udp6InCsumErrors" {
					n, _ = strconv.Atoi(f[1])
				}
			}
			return nil
		})
		return n
	}
	csumBefore := csumErrors()

	var fd int
	if err := tp.cli.Do(func() (err error) {
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
			return err
		}
		return unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{198, 51, 100, 10}})
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)

	// Warm up neighbour entries and routes so that no burst waits on
	// resolution.
	if err := sendmmsgRaw(fd, [][]byte{mergeDgram{flow: 0, seq: 65000, size: 10}.build(port)}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2000)
	srv.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, _, err := srv.ReadFromUDP(buf); err != nil {
		t.Fatalf("warm-up datagram: %v", err)
	}

	const rounds = 4
	want := map[[2]int]mergeDgram{}
	bad := 0
	for r := range rounds {
		var pkts [][]byte
		for _, d := range mergeBursts(r + 1) {
			pkts = append(pkts, d.build(port))
			if d.bad {
				bad++
			} else {
				want[[2]int{int(d.flow), int(d.seq)}] = d
			}
		}
		if err := sendmmsgRaw(fd, pkts); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // the queue goes idle: the next round starts on the raw loop again
	}

	last := [2]int{-1, -1}
	got, total := 0, len(want)
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	for got < total {
		n, from, err := srv.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("%d of %d datagrams: %v", got, total, err)
		}
		if n < 3 {
			t.Fatalf("a %d-byte datagram", n)
		}
		flow, seq := int(buf[0]), int(binary.BigEndian.Uint16(buf[1:]))
		if seq == 65000 {
			continue // the warm-up's, sent again? never: fail below
		}
		d, ok := want[[2]int{flow, seq}]
		if !ok {
			t.Fatalf("datagram flow %d seq %d: not expected (a bad checksum's, or twice)", flow, seq)
		}
		if from.Port != 4000+flow {
			t.Fatalf("flow %d from port %d", flow, from.Port)
		}
		if seq <= last[flow] {
			t.Fatalf("flow %d: seq %d after %d", flow, seq, last[flow])
		}
		last[flow] = seq
		wantPkt := d.build(port)[28:]
		if n != len(wantPkt) || string(buf[:n]) != string(wantPkt) {
			t.Fatalf("flow %d seq %d: %d bytes, want %d, or changed", flow, seq, n, len(wantPkt))
		}
		delete(want, [2]int{flow, seq})
		got++
	}
	// Nothing more: the bad ones were dropped.
	srv.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := srv.ReadFromUDP(buf); err == nil {
		t.Fatalf("an extra %d-byte datagram (flow %d seq %d)", n, buf[0], binary.BigEndian.Uint16(buf[1:]))
	}
	if d := csumErrors() - csumBefore; d != bad {
		t.Errorf("server: %d UDP checksum errors, want the %d datagrams sent with a bad checksum", d, bad)
	}
	s := tp.dp.LinkStats()
	if s.MergedWrites == 0 || s.MergedDatagrams < 2*s.MergedWrites || s.WriteErrors != 0 {
		t.Fatalf("link stats: %d datagrams in %d merged writes, %d write errors", s.MergedDatagrams, s.MergedWrites, s.WriteErrors)
	}
	t.Log(fmt.Sprintf("%d datagrams (%d with a bad checksum): %d in %d super-packets", got+bad, bad, s.MergedDatagrams, s.MergedWrites))
}
