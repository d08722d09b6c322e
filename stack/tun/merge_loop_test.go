package tun

import (
	"bytes"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/map646/map646/stack/xlat"
)

// frameEcho is a FrameDispatcher that writes each packet back as it came,
// from the frame, with the frame's offload metadata: what the Handler
// does with a translated packet, so that the queue's io_uring queues the
// writes (and merges them).
type frameEcho struct {
	e    *Endpoint
	list gvstack.PacketBufferList
}

func (d *frameEcho) TakesFrames(*Endpoint) bool { return true }

func (d *frameEcho) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	d.list.PushBack(pkt.IncRef())
	d.e.WritePackets(d.list)
	d.list.Reset()
}

func (*frameEcho) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {}

// mergeBurst is a burst of datagrams as a flood's batches bring them: two
// flows in runs and interleaved, sizes that end merges, and a datagram
// with a bad checksum (and no flags: the kernel did not look at it) in
// the middle of a run.
func mergeBurst() []dgram {
	a := dgram{payload: 64, flags: xlat.OffloadNeedsCsum}
	b := dgram{payload: 200, flags: xlat.OffloadDataValid, flow: 1}
	plain := dgram{payload: 64}
	bad := plain
	bad.badCsum = true
	short := a
	short.payload = 20
	var s []dgram
	s = append(s, repeat(6, a)...)
	s = append(s, repeat(5, b)...)
	s = append(s, a, b, a, b)
	s = append(s, plain, plain, bad, plain, plain)
	s = append(s, repeat(3, a)...)
	s = append(s, short, a)
	s = append(s, repeat(8, b)...)
	s = append(s, repeat(10, a)...)
	return s
}

// filesEndpointUSO is an Endpoint over one socketpair queue with a
// virtio_net_hdr of hdr bytes whose tun took the offloads given, on the
// io_uring, with a frameEcho attached once the burst pkts is in the queue
// (so that the loop finds batches).
func filesEndpointUSO(t *testing.T, hdr, offloads int, pkts [][]byte) (*Endpoint, *os.File) {
	t.Helper()
	setQueueIO(t, "uring")
	c, p := rawPair(t)
	e, err := NewEndpointFiles([]*os.File{c}, 1500, offloads, hdr)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range pkts {
		if _, err := p.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	e.Attach(&frameEcho{e: e})
	t.Cleanup(e.Close)
	return e, p
}

// readDatagrams reads from p until it has n datagrams, super-packets
// segmented as the kernel would; supers counts the super-packets.
func readDatagrams(t *testing.T, p *os.File, hdr, n int) (got [][]byte, supers int) {
	t.Helper()
	buf := make([]byte, 70000)
	p.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(got) < n {
		m, err := p.Read(buf)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", len(got), err)
		}
		w := bytes.Clone(buf[:m])
		var off xlat.Offload
		DecodeVnetHdr(w, &off)
		if off.GSOType != xlat.GSONone {
			supers++
		}
		got = append(got, segment(t, hdr, w)...)
	}
	return got, supers
}

// TestMergeLoop: a queue on its io_uring whose tun took USO6 writes the
// datagrams a batch echoes as USO super-packets; every datagram comes out
// once, in order, as it went in (the one with a bad checksum too: written
// on its own, unchanged, for the receiver to drop), and the counters say
// how many merged. Without USO6 nothing merges.
func TestMergeLoop(t *testing.T) {
	for _, tc := range []struct {
		name     string
		hdr      int
		offloads int
		merges   bool
	}{
		{"uso6/10", VnetHdrLen, OffloadCsum | OffloadUSO4 | OffloadUSO6, true},
		{"uso6/12", MrgVnetHdrLen, OffloadCsum | OffloadUSO6, true},
		{"no uso6", VnetHdrLen, OffloadCsum | OffloadTSO4 | OffloadTSO6 | OffloadUSO4, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds := mergeBurst()
			pkts := make([][]byte, len(ds))
			for i, d := range ds {
				pkts[i], _ = d.build(tc.hdr)
			}
			e, p := filesEndpointUSO(t, tc.hdr, tc.offloads, pkts)
			got, supers := readDatagrams(t, p, tc.hdr, len(pkts))
			for i, g := range got {
				if want := pkts[i][tc.hdr:]; !bytes.Equal(g, want) {
					t.Fatalf("datagram %d:\n got % x\nwant % x", i, g, want)
				}
			}
			requireQueueIO(t, e, 0, "uring")
			s := e.Stats()
			if s.WriteErrors != 0 {
				t.Errorf("%d write errors", s.WriteErrors)
			}
			if !tc.merges {
				if supers != 0 || s.MergedDatagrams != 0 || s.MergedWrites != 0 {
					t.Fatalf("without USO6: %d super-packets, counters %d/%d", supers, s.MergedDatagrams, s.MergedWrites)
				}
				return
			}
			if supers == 0 || s.MergedWrites != uint64(supers) || s.MergedDatagrams < 2*s.MergedWrites {
				t.Fatalf("%d super-packets read; counters: %d datagrams in %d merged writes", supers, s.MergedDatagrams, s.MergedWrites)
			}
			t.Logf("%d datagrams, %d in %d super-packets", len(pkts), s.MergedDatagrams, s.MergedWrites)
		})
	}
}

