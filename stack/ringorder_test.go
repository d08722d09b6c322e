package stack

import (
	"context"
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// TestLinkFlowOrderWithFragments: the packets of one flow leave the data
// path in the order they came, when some of them are fragmented and the
// others translated in place. An IPv4 UDP flow without DF whose every
// third datagram is larger than lowest_ipv6_mtu (1280) waits in the
// queue before the data path starts, so that its queue's io_uring reads
// it in batches: a datagram translated in place is queued on the ring,
// while the fragments of a later one (engine-made copies) were written at
// once and overtook it (RFC 7915 section 4: the translator fragments;
// nothing lets it reorder, and TCP would take the reordering for a loss).
// Datagram i has IPv4 ID i, which the fragments carry as their
// Identification (RFC 7915 section 5.1.1), and i in its first payload
// byte.
func TestLinkFlowOrderWithFragments(t *testing.T) {
	conn, peer := seqpacketPair(t)
	const n = 60
	frags := 0
	for i := range n {
		size := 100
		if i%3 == 2 {
			size = 1800 // 1856 bytes of IPv6 payload: two fragments
		}
		data := payload(size, byte(i))
		data[0] = byte(i)
		p := ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, data, false), 0, 0)
		ip := header.IPv4(p)
		ip.SetID(uint16(i))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		if _, err := peer.Write(vnetPacket(xlat.Offload{}, p)); err != nil {
			t.Fatal(err)
		}
		if size > 1000 {
			frags += 2
		} else {
			frags++
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := ServeLink(ctx, testEngine(t), tun.NewEndpointConns([]tun.Conn{conn}, 1520, allOffloads), nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	defer func() {
		cancel()
		if err := d.Wait(); err != nil {
			t.Error(err)
		}
	}()
	var seqs []int
	fragmented := 0
	for range frags {
		_, out := readPacket(t, peer)
		if len(out) < header.IPv6MinimumSize+header.IPv6FragmentHeaderSize+header.UDPMinimumSize+1 || out[0]>>4 != 6 {
			t.Fatalf("out: % x", out[:min(len(out), 48)])
		}
		switch next := out[6]; next {
		case header.IPv6FragmentHeader:
			seqs = append(seqs, int(binary.BigEndian.Uint32(out[44:48])))
			fragmented++
		case uint8(header.UDPProtocolNumber):
			seqs = append(seqs, int(out[header.IPv6MinimumSize+header.UDPMinimumSize]))
		default:
			t.Fatalf("out with next header %d", next)
		}
	}
	if fragmented != frags-n*2/3 {
		t.Errorf("%d fragments out, want %d", fragmented, frags-n*2/3)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] < seqs[i-1] {
			t.Fatalf("datagrams out (by IPv4 ID): %v: %d after %d", seqs, seqs[i], seqs[i-1])
		}
	}
	if s := d.LinkStats(); s.WriteErrors != 0 {
		t.Errorf("%d write errors", s.WriteErrors)
	}
}
