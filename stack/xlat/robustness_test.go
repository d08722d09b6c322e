package xlat

import (
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The inputs of the conformance suite's malformed-4to6 and malformed-6to4
// cases (cases/public/70_robustness.py): each is dropped with the named
// reason or translated into a well-formed packet, and the worker keeps
// translating afterwards.
func TestRobustness(t *testing.T) {
	w := newTestWorker(t, nil)
	udpLong := ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(8)), v4opt{})
	binary.BigEndian.PutUint16(udpLong[24:], 400) // UDP length > datagram
	tcpLongHdr := ip4(C4, S4A, 64, 6, tcpSeg(1, 2, 0, 0, 0, nil, nil), v4opt{})
	tcpLongHdr[32] = 0xf0 // data offset 60 > segment
	inner := ip4(S4A, C4, 64, 17, udpSeg(2, 1, payload(8)), v4opt{})
	badIHL := append([]byte(nil), inner...)
	badIHL[0] = 0x4f
	inner6 := ip6(C6, S6A, 64, 17, udpSeg(1, 2, payload(8)), v6opt{})
	for _, c := range []struct {
		name   string
		in     []byte
		reason Reason // ReasonNone: translated
	}{
		{"udp-length-too-big", udpLong, ReasonNone},
		{"tcp-offset-past-end", tcpLongHdr, ReasonMalformed},
		{"tcp-2-bytes", ip4(C4, S4A, 64, 6, []byte{0, 1}, v4opt{nocsum: true}), ReasonMalformed},
		{"icmp-2-bytes", ip4(C4, S4A, 64, 1, []byte{3, 3}, v4opt{nocsum: true}), ReasonMalformed},
		{"udp-1-byte", ip4(C4, S4A, 64, 17, []byte{0}, v4opt{nocsum: true}), ReasonMalformed},
		{"inner-header-cut", ip4(R4, S4A, 64, 1, icmpMsg(3, 1, 0, inner[:10]), v4opt{}), ReasonICMPInner},
		{"inner-ihl-60", ip4(R4, S4A, 64, 1, icmpMsg(3, 1, 0, badIHL), v4opt{}), ReasonICMPInner},
		{"frag-needed-no-inner", ip4(R4, S4A, 64, 1, icmpMsg(3, 4, 0xffff, nil), v4opt{}), ReasonICMPInner},
		{"ipv4-total-length-short", append(ip4(C4, S4A, 64, 17, udpSeg(1, 2, nil), v4opt{})[:18], 0, 0), ReasonMalformed},
		{"destopt-cut", ip6(S6A, C6, 64, 60, []byte{17, 5}, v6opt{nocsum: true}), ReasonExtHeaders},
		{"fraghdr-cut", ip6(S6A, C6, 64, 44, []byte{17, 0, 0}, v6opt{nocsum: true}), ReasonExtHeaders},
		{"icmpv6-1-byte", ip6(S6A, C6, 64, 58, []byte{1}, v6opt{nocsum: true}), ReasonMalformed},
		{"udp6-3-bytes", ip6(S6A, C6, 64, 17, []byte{0, 1, 0}, v6opt{nocsum: true}), ReasonMalformed},
		{"inner6-cut", ip6(S6A, C6, 64, 58, icmpMsg(1, 4, 0, inner6[:20]), v6opt{}), ReasonICMPInner},
		{"ptb-mtu-0", ip6(S6A, C6, 64, 58, icmpMsg(2, 0, 0, inner6), v6opt{}), ReasonNone},
		{"frag-offset-8191", ip6(S6A, C6, 64, 44, nil, v6opt{nocsum: true, extNH: 44, ext: append(fragHdr(17, 8191*8, true, 9), payload(8)...)}), ReasonMalformed},
		{"ipv6-payload-length-0", ip6(S6A, C6, 64, 59, nil, v6opt{}), ReasonMalformed},
		{"ipv6-hbh-chain-too-long", ip6(S6A, C6, 64, 0, nil, v6opt{nocsum: true, extNH: 0, ext: hbhChain(9)}), ReasonExtHeaders},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, r, _ := run(w, c.in, nil)
			if c.reason != ReasonNone {
				if r.Verdict != Drop || r.Reason != c.reason {
					t.Errorf("verdict %d reason %v, want drop %v", r.Verdict, r.Reason, c.reason)
				}
			} else if r.Verdict != Forward {
				t.Errorf("dropped: %v", r.Reason)
			} else {
				checkWellFormed(t, out, false)
			}
			probe := ip4(C4, S4A, 64, 17, udpSeg(1, 2, []byte("probe")), v4opt{})
			if _, r, _ := run(w, probe, nil); r.Verdict != Forward {
				t.Error("stopped translating after malformed input")
			}
		})
	}
	// The PTB with MTU 0 becomes Fragmentation Needed with the IPv4
	// minimum rather than an underflow.
	out, _, _ := run(w, ip6(S6A, C6, 64, 58, icmpMsg(2, 0, 0, inner6), v6opt{}), nil)
	if h := header.IPv4(out); len(out) < 28 || binary.BigEndian.Uint16(out[h.HeaderLength()+6:]) != 68 {
		t.Errorf("PTB MTU 0 became %x", out[20:28])
	}
}

// hbhChain is n Hop-by-Hop headers in a row, the last one pointing to No
// Next Header.
func hbhChain(n int) []byte {
	var b []byte
	for i := range n {
		nh := byte(0)
		if i == n-1 {
			nh = 59
		}
		b = append(b, nh, 0, 1, 4, 0, 0, 0, 0)
	}
	return b
}
