package xlat

import (
	"encoding/binary"
	"testing"
)

// RFC 7915 section 5.1: a packet whose IPv4 form carries DF and exceeds
// the IPv4 next hop's MTU is refused with a Packet Too Big announcing
// the MTU in IPv6 terms (RFC 8201), and never less than 1280: RFC 8201
// section 4 has IPv6 hosts discard a smaller one (Linux TCP ignores it),
// which would black-hole the path. At 1280 the host's packets translate
// to at most 1260 bytes without DF, which the IPv4 side fragments.
func TestPacketTooBigFloor(t *testing.T) {
	for _, c := range []struct {
		name    string
		mtu4    int
		payload int
		wantMTU uint32
	}{
		{"mtu4-1400", 1400, 1452, 1420},
		{"mtu4-1260", 1260, 1300, 1280},
		{"mtu4-1259", 1259, 1300, 1280},
		{"mtu4-1000", 1000, 1452, 1280},
		{"mtu4-68", 68, 1300, 1280},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newTestWorker(t, func(p *Policy) { p.IPv4MTU = c.mtu4 })
			in := ip6(S6A, C6, 64, 17, udpSeg(42000, 41000, payload(c.payload)), v6opt{})
			_, r, sk := run(w, in, nil)
			if r.Verdict != Drop || r.Reason != ReasonTooBig {
				t.Fatalf("verdict %d %v, want drop %v", r.Verdict, r.Reason, ReasonTooBig)
			}
			expectEmitted(t, sk, ip6(errSrc6, S6A, 64, 58, icmpMsg(2, 0, c.wantMTU, in[:1280-48]), v6opt{}))
		})
	}
	// What a host does with a Packet Too Big of 1280: its 1280-byte
	// packets pass, without DF, for the IPv4 next hop to fragment.
	w := newTestWorker(t, func(p *Policy) { p.IPv4MTU = 1000 })
	got, r, _ := run(w, ip6(S6A, C6, 64, 17, udpSeg(42000, 41000, payload(1280-48)), v6opt{}), nil)
	if r.Verdict != Forward || binary.BigEndian.Uint16(got[6:])&ip4DF != 0 || len(got) != 1260 {
		t.Errorf("a 1280-byte packet: verdict %d %v, length %d, flags %#x", r.Verdict, r.Reason, len(got), got[6])
	}
}
