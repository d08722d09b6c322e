package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/map646/map646/internal/netnstest"
	"golang.org/x/sys/unix"

	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// queueIOModes are the loops a raw queue can run: through its io_uring,
// and the raw read/write loop (the fallback).
var queueIOModes = []string{"uring", "raw"}

// setQueueIO makes the queues attached during t run the given loop.
func setQueueIO(t *testing.T, mode string) {
	t.Helper()
	saved := queueIO
	queueIO = mode
	t.Cleanup(func() { queueIO = saved })
}

// requireQueueIO fails t unless queue q of e runs the loop mode asks for
// (uring: the kernel here has io_uring enabled).
func requireQueueIO(t *testing.T, e *Endpoint, q int, mode string) {
	t.Helper()
	if on := e.queues[q].uringOn.Load(); on != (mode == "uring") {
		t.Fatalf("queue %d runs on its io_uring: %v, want %v (loop %q)", q, on, !on, mode)
	}
}

// gatedDispatcher echoes like echoDispatcher, but its first delivery
// waits until gate is closed: packets pile up in the queue meanwhile.
type gatedDispatcher struct {
	echoDispatcher
	gate   chan struct{}
	inside chan struct{}
	once   bool
}

func (d *gatedDispatcher) DeliverNetworkPacket(p tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	if !d.once {
		d.once = true
		close(d.inside)
		<-d.gate
	}
	d.echoDispatcher.DeliverNetworkPacket(p, pkt)
}

// TestURingBatchInOrder: packets that queue up while the loop is busy are
// read in batches of up to uringSlots, one io_uring_enter per batch, and
// echoed, every one, in the order they came.
func TestURingBatchInOrder(t *testing.T) {
	setQueueIO(t, "uring")
	c, p := rawPair(t)
	e := NewEndpointConns([]Conn{c}, 1500, 0)
	d := &gatedDispatcher{echoDispatcher: echoDispatcher{e: e, idle: make([]atomic.Int64, 1)}, gate: make(chan struct{}), inside: make(chan struct{})}
	d.echoDispatcher.e = e
	e.Attach(d)
	const n = 48 // three batches
	pkt := make([]byte, VnetHdrLen+28)
	pkt[VnetHdrLen] = 0x45
	for i := range n {
		pkt[len(pkt)-1] = byte(i)
		if _, err := p.Write(pkt); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			<-d.inside // the loop holds packet 0; the rest pile up
		}
	}
	close(d.gate)
	buf := make([]byte, 100)
	p.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range n {
		m, err := p.Read(buf)
		if err != nil || m != len(pkt) {
			t.Fatalf("echo %d: %d bytes, %v", i, m, err)
		}
		if got := buf[m-1]; got != byte(i) {
			t.Fatalf("echo %d is packet %d: reordered", i, got)
		}
	}
	requireQueueIO(t, e, 0, "uring")
	e.Close() // the loop's count is read after it ended
	// Packet 0's wait, then batches of up to uringSlots (16); the raw
	// loop makes a read and a write per packet.
	if enters, most := e.queues[0].uio.enters, uint64(n/4); enters == 0 || enters > most {
		t.Errorf("%d io_uring_enter waits for %d packets that were queued at once, want at most %d: not batched", enters, n, most)
	}
}

// TestURingFallback: where io_uring cannot be set up (no kernel support,
// kernel.io_uring_disabled, a kernel too old), the queue runs the raw
// loop instead and traffic flows.
func TestURingFallback(t *testing.T) {
	setQueueIO(t, "uring")
	saved := uringSetup
	uringSetup = func(uint32, int) (*ring, error) { return nil, errors.Join(errNoURing, errors.New("ENOSYS")) }
	defer func() { uringSetup = saved }()
	c, p := rawPair(t)
	e := NewEndpointConns([]Conn{c}, 1500, 0)
	d := &echoDispatcher{e: e, idle: make([]atomic.Int64, 1)}
	e.Attach(d)
	defer e.Close()
	pkt := make([]byte, VnetHdrLen+28)
	pkt[VnetHdrLen] = 0x60
	buf := make([]byte, 100)
	p.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range 3 {
		if _, err := p.Write(pkt); err != nil {
			t.Fatal(err)
		}
		if m, err := p.Read(buf); err != nil || m != len(pkt) {
			t.Fatalf("echo %d: %d bytes, %v", i, m, err)
		}
	}
	requireQueueIO(t, e, 0, "raw")
	if e.queues[0].uio != nil {
		t.Error("a ring's slots were made although the ring could not be")
	}
}

