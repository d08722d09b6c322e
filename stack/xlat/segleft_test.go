package xlat

import "testing"

// A Routing header with Segments Left is answered with Parameter Problem
// (RFC 7915 section 5.1) only when the packet's addresses would be
// translated: an unmapped, possibly spoofed, source or a destination
// neither in the prefix nor in the EAM table gets no error, and the drop
// names the address check that refused it.
func TestSegmentsLeftAnsweredOnlyForTranslatableAddresses(t *testing.T) {
	rh := []byte{17, 0, 0, 1, 0, 0, 0, 0} // next UDP, type 0, Segments Left 1
	for _, c := range []struct {
		name, src, dst string
		reason         Reason
		emitted        int
	}{
		{"neither-mapped", R6X, "2001:db8:eeee::2", ReasonDstUnmapped, 0},
		{"unmapped-source", R6X, C6, ReasonSrcUnmapped, 0},
		{"unmapped-destination", S6A, "2001:db8:eeee::2", ReasonDstUnmapped, 0},
		{"source-in-prefix", C6, v4in6("192.0.2.3"), ReasonSpoofed, 0},
		{"mapped", S6A, C6, ReasonSegmentsLeft, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newTestWorker(t, nil)
			in := ip6(c.src, c.dst, 64, 17, udpSeg(1, 2, payload(8)), v6opt{ext: rh, extNH: 43})
			_, r, sk := run(w, in, nil)
			if r.Verdict != Drop || r.Reason != c.reason {
				t.Errorf("verdict %d %v, want drop %v", r.Verdict, r.Reason, c.reason)
			}
			if len(sk.pkts) != c.emitted {
				t.Errorf("emitted %d errors, want %d", len(sk.pkts), c.emitted)
			}
			if c.emitted == 1 {
				expectEmitted(t, sk, ip6(errSrc6, c.src, 64, 58, icmpMsg(4, 0, 43, in), v6opt{}))
			}
		})
	}
}
