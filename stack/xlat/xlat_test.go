package xlat

import (
	"os"
	"strings"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

const (
	DF = header.IPv4FlagDontFragment
	MF = header.IPv4FlagMoreFragments
)

var (
	synOpts = []byte{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7} // MSS 1460, SACK ok, TS, NOP, WS 7
	hbhPad  = []byte{60, 0, 1, 4, 0, 0, 0, 0}                                           // Hop-by-Hop, next DestOpt, PadN(4)
	dstPad  = []byte{17, 0, 1, 4, 0, 0, 0, 0}                                           // DestOpt, next UDP, PadN(4)
)

// withID copies the translator-chosen IPv4 Identification of got into
// want and fixes want's header checksum (RFC 7915 section 5.1 leaves the
// ID to the translator).
func withID(want, got []byte) []byte {
	if len(got) < 20 || len(want) < 20 {
		return want
	}
	w := append([]byte(nil), want...)
	copy(w[4:6], got[4:6])
	h := header.IPv4(w)
	h.SetChecksum(0)
	h.SetChecksum(^h.CalculateChecksum())
	return w
}

type xcase struct {
	name   string
	rfc    string
	in     []byte
	want   []byte // nil: expect a drop
	reason Reason
	genID  bool // 6->4: the Identification is the translator's choice
	proto  Proto
}

func runCases(t *testing.T, w *Worker, cases []xcase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, r, _ := run(w, c.in, nil)
			if c.want == nil {
				if r.Verdict != Drop || r.Reason != c.reason {
					t.Fatalf("RFC %s: got verdict %d reason %v, want drop %v", c.rfc, r.Verdict, r.Reason, c.reason)
				}
				return
			}
			if r.Verdict != Forward {
				t.Fatalf("RFC %s: verdict %d reason %v", c.rfc, r.Verdict, r.Reason)
			}
			want := c.want
			if c.genID {
				want = withID(want, got)
			}
			diff(t, "RFC "+c.rfc, got, want)
			checkWellFormed(t, got, true)
			if c.proto != ProtoOther && r.Proto != c.proto {
				t.Errorf("proto %v, want %v", r.Proto, c.proto)
			}
		})
	}
}

