package stack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// TestNICConnRead: a nicConn turns what a SOCK_RAW AF_PACKET socket with
// PACKET_VNET_HDR reads (virtio_net_hdr, Ethernet header, IP packet) into
// a tun's framing (virtio_net_hdr, IP packet, offsets from the IP header),
// and skips and counts what it cannot deliver instead of failing the read.
// A datagram socket pair stands in for the AF_PACKET socket.
func TestNICConnRead(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	peer := os.NewFile(uintptr(fds[1]), "peer")
	defer peer.Close()
	file := os.NewFile(uintptr(fds[0]), "packet socket")
	defer file.Close()
	c, err := newNICConn(&nicPath{}, file, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.closeWake()
	idle := 0
	c.idle = func() { idle++ }

	frame := func(vnet xlat.Offload, ethType uint16, ip []byte) []byte {
		b := make([]byte, tun.VnetHdrLen+ethHdrLen, tun.VnetHdrLen+ethHdrLen+len(ip))
		tun.EncodeVnetHdr(b, &vnet)
		copy(b[tun.VnetHdrLen:], []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2})
		binary.BigEndian.PutUint16(b[tun.VnetHdrLen+12:], ethType)
		return append(b, ip...)
	}
	ip4 := ipv4(17, cli4, srv4, make([]byte, 8+100), 0, 0)
	ip6 := ipv6(6, srv6, cli6, make([]byte, 20+1000))
	tso := xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv6, HdrLen: 14 + 40 + 20, GSOSize: 1000, CsumStart: 14 + 40, CsumOffset: 16}
	cases := []struct {
		name string
		in   []byte
		want []byte       // the IP packet read; nil: skipped
		off  xlat.Offload // its offload metadata
	}{
		{"ipv4 complete", frame(xlat.Offload{Flags: xlat.OffloadDataValid}, unix.ETH_P_IP, ip4), ip4, xlat.Offload{Flags: xlat.OffloadDataValid}},
		{"not IP", frame(xlat.Offload{}, unix.ETH_P_ARP, ip4), nil, xlat.Offload{}},
		{"short", make([]byte, tun.VnetHdrLen+ethHdrLen-1), nil, xlat.Offload{}},
		{"csum_start in the Ethernet header", frame(xlat.Offload{Flags: xlat.OffloadNeedsCsum, CsumStart: 10, CsumOffset: 6}, unix.ETH_P_IP, ip4), nil, xlat.Offload{}},
		{"too large", frame(xlat.Offload{}, unix.ETH_P_IPV6, make([]byte, 70000)), nil, xlat.Offload{}},
		{"ipv6 TSO", frame(tso, unix.ETH_P_IPV6, ip6), ip6, xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv6, HdrLen: 60, GSOSize: 1000, CsumStart: 40, CsumOffset: 16}},
	}
	for _, tc := range cases {
		if _, err := peer.Write(tc.in); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
	}
	buf := make([]byte, tun.VnetHdrLen+tun.GSOMaxSize)
	for _, tc := range cases {
		if tc.want == nil {
			continue
		}
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var off xlat.Offload
		if err := tun.DecodeVnetHdr(buf, &off); err != nil {
			t.Fatal(err)
		}
		if got := buf[tun.VnetHdrLen:n]; !bytes.Equal(got, tc.want) || off != tc.off {
			t.Errorf("%s: read %d bytes, offload %+v; want %d bytes, %+v", tc.name, len(got), off, len(tc.want), tc.off)
		}
	}
	var s LinkStats
	c.stats.AddTo(&s)
	if s != (LinkStats{NotIP: 1, ShortVnetHdr: 1, InvalidVnetHdr: 1, ReadErrors: 1}) {
		t.Errorf("skipped frames counted %+v", s)
	}
	if idle != 0 {
		t.Errorf("idle %d times with packets waiting", idle)
	}
	// Nothing left: the Handler is told the queue is idle, and a read
	// deadline ends the wait.
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read of an empty socket past its deadline: %v", err)
	}
	if idle == 0 {
		t.Error("the Handler was not told the queue is idle")
	}
	file.Close()
	if _, err := c.Read(buf); !errors.Is(err, os.ErrClosed) {
		t.Errorf("read of a closed socket: %v", err)
	}
}

