package stack

import (
	"context"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// prefetchProbe is the engine's Worker with a fake seam on Prefetch: it
// remembers the last two bytes of each packet announced (the datagrams'
// sequence numbers) in a fixed ring, without allocating, and checks that
// Process then gets the announced packets in order.
type prefetchProbe struct {
	*xlat.Worker
	calls, announced int
	largest          int
	seq              [256]uint16 // announced, not yet processed
	head, tail       int
	processed        int // packets Process got that were announced
	mismatches       int
}

func (p *prefetchProbe) Prefetch(pkts [][]byte) {
	p.calls++
	p.largest = max(p.largest, len(pkts))
	for _, b := range pkts {
		p.seq[p.tail%len(p.seq)] = uint16(b[len(b)-2])<<8 | uint16(b[len(b)-1])
		p.tail++
		p.announced++
	}
	p.Worker.Prefetch(pkts)
}

func (p *prefetchProbe) Process(buf []byte, start, end int, off *xlat.Offload, sink xlat.Sink) xlat.Result {
	if p.head < p.tail {
		if got := uint16(buf[end-2])<<8 | uint16(buf[end-1]); got != p.seq[p.head%len(p.seq)] {
			p.mismatches++
		}
		p.head++
		p.processed++
	}
	return p.Worker.Process(buf, start, end, off, sink)
}

// TestLinkLoopPrefetch: through the whole tun path over a socketpair
// (the queue on its io_uring), packets that arrive together are announced
// to the queue's translator (Worker.Prefetch, through the Handler's
// PrefetchBatch) before it translates them, the same packets in the same
// order, and a round of a batch allocates nothing.
func TestLinkLoopPrefetch(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts of gVisor's pooled PacketBuffers are meaningless under -race")
	}
	conn, peer := seqpacketPair(t)
	probe := &prefetchProbe{Worker: testEngine(t).NewWorker()}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := serveLink(ctx, func() Translator { return probe }, tun.NewEndpointConns([]tun.Conn{conn}, 1520, allOffloads), nil)
	if err != nil {
		t.Fatal(err)
	}
	const batch = 16
	var in [batch][]byte
	for i := range in {
		data := payload(64, byte(i))
		data[len(data)-2], data[len(data)-1] = 0x5a, byte(i)
		in[i] = vnetPacket(xlat.Offload{}, ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, data, false), 0, 0))
	}
	out := make([]byte, 2048)
	peer.SetReadDeadline(time.Now().Add(time.Minute))
	round := func() {
		for i := range in {
			if _, err := peer.Write(in[i]); err != nil {
				t.Fatal(err)
			}
		}
		for range in {
			if _, err := peer.Read(out); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 5 {
		round()
	}
	allocs := testing.AllocsPerRun(50, round)
	cancel()
	if err := d.Wait(); err != nil {
		t.Error(err)
	}
	// The probe is read after the queue's goroutine ended.
	if allocs != 0 {
		t.Errorf("%v allocations per round of %d packets", allocs, batch)
	}
	if probe.calls == 0 || probe.largest < 2 || probe.processed != probe.announced || probe.mismatches != 0 {
		t.Errorf("%d batches announced (the largest %d packets), %d packets announced, %d of them translated, %d out of order",
			probe.calls, probe.largest, probe.announced, probe.processed, probe.mismatches)
	}
	t.Logf("%d of %d packets announced in %d batches", probe.announced, 56*batch, probe.calls)
}
