package stack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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