// TestNICConnWrongSide: with two NICs, a packet of the other family than
// its NIC's side is not delivered (RFC 7915 takes IPv6 from the IPv6 side
// and IPv4 from the IPv4 side), and is counted in WrongSide unless it is
// the host's own (to one of its addresses or IPv6 link-local), which the
// kernel takes from its copy; a NIC that carries both families delivers
// both. Review H3-1: IPv6 from a server's address over the IPv4 link.
func TestNICConnWrongSide(t *testing.T) {
	addr6 := func(s string) tcpip.Address { return tcpip.AddrFrom16(netip.MustParseAddr(s).As16()) }
	addr4 := func(s string) tcpip.Address { return tcpip.AddrFrom4(netip.MustParseAddr(s).As4()) }
	spoof6 := ipv6(17, srv6, cli6, make([]byte, 8+10))                                   // a server's source to the prefix
	ll6 := ipv6(58, addr6("fe80::2"), addr6("fe80::1"), make([]byte, 8))                 // to the NIC's link-local address
	own6 := ipv6(58, addr6("fe80::2"), addr6("2001:db8:ffff::1"), make([]byte, 8))       // to one of the host's addresses
	in4 := ipv4(17, cli4, srv4, make([]byte, 8+10), 0, 0)                                // the IPv4 side's own traffic
	spoof4 := ipv4(17, addr4("192.0.2.99"), srv4, make([]byte, 8+10), 0, 0)              // any source, over the IPv6 link
	own4 := ipv4(1, addr4("198.51.100.99"), addr4("203.0.113.1"), make([]byte, 8), 0, 0) // to one of the host's addresses
	in6 := ipv6(17, srv6, cli6, make([]byte, 8+10))
	for _, tc := range []struct {
		name   string
		family byte
		in     [][]byte
		want   [][]byte // delivered, in order
		wrong  uint64
	}{
		{"IPv4 NIC", 4, [][]byte{spoof6, in4, ll6, own6, spoof6, in4}, [][]byte{in4, in4}, 2},
		{"IPv6 NIC", 6, [][]byte{spoof4, in6, own4, in6}, [][]byte{in6, in6}, 1},
		{"one NIC for both: no side", 0, [][]byte{spoof6, in4}, [][]byte{spoof6, in4}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			peer := os.NewFile(uintptr(fds[1]), "peer")
			defer peer.Close()
			file := os.NewFile(uintptr(fds[0]), "packet socket")
			defer file.Close()
			n := &nicPath{}
			n.local.p.Store(&map[netip.Addr]bool{netip.MustParseAddr("2001:db8:ffff::1"): true, netip.MustParseAddr("203.0.113.1"): true})
			c, err := newNICConn(n, file, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer c.closeWake()
			c.port = &nicPort{name: "x", family: tc.family}
			for _, ip := range tc.in {
				eth := make([]byte, tun.VnetHdrLen+ethHdrLen, tun.VnetHdrLen+ethHdrLen+len(ip))
				et := uint16(unix.ETH_P_IPV6)
				if ip[0]>>4 == 4 {
					et = unix.ETH_P_IP
				}
				binary.BigEndian.PutUint16(eth[tun.VnetHdrLen+12:], et)
				if _, err := peer.Write(append(eth, ip...)); err != nil {
					t.Fatal(err)
				}
			}
			buf := make([]byte, tun.VnetHdrLen+2000)
			for i, want := range tc.want {
				k, err := c.Read(buf)
				if err != nil {
					t.Fatalf("read %d: %v", i, err)
				}
				if !bytes.Equal(buf[tun.VnetHdrLen:k], want) {
					t.Errorf("read %d: %x, want %x", i, buf[tun.VnetHdrLen:k], want)
				}
			}
			var s LinkStats
			c.stats.AddTo(&s)
			if s != (LinkStats{WrongSide: tc.wrong}) {
				t.Errorf("counted %+v, want wrong_side %d", s, tc.wrong)
			}
			b := append(make([]byte, tun.VnetHdrLen), spoof6...)
			if a := testing.AllocsPerRun(100, func() { c.wrongSide(b) }); a != 0 {
				t.Errorf("wrongSide allocates %v times per packet", a)
			}
		})
	}
}

