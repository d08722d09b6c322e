package stack

import (
	"bytes"
	"log/slog"
	"slices"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/map646/map646/mapping"
	"github.com/map646/map646/stack/xlat"
)

// FuzzHandlerRehearsal: whatever packets a queue forwarded, dropped or
// answered with an ICMP error before it went idle (fragments, errors,
// hairpins, packets the engine emits fragments or errors for), its
// rehearsals write nothing and count nothing: no packet to the link, no
// link counter, no engine total, no per-mapping count, no drop-log line.
// That holds also after the configuration changed under the kept samples
// (an MTU that now makes the sample too big, hairpinning turned off), as a
// reload or a NIC's MTU change does.
func FuzzHandlerRehearsal(f *testing.F) {
	const udp, tcp, icmp4 = header.UDPProtocolNumber, header.TCPProtocolNumber, header.ICMPv4ProtocolNumber
	srv4b := tcpip.AddrFrom4([4]byte{198, 51, 100, 11})
	srv6b := tcpip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 6, 15: 0x11})
	big := ipv4(udp, cli4, srv4, l4(udp, cli4, srv4, payload(1400, 1), false), 0, 0)
	seeds := [][]byte{
		ipv4(udp, cli4, srv4, l4(udp, cli4, srv4, payload(56, 1), false), 0, 0),
		ipv6(udp, srv6, cli6, l4(udp, srv6, cli6, payload(56, 2), false)),
		ipv4(tcp, cli4, srv4, l4(tcp, cli4, srv4, payload(100, 3), false), header.IPv4FlagDontFragment, 0),
		ipv4(udp, cli4, srv4, l4(udp, cli4, srv4, payload(64, 4), false), header.IPv4FlagMoreFragments, 0),
		ipv4(udp, cli4, srv4, payload(40, 5), 0, 24),
		ipv4(icmp4, cli4, srv4, append([]byte{8, 0, 0, 0, 0, 1, 0, 1}, payload(32, 6)...), 0, 0),
		big,
		ipv6(udp, srv6, srv6b, l4(udp, srv6, srv6b, payload(56, 7), false)), // a hairpin
		ipv4(udp, cli4, srv4b, l4(udp, cli4, srv4b, payload(56, 8), false), 0, 0),
	}
	for i, s := range seeds {
		f.Add(s, seeds[(i+1)%len(seeds)], uint8(i))
	}
	eng := testEngine(f)
	base := *eng.Config()
	f.Fuzz(func(t *testing.T, a, b []byte, change uint8) {
		if err := eng.Reload(&base); err != nil {
			t.Fatal(err)
		}
		var logged bytes.Buffer
		out := &captureWriter{discard: true}
		h := NewHandler(out, 1, func() Translator { return eng.NewWorker() }, slog.New(slog.NewTextHandler(&logged, nil)))
		h.SetDropLog(1 << 20)
		m := h.CountMappings(eng.Config().Map.Table())
		h.QueueIdle(0)
		for _, p := range [][]byte{a, b} {
			if len(p) == 0 {
				continue
			}
			proto := header.IPv4ProtocolNumber
			if p[0]>>4 == 6 {
				proto = header.IPv6ProtocolNumber
			}
			pb := chainedPacket(p)
			h.DeliverNetworkPacket(proto, pb)
			pb.DecRef()
		}
		h.QueueIdle(0)
		if change&1 != 0 {
			c := base
			c.Policy.IPv4MTU, c.Policy.IPv6MTU = 68, 1280
			c.Policy.Hairpin = xlat.HairpinOff
			if change&2 != 0 {
				c.Policy.Hairpin = xlat.HairpinIntrinsic
			}
			if err := eng.Reload(&c); err != nil {
				t.Fatal(err)
			}
		}
		counts := func() []MappingCount {
			var s []MappingCount
			m.Each(func(_ int, _ mapping.Entry, c MappingCount) bool { s = append(s, c); return true })
			return s
		}
		written, stats, totals, logLen, mc := out.n, h.Stats(), eng.Totals(), logged.Len(), counts()
		for range 3 {
			h.WarmQueue(0)
		}
		h.QueueIdle(0)
		if out.n != written {
			t.Errorf("rehearsals wrote %d packets", out.n-written)
		}
		got := h.Stats()
		got.Panics = stats.Panics // a sample the engine panics on now is forgotten and counted
		if got != stats {
			t.Errorf("rehearsals moved the link counters:\n%+v\nwant\n%+v", got, stats)
		}
		if eng.Totals() != totals {
			t.Errorf("rehearsals moved the engine's totals")
		}
		if logged.Len() != logLen {
			t.Errorf("rehearsals logged: %s", logged.Bytes()[logLen:])
		}
		if !slices.Equal(counts(), mc) {
			t.Errorf("rehearsals moved the per-mapping counts")
		}
	})
}

// TestHandlerRehearsalSampleSize: a packet longer than a sample's store
// (rehearsalMax) is forwarded but not kept, and the next packet of its
// direction is; one of exactly rehearsalMax bytes is kept whole.
func TestHandlerRehearsalSampleSize(t *testing.T) {
	const udp = header.UDPProtocolNumber
	eng := testEngine(t)
	out := &captureWriter{discard: true}
	h := NewHandler(out, 1, func() Translator { return eng.NewWorker() }, nil)
	q := h.queues[0]
	deliver := func(pkt []byte) {
		t.Helper()
		pb := chainedPacket(pkt)
		h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pb)
		pb.DecRef()
	}
	sized := func(n int, seed byte) []byte {
		p := ipv4(udp, cli4, srv4, l4(udp, cli4, srv4, payload(n-28, seed), false), header.IPv4FlagDontFragment, 0)
		if len(p) != n {
			t.Fatalf("built %d bytes, want %d", len(p), n)
		}
		return p
	}
	sample := func() []byte {
		s := &q.reh.dirs[dir4]
		return s.pkt[s.cur][:s.n]
	}
	h.QueueIdle(0)
	deliver(sized(rehearsalMax+1, 1))
	if out.n != 1 || len(sample()) != 0 || q.reh.want&(1<<dir4) == 0 {
		t.Fatalf("after a packet of %d bytes: %d written, a sample of %d bytes, want %b; want 1, none, the IPv4 sample still wanted",
			rehearsalMax+1, out.n, len(sample()), q.reh.want)
	}
	full := sized(rehearsalMax, 2)
	deliver(full)
	if !bytes.Equal(sample(), full) {
		t.Fatalf("a packet of %d bytes kept as %d bytes", len(full), len(sample()))
	}
	h.WarmQueue(0)
	if q.reh.runs != 1 || out.n != 2 {
		t.Errorf("%d rehearsals, %d written; want 1 and 2", q.reh.runs, out.n)
	}
}
