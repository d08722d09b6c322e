package tun

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

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
	if enters, most := e.queues[0].uio.enters, uint64(n/4); enters > most {
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