func TestBasic(t *testing.T) {
	w := newTestWorker(t, nil)
	pl := payload(100)
	echo := icmpMsg(8, 0, 0x42420007, payload(56))
	echo6 := icmpMsg(128, 0, 0x42420007, payload(56))
	reply6 := icmpMsg(129, 0, 0x42420007, payload(56))
	reply4 := icmpMsg(0, 0, 0x42420007, payload(56))
	big := payload(1261 - 28)
	small := payload(1260 - 28)
	runCases(t, w, []xcase{
		{name: "udp-4to6", rfc: "7915 4.1 4.5; 7757 3.2", proto: ProtoUDP,
			in:   ip4(C4, S4A, 64, 17, udpSeg(40000, 41053, pl), v4opt{id: 0x1234, flags: DF}),
			want: ip6(C6, S6A, 64, 17, udpSeg(40000, 41053, pl), v6opt{})},
		{name: "udp-6to4", rfc: "7915 5.1 5.5", genID: true, proto: ProtoUDP,
			in:   ip6(S6A, C6, 64, 17, udpSeg(41053, 40000, pl), v6opt{}),
			want: ip4(S4A, C4, 64, 17, udpSeg(41053, 40000, pl), v4opt{})},
		{name: "tcp-4to6", rfc: "7915 4.1 4.5", proto: ProtoTCP,
			in:   ip4(C4, S4B, 50, 6, tcpSeg(33000, 443, header.TCPFlagSyn, 1000, 0, synOpts, nil), v4opt{flags: DF}),
			want: ip6(C6, S6B, 50, 6, tcpSeg(33000, 443, header.TCPFlagSyn, 1000, 0, synOpts, nil), v6opt{})},
		{name: "tcp-6to4", rfc: "7915 5.1 5.5", genID: true, proto: ProtoTCP,
			in:   ip6(S6B, C6, 64, 6, tcpSeg(443, 33000, header.TCPFlagSyn|header.TCPFlagAck, 5, 1001, nil, payload(300)), v6opt{}),
			want: ip4(S4B, C4, 64, 6, tcpSeg(443, 33000, header.TCPFlagSyn|header.TCPFlagAck, 5, 1001, nil, payload(300)), v4opt{})},
		{name: "icmp-echo-4to6", rfc: "7915 4.2", proto: ProtoICMP,
			in:   ip4(C4, S4A, 64, 1, echo, v4opt{}),
			want: ip6(C6, S6A, 64, 58, echo6, v6opt{})},
		{name: "icmp-echo-reply-4to6", rfc: "7915 4.2",
			in:   ip4(C4, S4A, 64, 1, reply4, v4opt{}),
			want: ip6(C6, S6A, 64, 58, reply6, v6opt{})},
		{name: "icmp-echo-6to4", rfc: "7915 5.2", genID: true, proto: ProtoICMP,
			in:   ip6(S6A, C6, 64, 58, reply6, v6opt{}),
			want: ip4(S4A, C4, 64, 1, reply4, v4opt{})},
		{name: "icmp-echo-request-6to4", rfc: "7915 5.2", genID: true,
			in:   ip6(S6A, C6, 64, 58, echo6, v6opt{}),
			want: ip4(S4A, C4, 64, 1, echo, v4opt{})},
		{name: "tos-4to6", rfc: "7915 4.1 (Traffic Class)",
			in:   ip4(C4, S4A, 64, 17, udpSeg(41000, 42000, payload(20)), v4opt{tos: 0xb9}),
			want: ip6(C6, S6A, 64, 17, udpSeg(41000, 42000, payload(20)), v6opt{tc: 0xb9})},
		{name: "tclass-6to4", rfc: "7915 5.1 (Type of Service)", genID: true,
			in:   ip6(S6A, C6, 64, 17, udpSeg(42000, 41000, payload(20)), v6opt{tc: 0x2a, fl: 0x12345}),
			want: ip4(S4A, C4, 64, 17, udpSeg(42000, 41000, payload(20)), v4opt{tos: 0x2a})},
		{name: "df-6to4-small", rfc: "7915 5.1 (Flags: <= 1260 DF clear)", genID: true,
			in:   ip6(S6A, C6, 64, 17, udpSeg(42000, 41000, small), v6opt{}),
			want: ip4(S4A, C4, 64, 17, udpSeg(42000, 41000, small), v4opt{})},
		{name: "df-6to4-large", rfc: "7915 5.1 (Flags: > 1260 DF set)", genID: true,
			in:   ip6(S6A, C6, 64, 17, udpSeg(42000, 41000, big), v6opt{}),
			want: ip4(S4A, C4, 64, 17, udpSeg(42000, 41000, big), v4opt{flags: DF})},
		{name: "no-atomic-frag-4to6", rfc: "7915 4.1; 8021",
			in:   ip4(C4, S4A, 64, 17, udpSeg(41000, 42000, payload(200)), v4opt{id: 777}),
			want: ip6(C6, S6A, 64, 17, udpSeg(41000, 42000, payload(200)), v6opt{})},
		{name: "unknown-proto-4to6", rfc: "7915 4.5 (all transports forwarded)",
			in:   ip4(C4, S4A, 64, 253, payload(40), v4opt{}),
			want: ip6(C6, S6A, 64, 253, payload(40), v6opt{})},
		{name: "unknown-proto-6to4", rfc: "7915 5.5", genID: true,
			in:   ip6(S6A, C6, 64, 253, payload(40), v6opt{}),
			want: ip4(S4A, C4, 64, 253, payload(40), v4opt{})},
		{name: "ttl-kept-4to6", rfc: "7915 4.1 (Hop Limit; the host kernel decrements)",
			in:   ip4(C4, S4A, 1, 17, udpSeg(1, 2, nil), v4opt{}),
			want: ip6(C6, S6A, 1, 17, udpSeg(1, 2, nil), v6opt{})},
		{name: "ipv4-options-4to6", rfc: "7915 4.1 (options ignored)",
			in: ip4(C4, S4A, 64, 17, udpSeg(41000, 42000, payload(40)), v4opt{options: header.IPv4OptionsSerializer{
				&header.IPv4SerializableNOPOption{}, &header.IPv4SerializableRouterAlertOption{}}}),
			want: ip6(C6, S6A, 64, 17, udpSeg(41000, 42000, payload(40)), v6opt{})},
		{name: "ipv6-exthdrs-6to4", rfc: "7915 5.1 (skip HBH/DestOpt)", genID: true,
			in:   ip6(S6A, C6, 64, 17, udpSeg(42000, 41000, payload(40)), v6opt{ext: append(append([]byte{}, hbhPad...), dstPad...), extNH: 0}),
			want: ip4(S4A, C4, 64, 17, udpSeg(42000, 41000, payload(40)), v4opt{})},
		{name: "routing-sl0-6to4", rfc: "7915 5.1 (Routing header, Segments Left 0)", genID: true,
			in:   ip6(S6A, C6, 64, 17, udpSeg(42000, 41000, payload(8)), v6opt{ext: []byte{17, 0, 0, 0, 0, 0, 0, 0}, extNH: 43}),
			want: ip4(S4A, C4, 64, 17, udpSeg(42000, 41000, payload(8)), v4opt{})},
	})
}

