package stack

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/map646/map646/mapping"
	"github.com/map646/map646/stack/xlat"
)

// logLines parses the JSON log lines in b.
func logLines(t *testing.T, b *bytes.Buffer) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		m := map[string]any{}
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

// dropLogHandler is a Handler with the real engine whose log is JSON in
// the returned buffer and whose drop log reads the returned fake clock.
func dropLogHandler(t *testing.T, eng *xlat.Engine) (*Handler, *bytes.Buffer, *int64) {
	t.Helper()
	var logBuf bytes.Buffer
	h := NewHandler(&captureWriter{discard: true}, 1, func() Translator { return eng.NewWorker() },
		slog.New(slog.NewJSONHandler(&logBuf, nil)))
	clock := new(int64)
	*clock = int64(time.Hour) // any second but the first
	h.drops.now = func() int64 { return *clock }
	return h, &logBuf, clock
}

func deliver(h *Handler, pkt []byte) {
	pb := chainedPacket(pkt)
	h.DeliverNetworkPacket(0, pb)
	pb.DecRef()
}

// unmapped4 is a UDP datagram from the client to a public IPv4 address
// without a mapping: the engine drops it (dst_unmapped).
func unmapped4() []byte {
	dst := tcpip.AddrFrom4([4]byte{198, 51, 100, 99})
	return ipv4(header.UDPProtocolNumber, cli4, dst, l4(header.UDPProtocolNumber, cli4, dst, payload(10, 0), false), 0, 0)
}

// TestDropLogRate: a flood of drops writes at most the configured lines in
// each second, each with the packet's fields; the rest are counted, and
// the next line written says how many were suppressed before it.
func TestDropLogRate(t *testing.T) {
	eng := testEngine(t)
	h, logBuf, clock := dropLogHandler(t, eng)
	const rate, flood, seconds = 3, 50, 4
	h.SetDropLog(rate)
	for s := range seconds {
		for range flood {
			deliver(h, unmapped4())
		}
		lines := logLines(t, logBuf)
		logBuf.Reset()
		if len(lines) != rate {
			t.Fatalf("second %d: %d lines, want %d", s, len(lines), rate)
		}
		for i, l := range lines {
			want := map[string]any{
				"level": "WARN", "msg": "packet dropped", "dir": "4to6", "reason": "dst_unmapped",
				"src": clientV4, "dst": "198.51.100.99", "proto": "udp", "sport": 40000.0, "dport": 53.0,
				"len": 38.0, "queue": 0.0, "suppressed": 0.0,
			}
			if i == 0 && s > 0 {
				want["suppressed"] = float64(flood - rate) // the previous second's rest
			}
			for k, v := range want {
				if l[k] != v {
					t.Errorf("second %d line %d: %s = %v, want %v (%v)", s, i, k, l[k], v, l)
				}
			}
		}
		*clock += int64(time.Second)
	}
	if got, want := h.Stats().DropLogSuppressed, uint64(seconds*(flood-rate)); got != want {
		t.Errorf("DropLogSuppressed %d, want %d", got, want)
	}
	if got := eng.Totals().Drops[xlat.Dir46][xlat.ReasonDstUnmapped]; got != seconds*flood {
		t.Errorf("engine counted %d drops, want %d", got, seconds*flood)
	}

	// Off again: drops are only counted.
	h.SetDropLog(0)
	deliver(h, unmapped4())
	if logBuf.Len() != 0 {
		t.Errorf("drop log off, but: %s", logBuf)
	}
}

// TestDropLogOffByDefault: a Handler logs no drops unless asked to.
func TestDropLogOffByDefault(t *testing.T) {
	h, logBuf, _ := dropLogHandler(t, testEngine(t))
	for range 10 {
		deliver(h, unmapped4())
	}
	if logBuf.Len() != 0 {
		t.Errorf("drops logged by default: %s", logBuf)
	}
	if s := h.Stats(); s.DropLogSuppressed != 0 {
		t.Errorf("DropLogSuppressed %d with the drop log off", s.DropLogSuppressed)
	}
}

