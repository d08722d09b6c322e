package stack

import (
	"context"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// TestLinkRingWriteErrorsCounted: a write that a queue's io_uring makes
// after the Handler handed the packet over, and that the file refuses,
// is a write error of the data path (what the metrics and health read),
// as a write refused at once is. The datapath's end of the socketpair
// has the smallest send buffer, so every translated packet (over 4.6 KB)
// is refused (EMSGSIZE): the first ones by the queue's raw writes, the
// rest, once the queue found packets in a row, on its ring. A failed
// ring write cancels the slot's next read linked to it, with no
// completion of its own: the queue must read into that slot again, and
// stop, rather than wait for the read for ever.
func TestLinkRingWriteErrorsCounted(t *testing.T) {
	conn, peer := seqpacketPair(t)
	if err := unix.SetsockoptInt(int(conn.Fd()), unix.SOL_SOCKET, unix.SO_SNDBUF, 1); err != nil {
		t.Fatal(err) // the kernel raises it to its minimum, about 4.6 KB
	}
	const packets = 24
	for range packets {
		if _, err := peer.Write(vnetPacket(xlat.Offload{}, testPacket(4, markForward, 6000))); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fake := &fakeTranslator{t: t}
	ep := tun.NewEndpointConns([]tun.Conn{conn}, 9000, allOffloads)
	d, err := serveLink(ctx, func() Translator { return fake }, ep, nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for d.LinkStats().WriteErrors < packets && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	s, es := d.LinkStats(), ep.Stats()
	cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- d.Wait() }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(10 * time.Second):
		// The queue's ring keeps waiting for reads it lost track of.
		t.Fatalf("the data path did not stop within 10 s of its end; %d packets translated, %d write errors", fake.calls.Load(), s.WriteErrors)
	}
	if fake.calls.Load() != packets || s.WriteErrors != packets {
		t.Errorf("%d packets translated, %d write errors in the data path's stats; want %d of each", fake.calls.Load(), s.WriteErrors, packets)
	}
	if es.WriteErrors == 0 {
		t.Errorf("no write failed on the queue's io_uring (the endpoint counted none): the test did not reach the ring")
	}
}