func TestDrops(t *testing.T) {
	w := newTestWorker(t, nil)
	u := udpSeg(1, 2, payload(20))
	runCases(t, w, []xcase{
		{name: "src4-loopback", rfc: "7915 4.1; 1812 5.3.7", in: ip4("127.0.0.1", S4A, 64, 17, u, v4opt{}), reason: ReasonSrcIllegal},
		{name: "src4-zero", rfc: "1812 5.3.7", in: ip4("0.1.2.3", S4A, 64, 17, u, v4opt{}), reason: ReasonSrcIllegal},
		{name: "src4-multicast", rfc: "1812 5.3.7", in: ip4("224.0.0.1", S4A, 64, 17, u, v4opt{}), reason: ReasonSrcIllegal},
		{name: "src4-classE", rfc: "1812 5.3.7", in: ip4("240.0.0.1", S4A, 64, 17, u, v4opt{}), reason: ReasonSrcIllegal},
		{name: "dst4-broadcast", rfc: "1812 5.3.7", in: ip4(C4, "255.255.255.255", 64, 17, u, v4opt{}), reason: ReasonDstIllegal},
		{name: "dst4-unmapped", rfc: "7757 3; 7755", in: ip4(C4, S4U, 64, 17, u, v4opt{}), reason: ReasonDstUnmapped},
		{name: "src6-linklocal", rfc: "7915 5.1", in: ip6("fe80::1", C6, 64, 17, u, v6opt{}), reason: ReasonSrcIllegal},
		{name: "src6-unspecified", rfc: "7915 5.1", in: ip6("::", C6, 64, 17, u, v6opt{}), reason: ReasonSrcIllegal},
		{name: "src6-loopback", rfc: "7915 5.1", in: ip6("::1", C6, 64, 17, u, v6opt{}), reason: ReasonSrcIllegal},
		{name: "dst6-multicast", rfc: "7915 5.1", in: ip6(S6A, "ff02::1", 64, 17, u, v6opt{}), reason: ReasonDstIllegal},
		{name: "dst6-embeds-multicast", rfc: "7915 5.1; 1812 5.3.7", in: ip6(S6A, v4in6("224.0.0.1"), 64, 17, u, v6opt{}), reason: ReasonDstIllegal},
		{name: "dst6-embeds-loopback", rfc: "7915 5.1; 1812 5.3.7", in: ip6(S6A, v4in6("127.0.0.1"), 64, 17, u, v6opt{}), reason: ReasonDstIllegal},
		{name: "src6-embeds-broadcast", rfc: "7915 5.1; 1812 5.3.7", in: ip6(v4in6("255.255.255.255"), S6A, 64, 17, u, v6opt{}), reason: ReasonSrcIllegal},
		{name: "src6-unmapped", rfc: "7757 3.2", in: ip6(S6U, C6, 64, 17, u, v6opt{}), reason: ReasonSrcUnmapped},
		{name: "dst6-unmapped", rfc: "7915 5.1", in: ip6(S6A, "2001:db8:7::1", 64, 17, u, v6opt{}), reason: ReasonDstUnmapped},
		{name: "icmp4-timestamp", rfc: "7915 4.2 (Types 13/14 dropped)", in: ip4(C4, S4A, 64, 1, icmpMsg(13, 0, 0x10001, make([]byte, 12)), v4opt{}), reason: ReasonICMPType},
		{name: "icmp4-info-request", rfc: "7915 4.2 (Types 15/16 dropped)", in: ip4(C4, S4A, 64, 1, icmpMsg(15, 0, 1, nil), v4opt{}), reason: ReasonICMPType},
		{name: "icmp4-addr-mask", rfc: "7915 4.2 (Types 17/18 dropped)", in: ip4(C4, S4A, 64, 1, icmpMsg(17, 0, 1, make([]byte, 4)), v4opt{}), reason: ReasonICMPType},
		{name: "icmp4-redirect", rfc: "7915 4.2 (Redirect dropped)", in: ip4(R4, S4A, 64, 1, icmpMsg(5, 1, 0, nil), v4opt{}), reason: ReasonICMPType},
		{name: "icmp6-unknown-info", rfc: "7915 5.2 (unknown informational)", in: ip6(S6A, C6, 64, 58, icmpMsg(200, 0, 0x61626364, nil), v6opt{}), reason: ReasonICMPType},
		{name: "icmp6-mld-query", rfc: "7915 5.2 (MLD dropped)", in: ip6(S6A, C6, 64, 58, icmpMsg(130, 0, 0, make([]byte, 16)), v6opt{}), reason: ReasonICMPType},
		{name: "icmp6-neighbor-solicit", rfc: "7915 5.2 (ND dropped)", in: ip6(S6A, C6, 64, 58, icmpMsg(135, 0, 0, make([]byte, 16)), v6opt{}), reason: ReasonICMPType},
		{name: "icmpv6-in-ipv4", rfc: "7915 4.1 (Protocol)", in: ip4(C4, S4A, 64, 58, icmpMsg(128, 0, 0, nil), v4opt{}), reason: ReasonICMPProto},
		{name: "icmpv4-in-ipv6", rfc: "7915 5.1 (Next Header)", in: ip6(S6A, C6, 64, 1, icmpMsg(8, 0, 0, nil), v6opt{}), reason: ReasonICMPProto},
		{name: "ipv4-proto-hopopt", rfc: "7915 4.1 (Next Header)", in: ip4(C4, S4A, 64, 0, payload(16), v4opt{}), reason: ReasonProtoExtHeader},
		{name: "ipv4-proto-fragment", rfc: "7915 4.1 (Next Header)", in: ip4(C4, S4A, 64, 44, payload(16), v4opt{}), reason: ReasonProtoExtHeader},
		{name: "tcp-short", rfc: "robustness", in: ip4(C4, S4A, 64, 6, payload(2), v4opt{nocsum: true}), reason: ReasonMalformed},
		{name: "udp-short-6", rfc: "robustness", in: ip6(S6A, C6, 64, 17, payload(3), v6opt{nocsum: true}), reason: ReasonMalformed},
		{name: "icmp-short", rfc: "robustness", in: ip4(C4, S4A, 64, 1, []byte{3, 3}, v4opt{nocsum: true}), reason: ReasonMalformed},
		{name: "destopt-cut", rfc: "robustness (8200)", in: ip6(S6A, C6, 64, 60, []byte{17, 5}, v6opt{nocsum: true}), reason: ReasonExtHeaders},
	})
}

