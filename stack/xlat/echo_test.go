package xlat

import (
	"net/netip"
	"testing"
)

// Issue 10, "a translator you can ping", the IPv6 side: the own IPv4
// address inside the prefix answers any IPv6 host (mapped or not), and the
// own IPv6 (interface) addresses answer when traffic to them reaches the
// engine; nothing else to them is translated, and no reply goes to a
// spoofed or own source.
func TestEchoOwnIPv6(t *testing.T) {
	const self4 = "203.0.113.65"
	const own6 = "2001:db8:ffff::1"
	pol := func(p *Policy) {
		p.ICMPSourcePool = nil
		p.IPv4Address = netip.MustParseAddr(self4)
		p.OwnAddrs = []netip.Prefix{mustPrefix("203.0.113.1/28"), mustPrefix(own6 + "/64")}
	}
	echo6 := icmpMsg(128, 0, 0x42420009, payload(40))
	reply6 := icmpMsg(129, 0, 0x42420009, payload(40))
	bad := ip6(R6X, own6, 64, 58, echo6, v6opt{})
	bad[len(bad)-1] ^= 1
	frag := ip6(R6X, own6, 64, 58, echo6, v6opt{ext: fragHdr(58, 0, true, 7), extNH: 44})
	for _, c := range []struct {
		name   string
		in     []byte
		want   []byte // the reply; nil: dropped with reason
		reason Reason
	}{
		{"in-prefix-from-mapped-server", ip6(S6A, v4in6(self4), 64, 58, echo6, v6opt{}), ip6(v4in6(self4), S6A, 64, 58, reply6, v6opt{}), 0},
		{"in-prefix-from-unmapped-host", ip6(R6X, v4in6(self4), 64, 58, echo6, v6opt{tc: 0xb8}), ip6(v4in6(self4), R6X, 64, 58, reply6, v6opt{tc: 0xb8}), 0},
		{"own6-from-mapped-server", ip6(S6A, own6, 64, 58, echo6, v6opt{}), ip6(own6, S6A, 64, 58, reply6, v6opt{}), 0},
		{"own6-from-unmapped-host", ip6(R6X, own6, 3, 58, echo6, v6opt{}), ip6(own6, R6X, 64, 58, reply6, v6opt{}), 0},
		{"own6-from-prefix", ip6(C6, own6, 64, 58, echo6, v6opt{}), nil, ReasonSpoofed},
		{"own6-from-own6", ip6(own6, own6, 64, 58, echo6, v6opt{}), nil, ReasonOwnAddress},
		{"own6-udp", ip6(S6A, own6, 64, 17, udpSeg(1, 7, payload(8)), v6opt{}), nil, ReasonOwnAddress},
		{"own6-echo-reply", ip6(S6A, own6, 64, 58, reply6, v6opt{}), nil, ReasonOwnAddress},
		{"own6-error", ip6(S6A, own6, 64, 58, icmpMsg(1, 4, 0, innerV6(20)), v6opt{}), nil, ReasonOwnAddress},
		{"own6-fragment", frag, nil, ReasonOwnAddress},
		{"own6-bad-checksum", bad, nil, ReasonICMPChecksum},
		{"in-prefix-udp-from-unmapped", ip6(R6X, v4in6(self4), 64, 17, udpSeg(1, 7, payload(8)), v6opt{}), nil, ReasonSrcUnmapped},
		{"other-interface-address", ip6(S6A, "2001:db8:ffff::2", 64, 58, echo6, v6opt{}), nil, ReasonDstUnmapped},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newTestWorker(t, pol)
			_, r, sk := run(w, c.in, nil)
			if c.want == nil {
				if r.Verdict != Drop || r.Reason != c.reason || len(sk.pkts) != 0 {
					t.Fatalf("verdict %d %v, %d emitted; want drop %v and nothing", r.Verdict, r.Reason, len(sk.pkts), c.reason)
				}
				return
			}
			if r.Verdict != Consumed || r.Proto != ProtoICMP || r.Dir != Dir64 {
				t.Fatalf("verdict %d %v proto %v, want the reply emitted", r.Verdict, r.Reason, r.Proto)
			}
			expectEmitted(t, sk, c.want)
			checkWellFormed(t, sk.pkts[0], true)
		})
	}

	// The replies share the rate limit of the translator's own errors.
	w := newTestWorker(t, func(p *Policy) { pol(p); p.ICMPRate, p.ICMPBurst = 1, 1 })
	w.now = func() int64 { return 0 }
	in := ip6(R6X, own6, 64, 58, echo6, v6opt{})
	if _, r, sk := run(w, in, nil); r.Verdict != Consumed || len(sk.pkts) != 1 {
		t.Fatalf("first echo: verdict %d %v", r.Verdict, r.Reason)
	}
	if _, r, sk := run(w, in, nil); r.Verdict != Drop || r.Reason != ReasonOwnAddress || len(sk.pkts) != 0 || w.C.RateLimited.Load() != 1 {
		t.Errorf("second echo within the limit: verdict %d %v, %d emitted, %d limited", r.Verdict, r.Reason, len(sk.pkts), w.C.RateLimited.Load())
	}
}