// TestDropLogAllocs: the drop log costs no allocation per packet while it
// is off, and while it is on but this second's lines are spent; nor does
// it on forwarded packets.
func TestDropLogAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts of gVisor's pooled PacketBuffers are meaningless under -race")
	}
	fwd := ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, payload(100, 1), false), 0, 0)
	for _, tc := range []struct {
		name string
		rate int
		pkt  []byte
	}{
		{"off, dropped", 0, unmapped4()},
		{"on, dropped over the rate", 1, unmapped4()},
		{"on, forwarded", 1, fwd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, logBuf, _ := dropLogHandler(t, testEngine(t))
			h.SetDropLog(tc.rate)
			pb := chainedPacket(tc.pkt, 20)
			defer pb.DecRef()
			h.DeliverNetworkPacket(0, pb) // the one line of this second, if on
			if a := testing.AllocsPerRun(1000, func() { h.DeliverNetworkPacket(0, pb) }); a != 0 {
				t.Errorf("%v allocations per packet", a)
			}
			if n := len(logLines(t, logBuf)); n > 1 {
				t.Errorf("%d lines in one second at rate %d", n, tc.rate)
			}
		})
	}
}

// TestDropLogOriginalPacket: the line describes the packet as it arrived,
// even when the engine rewrote it before dropping it. A hairpinned UDP
// datagram without checksum under udp_zero_checksum = "drop" is dropped in
// the hairpin's second half, after its header has become IPv4.
func TestDropLogOriginalPacket(t *testing.T) {
	p, err := mapping.NewPrefix(netip.MustParsePrefix(prefixV6))
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := mapping.NewTable([]mapping.Entry{
		{IPv4: netip.MustParsePrefix(serverV4 + "/32"), IPv6: netip.MustParsePrefix(serverV6 + "/128")},
		{IPv4: netip.MustParsePrefix("198.51.100.11/32"), IPv6: netip.MustParsePrefix("2001:db8:6::11/128")},
	})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := mapping.NewSnapshot(p, tbl)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := xlat.NewEngine(&xlat.Config{Map: snap, Policy: xlat.Policy{
		Hairpin: xlat.HairpinIntrinsic, UDPZeroChecksum: xlat.UDPZeroDrop,
	}})
	if err != nil {
		t.Fatal(err)
	}
	other := tcpip.AddrFrom16(netip.MustParseAddr("2001:db8:64::c633:640b").As16()) // prefix ‖ 198.51.100.11
	seg := l4(header.UDPProtocolNumber, srv6, other, payload(10, 2), false)
	seg[6], seg[7] = 0, 0
	pkt := ipv6(header.UDPProtocolNumber, srv6, other, seg)

	// What the engine does to the bytes of this packet (only logged: the
	// log must be right either way).
	buf := make([]byte, xlat.Headroom+len(pkt))
	copy(buf[xlat.Headroom:], pkt)
	res := eng.NewWorker().Process(buf, xlat.Headroom, len(buf), nil, nil)
	if res.Verdict != xlat.Drop || res.Reason != xlat.ReasonUDPZeroChecksum {
		t.Fatalf("engine: %+v, want a udp_zero_checksum drop", res)
	}
	t.Logf("engine left the dropped packet's bytes intact: %v", bytes.Equal(buf[xlat.Headroom:], pkt))

	h, logBuf, _ := dropLogHandler(t, eng)
	h.SetDropLog(10)
	deliver(h, pkt)
	lines := logLines(t, logBuf)
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1", len(lines))
	}
	want := map[string]any{"dir": "6to4", "reason": "udp_zero_checksum", "src": serverV6,
		"dst": "2001:db8:64::c633:640b", "proto": "udp", "sport": 40000.0, "dport": 53.0}
	for k, v := range want {
		if lines[0][k] != v {
			t.Errorf("%s = %v, want %v (%v)", k, lines[0][k], v, lines[0])
		}
	}
}