func TestDeny(t *testing.T) {
	w := newTestWorker(t, func(p *Policy) { p.DenyIPv4 = append(p.DenyIPv4, mustPrefix("192.0.2.0/28")) })
	u := udpSeg(1, 2, payload(20))
	runCases(t, w, []xcase{
		{name: "deny-src4", rfc: "policy deny_ipv4", in: ip4(C4, S4A, 64, 17, u, v4opt{}), reason: ReasonDenied},
		{name: "deny-dst4-via-6", rfc: "policy deny_ipv4", in: ip6(S6A, C6, 64, 17, u, v6opt{}), reason: ReasonDenied},
		{name: "allowed", rfc: "policy deny_ipv4", in: ip4("192.0.2.77", S4A, 64, 17, u, v4opt{}),
			want: ip6("2001:db8:64::c000:24d", S6A, 64, 17, u, v6opt{})},
	})
}

func TestCounters(t *testing.T) {
	w := newTestWorker(t, nil)
	w2 := w.eng.NewWorker()
	in := ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(10)), v4opt{})
	run(w, in, nil)
	run(w2, in, nil)
	run(w2, ip4("127.0.0.1", S4A, 64, 17, udpSeg(1, 2, nil), v4opt{}), nil)
	run(w2, []byte{0x10}, nil)
	tot := w.eng.Totals()
	if got := tot.Packets[Dir46][ProtoUDP]; got != 2 {
		t.Errorf("udp 4to6 packets %d, want 2", got)
	}
	if got := tot.Bytes[Dir46]; got != uint64(2*len(in)) {
		t.Errorf("bytes %d, want %d", got, 2*len(in))
	}
	if tot.Drops[Dir46][ReasonSrcIllegal] != 1 || tot.Drops[Dir46][ReasonVersion] != 1 {
		t.Errorf("drops %v", tot.Drops[Dir46])
	}
	if s := w2.C.Snapshot(); s.Packets[Dir46][ProtoUDP] != 1 {
		t.Errorf("worker snapshot %v", s.Packets)
	}
	for r := range NumReasons {
		if r.String() == "" || r.String() == "invalid" {
			t.Errorf("reason %d has no name", r)
		}
	}
	if NumReasons.String() != "invalid" || NumProtos.String() != "invalid" {
		t.Error("out of range names")
	}
}