// TestWatchRings: the data path fails when a socket's ring has stalled
// (the kernel counts drops, the queue takes no frame, every frame is the
// kernel's), and only then: an idle socket, a busy one, and one whose
// full ring is what drops do not fail it. Plain memory stands in for the
// mapped ring and a table for PACKET_STATISTICS.
func TestWatchRings(t *testing.T) {
	cases := []struct {
		name  string
		drops uint32
		taken bool // the queue takes a frame between looks
		full  bool // a frame waits for the queue
		fails bool
	}{
		{"idle", 0, false, false, false},
		{"busy", 0, true, false, false},
		{"overloaded", 7, true, true, false},
		{"full, the queue descheduled", 7, false, true, false},
		{"dropping with frames taken", 7, true, false, false},
		{"stalled", 7, false, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ring := &nicRing{mem: make([]byte, 4*2048), frameSize: 2048, frames: 4}
			if tc.full {
				*ring.status(2) = unix.TP_STATUS_USER
			}
			c := &nicConn{ring: ring, queue: 1, port: &nicPort{name: "x6"}}
			var looks atomic.Int32
			drops := func(*nicConn) (uint32, error) {
				if tc.taken {
					ring.taken.Add(1) // the queue took a frame since the last look
				}
				if looks.Add(1) == 1 {
					return 3, nil // before the watch: not counted
				}
				return tc.drops, nil
			}
			done := make(chan struct{})
			fail := make(chan error, 1)
			stopped := make(chan struct{})
			go func() {
				defer close(stopped)
				watchRings([]*nicConn{c}, drops, time.Millisecond, done, fail)
			}()
			for looks.Load() < 20 {
				time.Sleep(time.Millisecond)
			}
			close(done)
			<-stopped
			select {
			case err := <-fail:
				if !tc.fails {
					t.Errorf("failed: %v", err)
				} else if !strings.Contains(err.Error(), "NIC x6 queue 1") {
					t.Errorf("error %q does not name the NIC and queue", err)
				}
			default:
				if tc.fails {
					t.Error("a stalled ring did not fail the data path")
				}
			}
		})
	}
}

// fillRingFrame makes frame i of ring the reader's, holding ip behind a
// zero virtio_net_hdr and an Ethernet header of type et, as the kernel
// lays out a TPACKET_V2 frame; snap short of the packet makes it a frame
// the reader skips.
func fillRingFrame(ring *nicRing, i int, et uint16, ip []byte, short bool) {
	f := ring.mem[i*ring.frameSize : (i+1)*ring.frameSize]
	clear(f)
	const mac = 80 // the Ethernet header's offset, behind the tpacket2_hdr and the virtio_net_hdr
	snap := ethHdrLen + len(ip)
	binary.NativeEndian.PutUint32(f[tpLen:], uint32(snap))
	if short {
		snap = ethHdrLen - 1
	}
	binary.NativeEndian.PutUint32(f[tpSnaplen:], uint32(snap))
	binary.NativeEndian.PutUint16(f[tpMac:], mac)
	binary.BigEndian.PutUint16(f[mac+12:], et)
	copy(f[mac+ethHdrLen:], ip)
	atomic.StoreUint32(ring.status(i), unix.TP_STATUS_USER)
}

