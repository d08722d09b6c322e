package tun

import (
	"bytes"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/internal/netnstest"
)

// filesEndpoint serves one raw socketpair queue through NewEndpointFiles
// with a virtio_net_hdr of hdr bytes and an echoDispatcher, on the loop
// mode (queueIO).
func filesEndpoint(t *testing.T, hdr int, mode string) (*Endpoint, *echoDispatcher, *os.File) {
	t.Helper()
	setQueueIO(t, mode)
	c, p := rawPair(t)
	e, err := NewEndpointFiles([]*os.File{c}, 1500, 0, hdr)
	if err != nil {
		t.Fatal(err)
	}
	if q := e.queues[0]; q.rio == nil || q.rio.bounded {
		t.Fatalf("queue of a file: raw I/O %v, bounded wait: want raw, unbounded", q.rio != nil)
	}
	d := &echoDispatcher{e: e, idle: make([]atomic.Int64, 1)}
	e.Attach(d)
	t.Cleanup(e.Close)
	return e, d, p
}

// TestEndpointFilesFraming: a queue of NewEndpointFiles reads and writes
// its packets behind a virtio_net_hdr of 0, 10 or 12 bytes, on the raw
// loop and on the io_uring (16 packets in a row take it there): the
// packet crosses intact, the header's 10 bytes as the dispatcher left
// them and num_buffers written as zero; without a header a packet larger
// than the MTU is counted and dropped.
func TestEndpointFilesFraming(t *testing.T) {
	for _, mode := range queueIOModes {
		for _, hdr := range []int{0, VnetHdrLen, MrgVnetHdrLen} {
			t.Run(mode+"/"+map[int]string{0: "none", VnetHdrLen: "10", MrgVnetHdrLen: "12"}[hdr], func(t *testing.T) {
				e, _, p := filesEndpoint(t, hdr, mode)
				in := make([]byte, hdr+60)
				if hdr > 0 {
					in[0] = 2 // VIRTIO_NET_HDR_F_DATA_VALID
				}
				if hdr == MrgVnetHdrLen {
					in[10], in[11] = 0xff, 0xff // num_buffers: ignored
				}
				in[hdr] = 0x45
				for i := hdr + 1; i < len(in); i++ {
					in[i] = byte(i)
				}
				want := append([]byte(nil), in...)
				if hdr == MrgVnetHdrLen {
					want[10], want[11] = 0, 0
				}
				buf := make([]byte, 2000)
				p.SetReadDeadline(time.Now().Add(5 * time.Second))
				const burst = 16
				for range burst {
					if _, err := p.Write(in); err != nil {
						t.Fatal(err)
					}
				}
				for i := range burst {
					n, err := p.Read(buf)
					if err != nil {
						t.Fatalf("packet %d: %v", i, err)
					}
					if !bytes.Equal(buf[:n], want) {
						t.Fatalf("packet %d: echoed % x, want % x", i, buf[:n], want)
					}
				}
				if hdr == 0 {
					big := make([]byte, 1501)
					big[0] = 0x45
					p.Write(big)
					p.Write(in)
					if n, err := p.Read(buf); err != nil || !bytes.Equal(buf[:n], want) {
						t.Fatalf("after a packet over the MTU: % x, %v", buf[:n], err)
					}
					if s := e.Stats(); s.ReadErrors != 1 {
						t.Errorf("read errors %d, want 1 (the packet over the MTU)", s.ReadErrors)
					}
				}
			})
		}
	}
}

func TestEndpointFilesRefusesHeaderSizes(t *testing.T) {
	c, _ := rawPair(t)
	for _, hdr := range []int{-1, 4, 11, 20} {
		if _, err := NewEndpointFiles([]*os.File{c}, 1500, 0, hdr); err == nil {
			t.Errorf("header of %d bytes accepted", hdr)
		}
	}
}

// TestEndpointFilesRefusesBlocking: a blocking descriptor is refused,
// naming it: its queue would read it in a blocking read that no stop
// reaches (the runtime poller does not watch it, so SetReadDeadline does
// nothing), and Close would wait for ever.
func TestEndpointFilesRefusesBlocking(t *testing.T) {
	good, _ := rawPair(t)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	blocking, peer := os.NewFile(uintptr(fds[0]), "blocking queue"), os.NewFile(uintptr(fds[1]), "peer")
	t.Cleanup(func() { blocking.Close(); peer.Close() })
	e, err := NewEndpointFiles([]*os.File{good, blocking}, 1500, 0, VnetHdrLen)
	if err == nil {
		t.Fatalf("a blocking descriptor accepted (%d queues)", e.Queues())
	}
	if !strings.Contains(err.Error(), "blocking queue") {
		t.Errorf("error %q does not name the descriptor", err)
	}
}