func TestTotalsVisit(t *testing.T) {
	w := newTestWorker(t, nil)
	run(w, ip6(S6A, C6, 64, 17, udpSeg(1, 2, nil), v6opt{}), nil)
	run(w, ip6("::1", C6, 64, 17, udpSeg(1, 2, nil), v6opt{}), nil)
	tot := w.eng.Totals()
	seen := map[string]uint64{}
	n := 0
	tot.Visit(func(metric string, labels [][2]string, v uint64) {
		key := metric
		for _, l := range labels {
			key += "," + l[0] + "=" + l[1]
		}
		if _, dup := seen[key]; dup {
			t.Errorf("duplicate series %s", key)
		}
		seen[key] = v
		n++
	})
	if seen["packets,dir=6to4,proto=udp"] != 1 || seen["drops,dir=6to4,reason=src_illegal"] != 1 {
		t.Errorf("series %v", seen)
	}
	if want := int(NumDirs)*(int(NumProtos)+1+int(NumReasons)-1) + 3; n != want {
		t.Errorf("%d series, want %d", n, want)
	}
}

// Workers run in parallel while the configuration is reloaded and the
// counters are read (run with -race).
func TestConcurrentWorkers(t *testing.T) {
	w0 := newTestWorker(t, nil)
	e := w0.eng
	in := ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(32)), v4opt{})
	done := make(chan struct{})
	for range 3 {
		w := e.NewWorker()
		go func() {
			defer func() { done <- struct{}{} }()
			for range 500 {
				run(w, in, nil)
			}
		}()
	}
	cfg := *e.Config()
	for range 50 {
		if err := e.Reload(&cfg); err != nil {
			t.Fatal(err)
		}
		_ = e.Totals()
	}
	for range 3 {
		<-done
	}
	if got := e.Totals().Packets[Dir46][ProtoUDP]; got != 1500 {
		t.Errorf("%d packets counted, want 1500", got)
	}
	if err := e.Reload(&Config{Map: cfg.Map, Policy: Policy{LowestIPv6MTU: 1000}}); err == nil {
		t.Error("lowest IPv6 MTU 1000 accepted")
	}
	if e.Config().Policy.LowestIPv6MTU != 1280 {
		t.Error("a refused reload replaced the configuration")
	}
}

// Translated packets are published in batches and on Flush.
func TestFlush(t *testing.T) {
	w := newTestWorker(t, nil)
	in := ip4(C4, S4A, 64, 17, udpSeg(1, 2, nil), v4opt{})
	buf := make([]byte, Headroom+len(in))
	for i := range flushEvery + 3 {
		copy(buf[Headroom:], in)
		w.Process(buf, Headroom, len(buf), nil, nil)
		want := uint64(0)
		if i+1 >= flushEvery {
			want = flushEvery
		}
		if got := w.eng.Totals().Packets[Dir46][ProtoUDP]; got != want {
			t.Fatalf("after %d packets: %d published, want %d", i+1, got, want)
		}
	}
	w.Flush()
	if got := w.eng.Totals(); got.Packets[Dir46][ProtoUDP] != flushEvery+3 || got.Bytes[Dir46] != uint64((flushEvery+3)*len(in)) {
		t.Errorf("after Flush: %d packets, %d bytes", got.Packets[Dir46][ProtoUDP], got.Bytes[Dir46])
	}
}

// docs/configuration.md documents every drop reason under its name.
func TestReasonsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(doc), "### Drop reasons")
	if !ok {
		t.Fatal("docs/configuration.md has no Drop reasons section")
	}
	for r := ReasonNone + 1; r < NumReasons; r++ {
		if !strings.Contains(table, "\n| `"+r.String()+"` |") {
			t.Errorf("drop reason %q is not in the Drop reasons table of docs/configuration.md", r)
		}
	}
}