// TestDescribePacket: what a line says about packets of every shape, and
// only what the head shows.
func TestDescribePacket(t *testing.T) {
	a4 := func(s string) tcpip.Address { return tcpip.AddrFrom4(netip.MustParseAddr(s).As4()) }
	a6 := func(s string) tcpip.Address { return tcpip.AddrFrom16(netip.MustParseAddr(s).As16()) }
	udp4 := ipv4(header.UDPProtocolNumber, a4("192.0.2.1"), a4("198.51.100.1"), l4(header.UDPProtocolNumber, a4("192.0.2.1"), a4("198.51.100.1"), nil, false), 0, 0)
	icmp4 := ipv4(header.ICMPv4ProtocolNumber, a4("192.0.2.1"), a4("198.51.100.1"), l4(header.ICMPv4ProtocolNumber, a4("192.0.2.1"), a4("198.51.100.1"), nil, false), 0, 0)
	frag4 := ipv4(header.TCPProtocolNumber, a4("192.0.2.1"), a4("198.51.100.1"), payload(16, 0), 0, 24)
	// IPv4 with 4 bytes of options (IHL 6) before the TCP header.
	opt4 := ipv4(header.TCPProtocolNumber, a4("192.0.2.1"), a4("198.51.100.1"), append([]byte{1, 1, 1, 0}, l4(header.TCPProtocolNumber, a4("192.0.2.1"), a4("198.51.100.1"), nil, false)...), 0, 0)
	opt4[0] = 0x46
	tcp6 := ipv6(header.TCPProtocolNumber, a6("2001:db8::1"), a6("2001:db8::2"), l4(header.TCPProtocolNumber, a6("2001:db8::1"), a6("2001:db8::2"), nil, false))
	// Hop-by-Hop (8 bytes), then a first Fragment header, then ICMPv6.
	ext6 := ipv6(0, a6("2001:db8::1"), a6("ff02::1"), append([]byte{
		44, 0, 1, 4, 0, 0, 0, 0, // Hop-by-Hop: next Fragment, PadN
		58, 0, 0, 1, 0, 0, 0, 9, // Fragment: offset 0, M
		143, 0, 0, 0}, make([]byte, 4)...))
	nonFirst6 := ipv6(44, a6("2001:db8::1"), a6("2001:db8::2"), append([]byte{17, 0, 0, 0x50, 0, 0, 0, 9}, payload(8, 0)...))
	deep6 := ipv6(0, a6("2001:db8::1"), a6("2001:db8::2"), append([]byte{6, 20}, make([]byte, 200)...)) // HbH longer than the head

	for _, tc := range []struct {
		name string
		pkt  []byte
		want string
	}{
		{"udp4", udp4, "src=192.0.2.1 dst=198.51.100.1 proto=udp sport=40000 dport=53"},
		{"icmp4", icmp4, "src=192.0.2.1 dst=198.51.100.1 proto=icmp icmp_type=8 icmp_code=0"},
		{"non-first fragment", frag4, "src=192.0.2.1 dst=198.51.100.1 proto=tcp frag_offset=24"},
		{"ipv4 options", opt4, "src=192.0.2.1 dst=198.51.100.1 proto=tcp sport=40000 dport=80"},
		{"tcp6", tcp6, "src=2001:db8::1 dst=2001:db8::2 proto=tcp sport=40000 dport=80"},
		{"ext headers", ext6, "src=2001:db8::1 dst=ff02::1 proto=icmpv6 frag_offset=0 icmp_type=143 icmp_code=0"},
		{"ipv6 non-first fragment", nonFirst6, "src=2001:db8::1 dst=2001:db8::2 proto=udp frag_offset=80"},
		{"chain beyond the head", deep6, "src=2001:db8::1 dst=2001:db8::2 proto=tcp"},
		{"short ipv4", udp4[:19], "version=4"},
		{"short ipv6", tcp6[:39], "version=6"},
		{"ports cut off", udp4[:22], "src=192.0.2.1 dst=198.51.100.1 proto=udp"},
		{"not ip", []byte{0x20, 1, 2}, "version=2"},
		{"empty", nil, ""},
	} {
		head := tc.pkt[:min(len(tc.pkt), dropLogHead)]
		var b bytes.Buffer
		slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == "time" || a.Key == "level" || a.Key == "msg" {
				return slog.Attr{}
			}
			return a
		}})).LogAttrs(t.Context(), slog.LevelInfo, "", describePacket(nil, head)...)
		if got := strings.TrimSpace(b.String()); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}

	// Hostile heads of any length and content: never out of bounds.
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		p := make([]byte, r.IntN(dropLogHead+1))
		for i := range p {
			p[i] = byte(r.Uint32())
		}
		if len(p) > 0 {
			p[0] = p[0]&0x0f | []byte{0x40, 0x60}[r.IntN(2)]
		}
		if len(p) > 6 && r.IntN(2) == 0 {
			p[6] = []byte{0, 43, 44, 60}[r.IntN(4)]
		}
		describePacket(nil, p)
	}
}