// TestURingPeerGone: a read of 0 on the ring (the socket peer went away)
// ends the loop without an error, after it drained the ring.
func TestURingPeerGone(t *testing.T) {
	setQueueIO(t, "uring")
	c, p := rawPair(t)
	e := NewEndpointConns([]Conn{c}, 1500, 0)
	d := &echoDispatcher{e: e, idle: make([]atomic.Int64, 1)}
	e.Attach(d)
	waitUntil(t, "the queue to wait", func() bool { return d.idle[0].Load() > 0 })
	requireQueueIO(t, e, 0, "uring")
	p.Close()
	done := make(chan struct{})
	go func() { e.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the loop did not end when the peer went away")
	}
	if err := e.Err(); err != nil {
		t.Errorf("loop ended with %v, want nil (EOF)", err)
	}
	e.Close()
}

// ioWorkers counts the process's io_uring worker threads (io-wq,
// "iou-wrk-*"): a read or write the ring could not make inline would
// have started one.
func ioWorkers(t testing.TB) int {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, task := range tasks {
		comm, err := os.ReadFile("/proc/self/task/" + task.Name() + "/comm")
		if err == nil && strings.HasPrefix(string(comm), "iou-wrk") {
			n++
		}
	}
	return n
}

// TestURingTunReadNoWait: on a real tun queue, a read posted with
// RWF_NOWAIT completes inside the io_uring_enter that submits it, with
// EAGAIN when the queue is empty and with the packet when one is queued:
// no poll is armed for it and no io-wq worker reads for it. This is what
// lets the loop batch while the queue has packets and wait in ppoll,
// like the raw loop, when it has none.
func TestURingTunReadNoWait(t *testing.T) {
	netnstest.RequireTun(t, "dp-")
	// The ring has one issuer (IORING_SETUP_SINGLE_ISSUER, as a queue's
	// loop on its locked thread): entered from another thread it answers
	// EEXIST, which this test got one run in a few once ns.Do had moved
	// the goroutine.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ns := netnstest.New(t, "dp-uring-")
	var dev *Device
	if err := ns.Do(func() (err error) {
		dev, err = Open(Config{Name: "dp-tun0", Queues: 1, MTU: 1500, Offload: true})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	ns.MustRun(t, "ip", "link", "set", "lo", "up")
	ns.MustRun(t, "ip", "addr", "add", "198.51.100.1/32", "dev", "lo")
	ns.MustRun(t, "ip", "route", "add", "192.0.2.0/24", "dev", "dp-tun0", "src", "198.51.100.1")
	rc, err := dev.Queues()[0].f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var r *ring
	var setupErr error
	if err := rc.Control(func(fd uintptr) { r, setupErr = newRing(8, int(fd)) }); err != nil || setupErr != nil {
		t.Fatalf("ring over the tun queue: %v %v", err, setupErr)
	}
	defer r.close()
	f := NewFrame()
	// read posts one RWF_NOWAIT read and submits it without waiting: it
	// must have completed when the call returns.
	read := func() int32 {
		t.Helper()
		r.prepRW(uringOpRead, 0, unix.RWF_NOWAIT, f.buf[FrameHeader:], uringRead)
		if errno := r.enter(false, nil, false); errno != 0 {
			t.Fatalf("io_uring_enter: %v", errno)
		}
		if n := r.ready(); n != 1 {
			t.Fatalf("%d completions right after the submission, want 1: the read did not complete inline", n)
		}
		res := r.cqe(0).res
		r.consume(1)
		return res
	}
	if res := read(); res != -int32(unix.EAGAIN) {
		t.Fatalf("read of the empty queue: %d, want -EAGAIN", res)
	}
	if err := ns.Do(func() error {
		c, err := net.Dial("udp4", "192.0.2.1:9")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("ping"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if res := read(); res != VnetHdrLen+28+4 {
		t.Fatalf("read of a queued UDP packet: %d, want %d", res, VnetHdrLen+28+4)
	}
	if res := read(); res != -int32(unix.EAGAIN) {
		t.Fatalf("read of the queue emptied again: %d, want -EAGAIN", res)
	}
	if n := ioWorkers(t); n != 0 {
		t.Errorf("%d io-wq workers: a read went to io-wq", n)
	}
}

// TestURingIdlesInPoll: between sparse packets the io_uring loop keeps no
// read posted and waits where the raw loop waits, in ppoll(2) (its raw
// wait here), not in io_uring_enter: a lone packet then wakes the loop's
// own thread directly, not through the ring's poll and task_work; and
// sparse packets are read and written by raw calls, never through the
// ring.
func TestURingIdlesInPoll(t *testing.T) {
	setQueueIO(t, "uring")
	saved := foreignRawWait
	foreignRawWait = time.Hour
	defer func() { foreignRawWait = saved }()
	c, p := rawPair(t)
	e := NewEndpointConns([]Conn{c}, 1500, 0)
	d := &echoDispatcher{e: e, idle: make([]atomic.Int64, 1)}
	e.Attach(d)
	defer e.Close()
	pkt := make([]byte, VnetHdrLen+28)
	pkt[VnetHdrLen] = 0x45
	buf := make([]byte, 100)
	for i := range 3 {
		if _, err := p.Write(pkt); err != nil {
			t.Fatal(err)
		}
		p.SetReadDeadline(time.Now().Add(5 * time.Second))
		if m, err := p.Read(buf); err != nil || m != len(pkt) {
			t.Fatalf("echo %d: %d bytes, %v", i, m, err)
		}
		waitUntil(t, "the loop to wait in ppoll", func() bool {
			ppoll, enter := inSyscalls(t)
			if enter > 0 {
				t.Fatalf("after packet %d a thread waits in io_uring_enter", i)
			}
			return ppoll == 1
		})
	}
	requireQueueIO(t, e, 0, "uring")
	if n := ioWorkers(t); n != 0 {
		t.Errorf("%d io-wq workers", n)
	}
	e.Close() // the loop's count is read after it ended
	if enters := e.queues[0].uio.enters; enters != 0 {
		t.Errorf("%d io_uring_enter calls for sparse packets, want none: they go by raw read and write", enters)
	}
}

// inSyscalls counts the process's threads blocked in ppoll(2) (only a
// queue loop uses it) and in io_uring_enter(2).
func inSyscalls(t *testing.T) (ppoll, enter int) {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/syscall")
		if err != nil {
			continue
		}
		switch nr, _, _ := strings.Cut(string(b), " "); nr {
		case strconv.Itoa(unix.SYS_PPOLL):
			ppoll++
		case strconv.Itoa(unix.SYS_IO_URING_ENTER):
			enter++
		}
	}
	return ppoll, enter
}

// TestURingNoWaitRefused: where the kernel refuses the reads' flags
// (EOPNOTSUPP, here for a flag no kernel knows), the loop posts its reads
// without them, waits for them in io_uring_enter, echoes every packet and
// still stops.
func TestURingNoWaitRefused(t *testing.T) {
	setQueueIO(t, "uring")
	saved := uringReadFlags
	uringReadFlags = unix.RWF_NOWAIT | 1<<30
	defer func() { uringReadFlags = saved }()
	c, p := rawPair(t)
	e := NewEndpointConns([]Conn{c}, 1500, 0)
	d := &gatedDispatcher{echoDispatcher: echoDispatcher{e: e, idle: make([]atomic.Int64, 1)}, gate: make(chan struct{}), inside: make(chan struct{})}
	e.Attach(d)
	const n = 24 // a burst: the loop goes to its ring
	pkt := make([]byte, VnetHdrLen+28)
	pkt[VnetHdrLen] = 0x45
	for i := range n {
		if _, err := p.Write(pkt); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			<-d.inside
		}
	}
	close(d.gate)
	buf := make([]byte, 100)
	p.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range n {
		if m, err := p.Read(buf); err != nil || m != len(pkt) {
			t.Fatalf("echo %d: %d bytes, %v", i, m, err)
		}
	}
	requireQueueIO(t, e, 0, "uring")
	waitUntil(t, "the loop to wait in io_uring_enter", func() bool {
		_, enter := inSyscalls(t)
		return enter == 1
	})
	if s := e.Stats(); s.ReadErrors != 0 {
		t.Errorf("%d read errors: the refused flags were counted", s.ReadErrors)
	}
	done := make(chan struct{})
	go func() { e.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not stop the loop waiting in io_uring_enter")
	}
	if e.queues[0].uio.enters == 0 {
		t.Error("the burst never went to the ring")
	}
	if f := e.queues[0].uio.readFlags; f != 0 {
		t.Errorf("reads posted with %#x after EOPNOTSUPP, want none", f)
	}
}

// prefetchDispatcher is a gatedDispatcher that is also a BatchDispatcher:
// it keeps a copy of the last batch PrefetchBatch got and checks each
// delivery against the batch's next packet.
type prefetchDispatcher struct {
	gatedDispatcher
	batch    [][]byte
	next     int // packets of batch delivered
	batches  int
	largest  int
	covered  int // deliveries announced by a batch, in its order
	problems []string
}

func (d *prefetchDispatcher) PrefetchBatch(q int, pkts [][]byte) {
	if q != 0 || len(pkts) < 2 {
		d.problems = append(d.problems, fmt.Sprintf("PrefetchBatch(%d, %d packets)", q, len(pkts)))
	}
	if d.next < len(d.batch) {
		d.problems = append(d.problems, fmt.Sprintf("a batch of %d came with %d packets of the last one undelivered", len(pkts), len(d.batch)-d.next))
	}
	d.batch, d.next = d.batch[:0], 0
	for _, p := range pkts {
		d.batch = append(d.batch, bytes.Clone(p))
	}
	d.batches++
	d.largest = max(d.largest, len(pkts))
}

func (d *prefetchDispatcher) DeliverNetworkPacket(p tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	if d.next < len(d.batch) {
		got := make([]byte, pkt.Size())
		CopyPacket(got, pkt)
		if !bytes.Equal(got, d.batch[d.next]) {
			d.problems = append(d.problems, fmt.Sprintf("delivered %d bytes ending %x where the batch had %d ending %x next",
				len(got), got[max(0, len(got)-4):], len(d.batch[d.next]), d.batch[d.next][max(0, len(d.batch[d.next])-4):]))
		}
		d.next++
		d.covered++
	}
	d.gatedDispatcher.DeliverNetworkPacket(p, pkt)
}

// TestURingPrefetchBatch: a queue on its io_uring hands a BatchDispatcher
// the IP packets of each batch of completed reads before it delivers
// them, exactly the packets it then delivers, in their order; batches of
// one packet are not handed over. The raw loop, which reads one packet at
// a time, hands over none. The queues of NewEndpointFiles read their
// packets behind a header of 0, 10 or 12 bytes: each batch packet starts
// and ends where the delivered one does, also for a super-packet of
// GSOMaxSize behind a 12-byte header, which fills its slot to the last
// byte (a batch cut as if behind 10 bytes ran 2 bytes past the slot and
// ended the process with a slice out of range).
func TestURingPrefetchBatch(t *testing.T) {
	for _, c := range []struct {
		name  string
		files bool // NewEndpointFiles; else NewEndpointConns (10 bytes)
		hdr   int
		big   int // packets at the end of the burst of GSOMaxSize bytes
	}{
		{name: "conns", hdr: VnetHdrLen},
		{name: "files/none", files: true, hdr: 0},
		{name: "files/10", files: true, hdr: VnetHdrLen},
		{name: "files/12", files: true, hdr: MrgVnetHdrLen},
		{name: "files/12 largest", files: true, hdr: MrgVnetHdrLen, big: 3},
		{name: "files/10 largest", files: true, hdr: VnetHdrLen, big: 3},
	} {
		for _, mode := range queueIOModes {
			t.Run(c.name+"/"+mode, func(t *testing.T) {
				setQueueIO(t, mode)
				cf, p := rawPair(t)
				var e *Endpoint
				if c.files {
					var err error
					if e, err = NewEndpointFiles([]*os.File{cf}, GSOMaxSize, OffloadUSO4, c.hdr); err != nil {
						t.Fatal(err)
					}
				} else {
					e = NewEndpointConns([]Conn{cf}, 1500, 0)
				}
				if c.big > 0 {
					// Room for the whole burst while the first delivery holds
					// the loop, and for the echoes: 8 MiB as root, else
					// net.core.wmem_max (the kernel doubles it), which
					// holds c.big super-packets.
					for _, f := range []*os.File{p, cf} {
						rc, err := f.SyscallConn()
						if err != nil {
							t.Fatal(err)
						}
						rc.Control(func(fd uintptr) {
							if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20) != nil {
								unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 8<<20)
							}
						})
					}
				}
				d := &prefetchDispatcher{gatedDispatcher: gatedDispatcher{echoDispatcher: echoDispatcher{e: e, idle: make([]atomic.Int64, 1)}, gate: make(chan struct{}), inside: make(chan struct{})}}
				e.Attach(d)
				const n = 48
				small := make([]byte, c.hdr+28)
				large := make([]byte, c.hdr+GSOMaxSize)
				for _, b := range [][]byte{small, large} {
					b[c.hdr] = 0x45
					binary.BigEndian.PutUint16(b[c.hdr+2:], uint16(len(b)-c.hdr))
				}
				size := func(i int) int {
					if i >= n-c.big {
						return len(large)
					}
					return len(small)
				}
				for i := range n {
					pkt := small
					if size(i) == len(large) {
						pkt = large
					}
					pkt[len(pkt)-2], pkt[len(pkt)-1] = byte(i), ^byte(i)
					if _, err := p.Write(pkt); err != nil {
						t.Fatal(err)
					}
					if i == 0 {
						<-d.inside
					}
				}
				close(d.gate)
				buf := make([]byte, len(large)+1)
				p.SetReadDeadline(time.Now().Add(10 * time.Second))
				for i := range n {
					if m, err := p.Read(buf); err != nil || m != size(i) || buf[m-2] != byte(i) {
						t.Fatalf("echo %d: %d bytes (want %d), %v", i, m, size(i), err)
					}
				}
				requireQueueIO(t, e, 0, mode)
				e.Close() // the dispatcher's record is read after the loop ended
				for _, pr := range d.problems[:min(len(d.problems), 5)] {
					t.Error(pr)
				}
				if mode == "raw" {
					if d.batches != 0 {
						t.Errorf("the raw loop handed over %d batches", d.batches)
					}
					return
				}
				// The first packets come by raw reads (uringBusyAfter in a
				// row), the rest in batches of 2, 4, 8, then 16.
				if d.batches < 3 || d.largest < 8 || d.covered < n-2*uringBusyAfter {
					t.Errorf("%d batches, the largest of %d packets, announcing %d of %d deliveries", d.batches, d.largest, d.covered, n)
				}
			})
		}
	}
}

// BenchmarkQueueBurstOverSlots: bursts of four times uringSlots, which
// the ring reads in several batches (the raw loop packet by packet): what
// a larger uringSlots would save per packet.
func BenchmarkQueueBurstOverSlots(b *testing.B) {
	for _, mode := range queueIOModes {
		b.Run(mode, func(b *testing.B) { benchQueueBurst(b, mode, 4*uringSlots) })
	}
}

// TestSendQueuedWithoutRing: a queue whose ring is gone (closed at the
// end of its io_uring loop, or never set up) holds nothing to submit,
// even if the flag was left set by a drain that gave up: a packet
// written at once then goes out by itself instead of entering a nil ring.
func TestSendQueuedWithoutRing(t *testing.T) {
	for name, q := range map[string]*queue{
		"no ring state": {},
		"ring closed":   {uio: &uringIO{}},
	} {
		t.Run(name, func(t *testing.T) {
			q.unsent.Store(true)
			q.sendQueued() // must not panic
		})
	}
}