// TestEndpointFilesStopPrompt: a queue of a file waits without a timeout
// (nothing but a stop or a failing read ends its wait), so Attach(nil)
// must wake it through the eventfd, within far less than the raw wait.
func TestEndpointFilesStopPrompt(t *testing.T) {
	for _, mode := range queueIOModes {
		t.Run(mode, func(t *testing.T) {
			e, d, p := filesEndpoint(t, MrgVnetHdrLen, mode)
			pkt := make([]byte, MrgVnetHdrLen+28)
			pkt[MrgVnetHdrLen] = 0x45
			p.Write(pkt)
			p.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := p.Read(make([]byte, 100)); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "the queue to be idle", func() bool { return d.idle[0].Load() > 0 })
			time.Sleep(20 * time.Millisecond) // into ppoll
			start := time.Now()
			e.Close()
			if took := time.Since(start); took > rawWait/4 {
				t.Errorf("stop took %v", took)
			}
			if !e.Exited(0) {
				t.Error("the queue's loop still runs after Close")
			}
		})
	}
}

// TestEndpointFilesAllocs: a queue of a file with a 12-byte header reads,
// echoes and writes bursts of packets without allocating, on either loop.
func TestEndpointFilesAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, mode := range queueIOModes {
		t.Run(mode, func(t *testing.T) {
			e, d, p := filesEndpoint(t, MrgVnetHdrLen, mode)
			burst := echoBurst(t, p, MrgVnetHdrLen+64)
			burst() // the lists' first appends, the ring's setup
			if a := testing.AllocsPerRun(100, burst); a != 0 {
				t.Errorf("%v allocations per burst of 16 packets", a)
			}
			if on := e.queues[0].uringOn.Load(); on != (mode == "uring") {
				t.Errorf("queue on its io_uring: %v, loop %q", on, mode)
			}
			if d.echoed.Load() < 16*101 {
				t.Errorf("%d packets echoed", d.echoed.Load())
			}
		})
	}
}

// TestEndpointRestartLeaksNothing: stopping and attaching again (what a
// daemon's restart of its data path does) leaves no descriptor (the wake
// eventfd, the io_uring) and no goroutine behind, on either loop, after
// bursts that put the queue on its io_uring each time.
func TestEndpointRestartLeaksNothing(t *testing.T) {
	for _, mode := range queueIOModes {
		t.Run(mode, func(t *testing.T) {
			e, d, p := filesEndpoint(t, MrgVnetHdrLen, mode)
			burst := echoBurst(t, p, MrgVnetHdrLen+28)
			cycle := func() {
				e.Attach(d)
				burst()
				requireQueueIO(t, e, 0, mode)
				e.Close()
			}
			e.Close()
			cycle() // the ring's slots, made once
			fds, gs := netnstest.OpenFDs(t), runtime.NumGoroutine()
			for range 10 {
				cycle()
			}
			if now := netnstest.OpenFDs(t); len(now) != len(fds) {
				t.Errorf("%d descriptors open after 10 restarts, %d before", len(now), len(fds))
			}
			// A loop's goroutine ends just after Close saw it done.
			for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > gs && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			if now := runtime.NumGoroutine(); now > gs {
				t.Errorf("%d goroutines after 10 restarts, %d before", now, gs)
			}
		})
	}
}

// echoBurst returns what writes 16 IPv4 packets of size bytes behind a
// 12-byte header to peer p, then reads their 16 echoes (16 in a row put a
// queue on its io_uring), allocating nothing.
func echoBurst(t *testing.T, p *os.File, size int) func() {
	pkt := make([]byte, size)
	pkt[MrgVnetHdrLen] = 0x45
	buf := make([]byte, size+100)
	p.SetReadDeadline(time.Now().Add(time.Minute))
	return func() {
		for range 16 {
			if _, err := p.Write(pkt); err != nil {
				t.Fatal(err)
			}
		}
		for range 16 {
			if _, err := p.Read(buf); err != nil {
				t.Fatal(err)
			}
		}
	}
}