// With an icmp_source_pool, the translator's own errors come from the
// pool's first address (the hop a traceroute shows): it is the
// translator's own too, answers ping from both sides, and nothing is
// translated to it.
func TestEchoErrorSource(t *testing.T) {
	const errSrc4 = "203.0.113.65" // the first usable address of POOL
	echo := icmpMsg(8, 0, 0x4242000b, payload(24))
	reply := icmpMsg(0, 0, 0x4242000b, payload(24))
	echo6 := icmpMsg(128, 0, 0x4242000b, payload(24))
	reply6 := icmpMsg(129, 0, 0x4242000b, payload(24))
	for _, c := range []struct {
		name   string
		in     []byte
		want   []byte
		reason Reason
	}{
		{"4to6", ip4(C4, errSrc4, 64, 1, echo, v4opt{}), ip4(errSrc4, C4, 64, 1, reply, v4opt{}), 0},
		{"6to4-from-server", ip6(S6A, v4in6(errSrc4), 64, 58, echo6, v6opt{}), ip6(v4in6(errSrc4), S6A, 64, 58, reply6, v6opt{}), 0},
		{"6to4-from-unmapped", ip6(R6X, v4in6(errSrc4), 64, 58, echo6, v6opt{}), ip6(v4in6(errSrc4), R6X, 64, 58, reply6, v6opt{}), 0},
		{"4to6-udp", ip4(C4, errSrc4, 64, 17, udpSeg(1, 7, payload(8)), v4opt{}), nil, ReasonOwnAddress},
		{"other-pool-address", ip4(C4, "203.0.113.66", 64, 1, echo, v4opt{}), nil, ReasonDstUnmapped},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newTestWorker(t, nil)
			_, r, sk := run(w, c.in, nil)
			if c.want == nil {
				if r.Verdict != Drop || r.Reason != c.reason || len(sk.pkts) != 0 {
					t.Fatalf("verdict %d %v, %d emitted; want drop %v and nothing", r.Verdict, r.Reason, len(sk.pkts), c.reason)
				}
				return
			}
			if r.Verdict != Consumed {
				t.Fatalf("verdict %d %v, want the reply emitted", r.Verdict, r.Reason)
			}
			expectEmitted(t, sk, c.want)
		})
	}
}

// A pool that overlaps the mappings (a misconfiguration, but a valid one)
// does not take the first pool address from the server mapped to it.
func TestErrorSourceMappedStaysServer(t *testing.T) {
	w := newTestWorker(t, func(p *Policy) { p.ICMPSourcePool = []netip.Prefix{mustPrefix(S4A + "/32")} })
	out, r, _ := run(w, ip4(C4, S4A, 64, 1, icmpMsg(8, 0, 1, payload(8)), v4opt{}), nil)
	if r.Verdict != Forward || len(out) < 40 || out[0]>>4 != 6 {
		t.Errorf("echo to a mapped server that is also the first pool address: verdict %d %v", r.Verdict, r.Reason)
	}
}