// TestLinkChatter: the host's own MLD, router and neighbour solicitations
// on the link are counted as link chatter, never reach the engine (no drop
// counted, nothing logged); other link-local traffic still does.
func TestLinkChatter(t *testing.T) {
	eng := testEngine(t)
	h, logBuf, _ := dropLogHandler(t, eng)
	h.SetDropLog(100)
	a6 := func(s string) tcpip.Address { return tcpip.AddrFrom16(netip.MustParseAddr(s).As16()) }
	icmp6 := func(typ byte) []byte { return []byte{typ, 0, 0, 0, 0, 0, 0, 0} }
	chatter := [][]byte{
		ipv6(header.ICMPv6ProtocolNumber, a6("::"), a6("ff02::16"), icmp6(143)),        // MLDv2 report from ::
		ipv6(header.ICMPv6ProtocolNumber, a6("fe80::1"), a6("ff02::2"), icmp6(133)),    // router solicitation
		ipv6(header.ICMPv6ProtocolNumber, a6("::"), a6("ff02::1:ff00:1"), icmp6(135)),  // DAD neighbour solicitation
		ipv6(header.ICMPv6ProtocolNumber, a6("febf::1"), a6("ff02::1"), icmp6(143)),    // last of fe80::/10
		ipv6(header.UDPProtocolNumber, a6("fe80::1"), a6("ff02::fb"), make([]byte, 8)), // mDNS
	}
	notChatter := [][]byte{
		ipv6(header.ICMPv6ProtocolNumber, a6("fe80::1"), a6("2001:db8:64::c000:202"), icmp6(128)), // link-local to unicast
		ipv6(header.ICMPv6ProtocolNumber, a6("fec0::1"), a6("ff02::1"), icmp6(143)),               // outside fe80::/10
		ipv6(header.ICMPv6ProtocolNumber, a6("::1"), a6("ff02::1"), icmp6(143)),                   // loopback source
		ipv6(header.ICMPv6ProtocolNumber, a6("fe80::1"), a6("ff05::2"), icmp6(143)),               // site scope
	}
	for _, p := range chatter {
		deliver(h, p)
	}
	if s := h.Stats(); s.LinkChatter != uint64(len(chatter)) {
		t.Errorf("LinkChatter %d, want %d", s.LinkChatter, len(chatter))
	}
	var drops uint64
	tot := eng.Totals()
	for r := range xlat.NumReasons {
		drops += tot.Drops[xlat.Dir64][r]
	}
	if drops != 0 || logBuf.Len() != 0 {
		t.Errorf("link chatter reached the engine: %d drops, log %q", drops, logBuf)
	}
	for _, p := range notChatter {
		deliver(h, p)
	}
	tot = eng.Totals()
	if got := tot.Drops[xlat.Dir64][xlat.ReasonSrcIllegal] + tot.Drops[xlat.Dir64][xlat.ReasonDstIllegal]; got != uint64(len(notChatter)) {
		t.Errorf("%d of %d link-local or multicast packets that are not chatter reached the engine", got, len(notChatter))
	}
	if s := h.Stats(); s.LinkChatter != uint64(len(chatter)) {
		t.Errorf("LinkChatter %d after other traffic, want %d", s.LinkChatter, len(chatter))
	}
}

// BenchmarkHandlerDropLog: the drop log's cost per packet, off and on, for
// dropped packets over the rate and for forwarded ones (real engine, the
// copy path).
func BenchmarkHandlerDropLog(b *testing.B) {
	fwd := ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, payload(100, 1), false), 0, 0)
	for _, bc := range []struct {
		name string
		rate int
		pkt  []byte
	}{
		{"dropped/off", 0, unmapped4()},
		{"dropped/on-over-rate", 1, unmapped4()},
		{"forwarded/off", 0, fwd},
		{"forwarded/on", 1, fwd},
	} {
		b.Run(bc.name, func(b *testing.B) {
			eng := testEngine(b)
			h := NewHandler(&captureWriter{discard: true}, 1, func() Translator { return eng.NewWorker() }, slog.New(slog.DiscardHandler))
			h.SetDropLog(bc.rate)
			pb := chainedPacket(bc.pkt)
			defer pb.DecRef()
			b.ReportAllocs()
			for b.Loop() {
				h.DeliverNetworkPacket(0, pb)
			}
		})
	}
}

// TestDropLogAllowConcurrent: queues sharing the limit never write more
// than the rate in a second between them, nor fewer while drops last.
func TestDropLogAllowConcurrent(t *testing.T) {
	const rate, queues, each = 7, 4, 500
	var l dropLog
	var clock atomic.Int64
	clock.Store(int64(time.Hour))
	l.now = clock.Load
	for sec := range 3 {
		var allowed atomic.Int64
		var wg sync.WaitGroup
		for range queues {
			wg.Go(func() {
				for range each {
					if l.allow(rate) {
						allowed.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if n := allowed.Load(); n != rate {
			t.Errorf("second %d: %d lines allowed, want %d", sec, n, rate)
		}
		clock.Add(int64(time.Second))
	}
}