// TestNICRingPrefetch: before a queue reads the packets waiting in its
// receive ring, their IP packets (in the ring's memory) go to the
// Handler's PrefetchBatch, in ring order, past the end of the ring,
// skipping frames the reader skips; the next run is announced only after
// the last one was read, and a run of one packet not at all. Plain memory
// stands in for the mapped ring.
func TestNICRingPrefetch(t *testing.T) {
	ring := &nicRing{mem: make([]byte, 8*2048), frameSize: 2048, frames: 8}
	c := &nicConn{ring: ring, idle: func() {}}
	var got [][][]byte
	c.prefetch = func(pkts [][]byte) {
		var batch [][]byte
		for _, p := range pkts {
			batch = append(batch, bytes.Clone(p))
		}
		got = append(got, batch)
	}
	pkt := func(i byte) []byte {
		p := make([]byte, 28)
		p[0], p[27] = 0x45, i
		return p
	}
	read := func(want byte) {
		t.Helper()
		p := make([]byte, 2048)
		n, err := c.Read(p)
		if err != nil || n != tun.VnetHdrLen+28 || p[n-1] != want {
			t.Fatalf("read %d bytes (%x), %v; want packet %d", n, p[:n], err, want)
		}
	}
	// Frames 0-4: packets 0 and 1, a truncated frame, packets 2 and 3.
	fillRingFrame(ring, 0, unix.ETH_P_IP, pkt(0), false)
	fillRingFrame(ring, 1, unix.ETH_P_IP, pkt(1), false)
	fillRingFrame(ring, 2, unix.ETH_P_IP, pkt(9), true)
	fillRingFrame(ring, 3, unix.ETH_P_IP, pkt(2), false)
	fillRingFrame(ring, 4, unix.ETH_P_IP, pkt(3), false)
	read(0)
	if len(got) != 1 || len(got[0]) != 4 {
		t.Fatalf("after the first read: batches %x, want one of packets 0-3", got)
	}
	for i, p := range got[0] {
		if !bytes.Equal(p, pkt(byte(i))) {
			t.Errorf("batch packet %d is %x, want %x", i, p, pkt(byte(i)))
		}
	}
	// Frames the kernel hands over meanwhile wait for the next run.
	fillRingFrame(ring, 5, unix.ETH_P_IP, pkt(4), false)
	read(1)
	read(2)
	read(3)
	if len(got) != 1 {
		t.Fatalf("%d batches before the first run was read, want 1", len(got))
	}
	// Frames 5-7 and, past the end, 0: packets 4-7.
	fillRingFrame(ring, 6, unix.ETH_P_IPV6, pkt(5), false)
	fillRingFrame(ring, 7, unix.ETH_P_IP, pkt(6), false)
	fillRingFrame(ring, 0, unix.ETH_P_IP, pkt(7), false)
	read(4)
	if len(got) != 2 || len(got[1]) != 4 || got[1][3][27] != 7 {
		t.Fatalf("second run: batches %x, want packets 4-7", got)
	}
	read(5)
	read(6)
	read(7)
	// A lone packet: nothing to overlap, no batch.
	fillRingFrame(ring, 1, unix.ETH_P_IP, pkt(8), false)
	read(8)
	if len(got) != 2 {
		t.Errorf("a lone packet was announced: %d batches", len(got))
	}
}

// TestNICRingPrefetchAllocs: reading a run of ring frames, announced to
// a real Handler whose engine prefetches them, allocates nothing.
func TestNICRingPrefetchAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	ring := &nicRing{mem: make([]byte, 8*2048), frameSize: 2048, frames: 8}
	h := NewHandler(&captureWriter{discard: true}, 1, func() Translator { return testEngine(t).NewWorker() }, nil)
	c := &nicConn{ring: ring, idle: func() {}}
	calls := 0
	c.prefetch = func(pkts [][]byte) { calls++; h.PrefetchBatch(0, pkts) }
	pkt4 := ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, payload(8, 1), false), 0, 0)
	pkt6 := ipv6(header.UDPProtocolNumber, srv6, cli6, l4(header.UDPProtocolNumber, srv6, cli6, payload(8, 2), false))
	p := make([]byte, 2048)
	next := 0
	round := func() {
		for range 4 {
			if next%2 == 0 {
				fillRingFrame(ring, next%ring.frames, unix.ETH_P_IP, pkt4, false)
			} else {
				fillRingFrame(ring, next%ring.frames, unix.ETH_P_IPV6, pkt6, false)
			}
			next++
		}
		for range 4 {
			if _, err := c.Read(p); err != nil {
				t.Fatal(err)
			}
		}
	}
	if a := testing.AllocsPerRun(100, round); a != 0 {
		t.Errorf("%v allocations per run of 4 frames", a)
	}
	if calls != 101 {
		t.Errorf("%d runs announced, want 101", calls)
	}
}

// TestNICPathCloseWaitsForSenders: closing a NIC path (once its queues
// stopped) waits for the goroutines that may still send parked packets,
// the resolver's and the kernel watcher's (a neighbour event), before it
// closes the sockets: none may send on a closed descriptor, which the
// process may have reused.
func TestNICPathCloseWaitsForSenders(t *testing.T) {
	for _, which := range []string{"resolver", "kernel watcher"} {
		t.Run(which, func(t *testing.T) {
			sender := make(chan struct{})
			n := &nicPath{done: make(chan struct{}), resolving: make(chan struct{}), kernelWatch: sender}
			if which == "resolver" {
				close(sender)
				sender = n.resolving
			} else {
				close(n.resolving)
			}
			closed := make(chan struct{})
			go func() {
				n.close()
				close(closed)
			}()
			<-n.done // the senders are told to stop
			select {
			case <-closed:
				t.Fatalf("close returned while the %s could still send", which)
			case <-time.After(50 * time.Millisecond):
			}
			close(sender)
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Fatalf("close did not return once the %s stopped", which)
			}
		})
	}
}
