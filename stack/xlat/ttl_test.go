package xlat

import "testing"

// TestDecrementTTL: with Policy.DecrementTTL (NIC mode, no kernel routing
// around the translator) the translator decrements TTL / Hop Limit and
// answers its expiry with Time Exceeded (RFC 7915 sections 4.1, 5.1);
// without it (a tun: the kernel decrements) both pass unchanged.
func TestDecrementTTL(t *testing.T) {
	for _, dec := range []bool{false, true} {
		w := newTestWorker(t, func(p *Policy) { p.DecrementTTL = dec })
		want := byte(64)
		if dec {
			want = 63
		}
		in4 := ip4(C4, S4A, 64, 17, udpSeg(41000, 42000, payload(8)), v4opt{})
		if out, r, _ := run(w, in4, nil); r.Verdict != Forward || out[7] != want {
			t.Errorf("decrement=%v: 4->6 verdict %v reason %v, hop limit %d, want %d", dec, r.Verdict, r.Reason, out[7], want)
		}
		in6 := ip6(S6A, C6, 64, 17, udpSeg(42000, 41000, payload(8)), v6opt{})
		if out, r, _ := run(w, in6, nil); r.Verdict != Forward || out[8] != want {
			t.Errorf("decrement=%v: 6->4 verdict %v reason %v, TTL %d, want %d", dec, r.Verdict, r.Reason, out[8], want)
		}
	}

	// Translated ICMP errors are forwarded too: their outer TTL counts
	// the hop, the quoted packet's does not change.
	w := newTestWorker(t, func(p *Policy) { p.DecrementTTL = true })
	quoted6 := ip6(C6, S6A, 5, 17, udpSeg(41000, 42000, payload(8)), v6opt{})
	err6 := ip6(S6A, C6, 64, 58, icmpMsg(1, 4, 0, quoted6), v6opt{}) // port unreachable
	if out, r, _ := run(w, err6, nil); r.Verdict != Forward || out[8] != 63 || out[20+8+8] != 5 {
		t.Errorf("6->4 error: verdict %v reason %v", r.Verdict, r.Reason)
	}
	quoted4 := ip4(S4A, C4, 5, 17, udpSeg(42000, 41000, payload(8)), v4opt{})
	err4 := ip4(C4, S4A, 64, 1, icmpMsg(3, 3, 0, quoted4), v4opt{})
	if out, r, _ := run(w, err4, nil); r.Verdict != Forward || out[7] != 63 || out[40+8+7] != 5 {
		t.Errorf("4->6 error: verdict %v reason %v", r.Verdict, r.Reason)
	}

	in4 := ip4(C4, S4A, 1, 17, udpSeg(41000, 42000, payload(8)), v4opt{})
	_, r, sk := run(w, in4, nil)
	if r.Reason != ReasonTTLExceeded {
		t.Fatalf("4->6 TTL 1: reason %v", r.Reason)
	}
	expectEmitted(t, sk, ip4(errSrc4, C4, 64, 1, icmpMsg(11, 0, 0, in4), v4opt{}))

	in6 := ip6(S6A, C6, 1, 17, udpSeg(42000, 41000, payload(8)), v6opt{})
	_, r, sk = run(w, in6, nil)
	if r.Reason != ReasonTTLExceeded {
		t.Fatalf("6->4 hop limit 1: reason %v", r.Reason)
	}
	expectEmitted(t, sk, ip6(errSrc6, S6A, 64, 58, icmpMsg(3, 0, 0, in6), v6opt{}))
}

// TestDecrementTTLHairpin: with DecrementTTL a hairpinned packet costs the
// translator's hop and the turn's, two in all, and one with fewer to spare
// is answered with Time Exceeded.
func TestDecrementTTLHairpin(t *testing.T) {
	u := udpSeg(42000, 42001, payload(20))
	for _, c := range []struct {
		in, out uint8 // hop limits; out 0: dropped
	}{{64, 62}, {3, 1}, {2, 0}} {
		w := newTestWorker(t, func(p *Policy) { p.DecrementTTL = true })
		out, r, sk := run(w, ip6(S6A, v4in6(S4B), c.in, 17, u, v6opt{}), nil)
		if c.out == 0 {
			if r.Verdict != Drop || r.Reason != ReasonHopLimit || len(sk.pkts) != 1 {
				t.Errorf("hop limit %d: verdict %v %v, %d emitted; want a drop with Time Exceeded", c.in, r.Verdict, r.Reason, len(sk.pkts))
			}
			continue
		}
		if r.Verdict != Forward || out[7] != c.out {
			t.Errorf("hop limit %d: verdict %v %v, out %d, want %d", c.in, r.Verdict, r.Reason, out[7], c.out)
		}
	}
}

// A hairpinned ICMPv6 error loses the same two hops as any hairpinned
// packet with DecrementTTL (RFC 7915 sections 4.3 and 5.3 translate the
// error like a packet; the hairpin's second pass counts no hop).
func TestDecrementTTLHairpinError(t *testing.T) {
	quoted := ip6(v4in6(S4A), S6B, 60, 17, udpSeg(42000, 42001, payload(20)), v6opt{})
	for _, c := range []struct{ in, out uint8 }{{64, 62}, {3, 1}} {
		w := newTestWorker(t, func(p *Policy) { p.DecrementTTL = true })
		out, r, _ := run(w, ip6(S6B, v4in6(S4A), c.in, 58, icmpMsg(1, 4, 0, quoted), v6opt{}), nil)
		if r.Verdict != Forward || out[7] != c.out {
			t.Errorf("hop limit %d: verdict %v %v, out %d, want %d", c.in, r.Verdict, r.Reason, out[7], c.out)
		}
	}
}
