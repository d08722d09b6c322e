package xlat

import (
	"fmt"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestHostAddressesAreOwn: the host's own IPv4 addresses, which the
// daemon adds to Policy.OwnAddrs in host mode (a DHCP address, docker0, a
// CGN address behind the host, thousands of service addresses), are not
// reachable from a server through the prefix, nor are the directed
// broadcast addresses of their subnets; their neighbours and the clients
// still are, and nothing is translated from them either.
func TestHostAddressesAreOwn(t *testing.T) {
	host := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.5/24"), netip.MustParsePrefix("172.17.0.1/16"),
		netip.MustParsePrefix("100.64.0.1/10"),
	}
	for i := range 1000 { // a Kubernetes node's service addresses, /32 each
		host = append(host, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 32))
	}
	syn := tcpSeg(40000, 22, 0x02, 1, 0, nil, nil)
	cases := []struct {
		name, dst string
		want      Reason // ReasonNone: forwarded
		without   Reason // without the host's addresses
	}{
		{"dhcp-address", v4in6("10.0.0.5"), ReasonOwnAddress, ReasonNone},
		{"docker0", v4in6("172.17.0.1"), ReasonOwnAddress, ReasonNone},
		{"cgn", v4in6("100.64.0.1"), ReasonOwnAddress, ReasonNone},
		{"service-address", v4in6("198.18.3.231"), ReasonOwnAddress, ReasonNone},
		{"docker0-broadcast", v4in6("172.17.255.255"), ReasonBroadcast, ReasonNone},
		{"dhcp-broadcast", v4in6("10.0.0.255"), ReasonBroadcast, ReasonNone},
		{"neighbour", v4in6("10.0.0.6"), ReasonNone, ReasonNone},
		{"past-the-services", v4in6("198.18.3.232"), ReasonNone, ReasonNone},
		{"client", C6, ReasonNone, ReasonNone},
	}
	withHost := newTestWorker(t, func(p *Policy) { p.OwnAddrs = append(p.OwnAddrs, host...) })
	without := newTestWorker(t, nil)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, v := range []struct {
				w    *Worker
				want Reason
			}{{withHost, c.want}, {without, c.without}} {
				_, r, sk := run(v.w, ip6(S6A, c.dst, 64, 6, syn, v6opt{}), nil)
				switch {
				case v.want == ReasonNone && r.Verdict != Forward:
					t.Errorf("with %d own addresses: dropped %v, want forwarded", len(v.w.eng.Config().Policy.OwnAddrs), r.Reason)
				case v.want != ReasonNone && (r.Verdict != Drop || r.Reason != v.want):
					t.Errorf("with %d own addresses: verdict %d %v, want drop %v", len(v.w.eng.Config().Policy.OwnAddrs), r.Verdict, r.Reason, v.want)
				}
				if len(sk.pkts) != 0 {
					t.Errorf("emitted %d packets", len(sk.pkts))
				}
			}
		})
	}
	// From the host's address towards a server: not translated either.
	if _, r, _ := run(withHost, ip4("172.17.0.1", S4A, 64, 17, udpSeg(1, 2, payload(8)), v4opt{}), nil); r.Verdict != Drop || r.Reason != ReasonOwnAddress {
		t.Errorf("4to6 from a host address: verdict %d %v, want drop %v", r.Verdict, r.Reason, ReasonOwnAddress)
	}
	if _, r, _ := run(withHost, ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(8)), v4opt{}), nil); r.Verdict != Forward {
		t.Errorf("4to6 from a client: %v", r.Reason)
	}
}

// BenchmarkHostAddresses: what the host's addresses among the own ones
// cost an ordinary packet: none, a few (their last bytes rarely match,
// last4), and a thousand (every last byte matches: both sorted lists are
// searched for both addresses).
func BenchmarkHostAddresses(b *testing.B) {
	tcp := tcpSeg(443, 33000, header.TCPFlagAck, 5, 1001, nil, payload(64))
	pkts := []struct {
		name string
		pkt  []byte
	}{
		{"tcp/4to6", ip4(C4, S4A, 64, 6, tcp, v4opt{flags: DF})},
		{"tcp/6to4", ip6(S6A, C6, 64, 6, tcp, v6opt{})},
	}
	for _, n := range []int{0, 3, 1000} {
		var host []netip.Prefix
		for i := range n {
			host = append(host, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 24))
		}
		for _, c := range pkts {
			b.Run(fmt.Sprintf("%s/%d", c.name, n), func(b *testing.B) {
				w := newTestWorker(b, func(p *Policy) { p.OwnAddrs = append(p.OwnAddrs, host...) })
				buf := make([]byte, Headroom+len(c.pkt))
				copy(buf[Headroom:], c.pkt)
				orig := append([]byte(nil), buf...)
				sk := &nullSink{}
				b.ReportAllocs()
				for b.Loop() {
					copy(buf, orig)
					if r := w.Process(buf, Headroom, len(buf), nil, sk); r.Verdict != Forward {
						b.Fatalf("dropped: %v", r.Reason)
					}
				}
			})
		}
	}
}