// TestMergeLoopWriteFails: a merged write the file refuses (larger than
// the socket's send buffer: EMSGSIZE) counts every datagram in it as a
// write error: each datagram is received or counted, once.
func TestMergeLoopWriteFails(t *testing.T) {
	d := dgram{payload: 1000, flags: xlat.OffloadDataValid}
	const total = 40
	pkts := make([][]byte, total)
	for i := range pkts {
		pkts[i], _ = d.build(VnetHdrLen)
	}
	setQueueIO(t, "uring")
	c, p := rawPair(t)
	// The kernel doubles it: 8 KiB, room for 8 datagrams in one message,
	// not 16.
	if err := unix.SetsockoptInt(int(c.Fd()), unix.SOL_SOCKET, unix.SO_SNDBUF, 4096); err != nil {
		t.Fatal(err)
	}
	e, err := NewEndpointFiles([]*os.File{c}, 1500, OffloadCsum|OffloadUSO6, VnetHdrLen)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range pkts {
		if _, err := p.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	var received atomic.Int64
	done := make(chan struct{})
	go func() { // count what goes through
		defer close(done)
		buf := make([]byte, 70000)
		p.SetReadDeadline(time.Now().Add(3 * time.Second))
		for {
			m, err := p.Read(buf)
			if err != nil {
				return
			}
			if m < VnetHdrLen+48+1000 {
				continue // a poke
			}
			received.Add(int64((m - VnetHdrLen - 48 + 999) / 1000))
		}
	}()
	e.Attach(&frameEcho{e: e})
	t.Cleanup(e.Close)
	waitUntil(t, "every datagram received or counted", func() bool {
		if received.Load()+int64(e.Stats().WriteErrors) >= total {
			return true
		}
		// A write the full send buffer turned down (EAGAIN) waits in
		// the ring for room, and goes once the loop enters the ring
		// again: bring it there with a few short packets.
		poke := make([]byte, VnetHdrLen+28)
		poke[VnetHdrLen] = 0x45
		for range 8 {
			p.Write(poke)
		}
		time.Sleep(20 * time.Millisecond)
		return false
	})
	s := e.Stats()
	if got := received.Load() + int64(s.WriteErrors); got != total || s.WriteErrors < 2 || s.MergedWrites == 0 {
		t.Fatalf("%d received, %d write errors (want %d in all, a failed merge's datagrams among the errors); %d merged writes",
			received.Load(), s.WriteErrors, total, s.MergedWrites)
	}
	t.Logf("%d received, %d write errors, %d datagrams in %d merged writes", received.Load(), s.WriteErrors, s.MergedDatagrams, s.MergedWrites)
}

// TestMergeLoopAllocs: merging allocates nothing per packet.
func TestMergeLoopAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	a, _ := dgram{payload: 64, flags: xlat.OffloadNeedsCsum}.build(VnetHdrLen)
	e, p := filesEndpointUSO(t, VnetHdrLen, OffloadCsum|OffloadUSO6, nil)
	buf := make([]byte, 70000)
	p.SetReadDeadline(time.Now().Add(time.Minute))
	burst := func() {
		for range 16 {
			if _, err := p.Write(a); err != nil {
				t.Fatal(err)
			}
		}
		for n := 0; n < 16; {
			m, err := p.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			n += (m - VnetHdrLen - 48 + 63) / 64
		}
	}
	burst()
	if a := testing.AllocsPerRun(100, burst); a != 0 {
		t.Errorf("%v allocations per burst of 16 datagrams", a)
	}
	if s := e.Stats(); s.MergedWrites == 0 {
		t.Error("nothing merged")
	}
}
