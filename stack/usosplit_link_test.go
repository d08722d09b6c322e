package stack

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// TestLinkLoopSplitAllocs: the whole tun path over a socketpair for an
// IPv4 UDP super-packet without DF whose datagrams outgrow the IPv6 side
// (RFC 7915 section 4: cut into its datagrams, each fragmented as alone,
// xlat.splitUSO46): every fragment the engine emits goes out through the
// Handler's Sink, and a super-packet costs no allocation.
func TestLinkLoopSplitAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts of gVisor's pooled PacketBuffers are meaningless under -race")
	}
	const udp = header.UDPProtocolNumber
	const gso, datagrams = 1472, 4
	eng := testEngine(t)
	_, peer := serveLinkLoop(t, eng)
	pkt := ipv4(udp, cli4, srv4, l4(udp, cli4, srv4, payload(datagrams*gso, 3), true), 0, 0)
	in := vnetPacket(xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOUDPL4, HdrLen: 28, GSOSize: gso, CsumStart: 20, CsumOffset: 6}, pkt)
	out := make([]byte, 70000)
	peer.SetReadDeadline(time.Now().Add(time.Minute))
	const frags = 2 * datagrams // each datagram in two fragments of at most 1280 bytes
	round := func() {
		if _, err := peer.Write(in); err != nil {
			t.Fatal(err)
		}
		for i := range frags {
			n, err := peer.Read(out)
			if err != nil {
				t.Fatal(err)
			}
			if p := out[tun.VnetHdrLen:n]; p[0]>>4 != 6 || p[6] != header.IPv6FragmentHeader || len(p) > 1280 {
				t.Fatalf("packet %d of the split: % x", i, p[:min(len(p), 48)])
			}
		}
	}
	round() // the lists' first appends
	if a := testing.AllocsPerRun(100, round); a != 0 {
		t.Errorf("%v allocations per super-packet of %d datagrams", a, datagrams)
	}
	expectNoPacket(t, peer)
	if tot := eng.Totals(); tot.Emitted != 102*frags { // one round, and AllocsPerRun's 1 + 100
		t.Errorf("%d packets emitted, want %d", tot.Emitted, 102*frags)
	}
}
