package stack

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/map646/map646/mapping"
	"github.com/map646/map646/stack/xlat"
)

// countedHandler is a handler over the real engine of the test address
// plan (testEngine: entry 0 is serverV4 = serverV6, entry 1
// 198.51.100.11 = 2001:db8:6::11) with per-entry counting on.
func countedHandler(t testing.TB) (*Handler, *xlat.Engine, *MappingCounters) {
	eng := testEngine(t)
	h := NewHandler(&captureWriter{discard: true}, 1, func() Translator { return eng.NewWorker() }, nil)
	m := h.CountMappings(eng.Config().Map.Table())
	if m == nil || h.MappingCounters() != m {
		t.Fatal("CountMappings did not turn counting on")
	}
	return h, eng, m
}

func deliverGSO(h *Handler, pkt []byte, gso gvstack.GSO) {
	pb := chainedPacket(pkt, 30)
	pb.GSOOptions = gso
	proto := header.IPv4ProtocolNumber
	if pkt[0]>>4 == 6 {
		proto = header.IPv6ProtocolNumber
	}
	h.DeliverNetworkPacket(proto, pb)
	pb.DecRef()
}

// TestMappingCounts: a known sequence of packets through the Handler and
// the real engine is counted exactly, per entry and direction, with each
// packet's IP length as received; a GSO super-packet is one packet of its
// whole length, a datagram the engine fragments one packet; drops and
// packets to unmapped addresses are not counted at any entry.
func TestMappingCounts(t *testing.T) {
	h, _, m := countedHandler(t)
	const tcp, udp = header.TCPProtocolNumber, header.UDPProtocolNumber
	srv4b := tcpip.AddrFrom4([4]byte{198, 51, 100, 11})
	srv6b := tcpip.AddrFrom16(netip.MustParseAddr("2001:db8:6::11").As16())
	unmapped := tcpip.AddrFrom4([4]byte{198, 51, 100, 99})
	v4 := func(src, dst tcpip.Address, n int, flags uint8) []byte {
		return ipv4(tcp, src, dst, l4(tcp, src, dst, payload(n, 1), false), flags, 0)
	}
	v6 := func(src tcpip.Address, n int) []byte {
		return ipv6(tcp, src, cli6, l4(tcp, src, cli6, payload(n, 2), false))
	}
	tso := ipv4(tcp, cli4, srv4, l4(tcp, cli4, srv4, payload(20*1448, 3), true), header.IPv4FlagDontFragment, 0)
	tsoOpts := gvstack.GSO{Type: gvstack.GSOTCPv4, NeedsCsum: true, L3HdrLen: 20, CsumOffset: 16, MSS: 1448, MaxSize: 65535}
	big := ipv4(udp, cli4, srv4b, l4(udp, cli4, srv4b, payload(3000, 4), false), 0, 0) // DF=0: fragmented

	var want [2]MappingCount
	send := func(entry int, dir xlat.Dir, p []byte, gso gvstack.GSO) {
		deliverGSO(h, p, gso)
		if entry >= 0 {
			want[entry].Packets[dir]++
			want[entry].Bytes[dir] += uint64(len(p))
		}
	}
	for i := range 3 {
		send(0, xlat.Dir46, v4(cli4, srv4, 100*i+1, header.IPv4FlagDontFragment), gvstack.GSO{})
	}
	send(0, xlat.Dir64, v6(srv6, 1200), gvstack.GSO{})
	send(0, xlat.Dir64, v6(srv6, 7), gvstack.GSO{})
	send(1, xlat.Dir64, v6(srv6b, 500), gvstack.GSO{})
	send(0, xlat.Dir46, tso, tsoOpts)
	send(1, xlat.Dir46, big, gvstack.GSO{})
	send(-1, xlat.Dir46, v4(srv4b, srv4, 10, 0), gvstack.GSO{})                                           // spoofed source: dropped
	send(-1, xlat.Dir46, v4(cli4, unmapped, 10, 0), gvstack.GSO{})                                        // no entry: dropped
	send(-1, xlat.Dir64, ipv6(tcp, cli6, srv6, l4(tcp, cli6, srv6, payload(5, 0), false)), gvstack.GSO{}) // source in the prefix: spoofed

	var got []MappingCount
	m.Each(func(i int, e mapping.Entry, c MappingCount) bool {
		if e != m.Table().Entry(i) {
			t.Errorf("entry %d is %v, the table says %v", i, e, m.Table().Entry(i))
		}
		got = append(got, c)
		return true
	})
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("counts %+v, want %+v", got, want)
	}
	top := m.Top(1, false)
	if len(top) != 1 || top[0].Index != 0 || top[0].MappingCount != want[0] {
		t.Errorf("Top(1, packets) = %+v", top)
	}
	// By bytes, entry 1 (the 3 KB datagram) still trails entry 0 (the
	// super-packet): both, in that order.
	if top := m.Top(5, true); len(top) != 2 || top[0].Index != 0 || top[1].Index != 1 {
		t.Errorf("Top(5, bytes) = %+v", top)
	}
	if p, b := want[0].Total(); p != 6 || b != want[0].Bytes[0]+want[0].Bytes[1] {
		t.Errorf("Total = %d, %d", p, b)
	}

	h.CountMappings(nil)
	if h.MappingCounters() != nil {
		t.Error("counting still on")
	}
	deliverGSO(h, v4(cli4, srv4, 10, 0), gvstack.GSO{}) // not counted, no crash
}

// TestMappingCountsReload: on a new table an entry that stays (same IPv4
// and IPv6 prefix, at whatever position) keeps its counts and goes on
// counting; one whose IPv6 side changed starts at zero, as does a new one.
func TestMappingCountsReload(t *testing.T) {
	h, eng, m := countedHandler(t)
	const tcp = header.TCPProtocolNumber
	srv4b := tcpip.AddrFrom4([4]byte{198, 51, 100, 11})
	pkt := func(dst tcpip.Address) []byte {
		return ipv4(tcp, cli4, dst, l4(tcp, cli4, dst, payload(50, 1), false), 0, 0)
	}
	a, b := pkt(srv4), pkt(srv4b)
	deliverGSO(h, a, gvstack.GSO{})
	deliverGSO(h, a, gvstack.GSO{})
	deliverGSO(h, b, gvstack.GSO{})

	old := m.Table()
	if h.CountMappings(old) != m {
		t.Fatal("the same table made new counters")
	}
	entries := []mapping.Entry{
		{IPv4: netip.MustParsePrefix("198.51.100.12/32"), IPv6: netip.MustParsePrefix("2001:db8:6::12/128")},  // new
		{IPv4: netip.MustParsePrefix("198.51.100.11/32"), IPv6: netip.MustParsePrefix("2001:db8:6::111/128")}, // changed
		{IPv4: netip.MustParsePrefix(serverV4 + "/32"), IPv6: netip.MustParsePrefix(serverV6 + "/128")},       // kept, moved
	}
	tbl, err := mapping.NewTable(entries)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := mapping.NewSnapshot(eng.Config().Map.Prefix(), tbl)
	if err != nil {
		t.Fatal(err)
	}
	cfg := *eng.Config()
	cfg.Map = snap
	if err := eng.Reload(&cfg); err != nil {
		t.Fatal(err)
	}
	if h.CountMappings(tbl) != m || m.Table() != tbl {
		t.Fatal("counters not moved to the new table")
	}
	deliverGSO(h, a, gvstack.GSO{})
	deliverGSO(h, b, gvstack.GSO{})
	n := uint64(len(a))
	want := []MappingCount{
		{},
		{Packets: [2]uint64{1, 0}, Bytes: [2]uint64{n, 0}},
		{Packets: [2]uint64{3, 0}, Bytes: [2]uint64{3 * n, 0}},
	}
	var got []MappingCount
	m.Each(func(_ int, _ mapping.Entry, c MappingCount) bool { got = append(got, c); return true })
	if len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("after the reload %+v, want %+v", got, want)
	}
}

// TestMappingCountsAllocs: counting adds no allocation per packet.
func TestMappingCountsAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts of gVisor's pooled PacketBuffers are meaningless under -race")
	}
	h, _, m := countedHandler(t)
	for _, c := range handlerCases() {
		pb := chainedPacket(c.pkt, 128, 384)
		proto := header.IPv4ProtocolNumber
		if c.pkt[0]>>4 == 6 {
			proto = header.IPv6ProtocolNumber
		}
		if a := testing.AllocsPerRun(200, func() { h.DeliverNetworkPacket(proto, pb) }); a != 0 {
			t.Errorf("%s: %v allocations per packet", c.name, a)
		}
		pb.DecRef()
	}
	if top := m.Top(1, false); len(top) != 1 || top[0].Index != 0 {
		t.Errorf("nothing counted: %+v", top)
	}
}

// BenchmarkHandlerMappingCounts is the fd path's handler with the real
// engine and a table of a million /32 <-> /128 entries, with per-entry
// counting off and on: 64-byte UDP datagrams to 2^12 servers (their
// slots and counters stay in cache) or 2^18 (table slots, the entry index
// and the counters miss the cache, as under traffic to many servers),
// spread over the table, each followed by a reply. The packets are two
// PacketBuffers whose headers are rewritten before each delivery from
// precomputed ones (the handler copies the packet out, so this costs a
// 28 or 48 byte copy and nothing else).
func BenchmarkHandlerMappingCounts(b *testing.B) {
	const n = 1 << 20
	entries, tbl, eng := engine1M(b, n)
	const udp = header.UDPProtocolNumber
	const hdr4, hdr6 = 28, 48
	for _, servers := range []int{1 << 12, 1 << 18} {
		heads4 := make([]byte, 0, servers*hdr4)
		heads6 := make([]byte, 0, servers*hdr6)
		var pkt4, pkt6 []byte
		for i := range servers {
			e := entries[(uint64(i)*0x9e3779b97f4a7c15>>44)%n] // spread over the table
			s4 := tcpip.AddrFrom4(e.IPv4.Addr().As4())
			s6 := tcpip.AddrFrom16(e.IPv6.Addr().As16())
			pkt4 = ipv4(udp, cli4, s4, l4(udp, cli4, s4, payload(36, 1), false), 0, 0)
			pkt6 = ipv6(udp, s6, cli6, l4(udp, s6, cli6, payload(16, 2), false))
			heads4 = append(heads4, pkt4[:hdr4]...)
			heads6 = append(heads6, pkt6[:hdr6]...)
		}
		pb4, pb6 := chainedPacket(pkt4), chainedPacket(pkt6)
		v4, v6 := pb4.AsSlices()[0], pb6.AsSlices()[0]
		for _, on := range []bool{false, true} {
			name := fmt.Sprintf("servers=%d/off", servers)
			if on {
				name = fmt.Sprintf("servers=%d/on", servers)
			}
			b.Run(name, func(b *testing.B) {
				out := &captureWriter{discard: true}
				h := NewHandler(out, 1, func() Translator { return eng.NewWorker() }, nil)
				var m *MappingCounters
				if on {
					m = h.CountMappings(tbl)
				}
				b.ReportAllocs()
				runtime.LockOSThread() // for threadCPU
				defer runtime.UnlockOSThread()
				i := 0
				var cpu0 time.Duration
				for b.Loop() {
					if cpu0 == 0 {
						cpu0 = threadCPU()
					}
					copy(v4, heads4[i*hdr4:(i+1)*hdr4])
					h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pb4)
					copy(v6, heads6[i*hdr6:(i+1)*hdr6])
					h.DeliverNetworkPacket(header.IPv6ProtocolNumber, pb6)
					if i++; i == servers {
						i = 0
					}
				}
				b.StopTimer()
				if cpu := threadCPU() - cpu0; cpu0 > 0 && cpu > 0 {
					b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
				}
				if s := h.Stats(); s.Writes != s.Reads {
					b.Fatalf("%d of %d packets written", s.Writes, s.Reads)
				}
				if on && len(m.Top(1, false)) != 1 {
					b.Fatal("nothing counted")
				}
			})
		}
		pb4.DecRef()
		pb6.DecRef()
	}
}

// TestMappingCountsConcurrent: readers and reloads run while a queue
// counts (the race detector checks the sharing), and no count is lost for
// an entry that stays: after the queue stops, the total is what it sent.
func TestMappingCountsConcurrent(t *testing.T) {
	h, eng, m := countedHandler(t)
	const tcp = header.TCPProtocolNumber
	pkt := ipv4(tcp, cli4, srv4, l4(tcp, cli4, srv4, payload(20, 1), false), 0, 0)
	other, err := mapping.NewTable([]mapping.Entry{
		{IPv4: netip.MustParsePrefix(serverV4 + "/32"), IPv6: netip.MustParsePrefix(serverV6 + "/128")},
	})
	if err != nil {
		t.Fatal(err)
	}
	tables := []*mapping.Table{eng.Config().Map.Table(), other}
	const n = 3000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range n {
			deliverGSO(h, pkt, gvstack.GSO{})
		}
	}()
	switches := 0
	for i := 0; ; i++ {
		select {
		case <-done:
		default:
			// The engine keeps its table: the entry stays in both.
			m.Replace(tables[i%2])
			switches++
			m.Top(1, i%2 == 0)
			m.Each(func(int, mapping.Entry, MappingCount) bool { return true })
			continue
		}
		break
	}
	// The packet in flight at a switch may be lost (documented), no more;
	// with the queue stopped, one more switch carries every count over.
	m.Replace(tables[0])
	var total uint64
	m.Each(func(_ int, e mapping.Entry, c MappingCount) bool {
		if e.IPv4.Addr().String() == serverV4 {
			total = c.Packets[xlat.Dir46]
		}
		return true
	})
	if total > n || total+uint64(switches) < n {
		t.Errorf("%d of %d packets counted across %d switches", total, n, switches)
	}
}

// TestMappingCountsHairpin: a hairpinned packet (RFC 7757 section 4.2,
// server A to server B's public address inside the prefix) counts once,
// as 6to4 at A's entry, as docs/configuration.md says.
func TestMappingCountsHairpin(t *testing.T) {
	h, eng, m := countedHandler(t)
	cfg := *eng.Config()
	cfg.Policy.Hairpin = xlat.HairpinIntrinsic
	if err := eng.Reload(&cfg); err != nil {
		t.Fatal(err)
	}
	const udp = header.UDPProtocolNumber
	toB := tcpip.AddrFrom16(netip.MustParseAddr("2001:db8:64::c633:640b").As16()) // prefix::198.51.100.11
	pkt := ipv6(udp, srv6, toB, l4(udp, srv6, toB, payload(30, 5), false))
	deliverGSO(h, pkt, gvstack.GSO{})
	if tot := eng.Totals(); tot.Hairpinned != 1 {
		t.Fatalf("not hairpinned: %+v", tot)
	}
	var got []MappingCount
	m.Each(func(_ int, _ mapping.Entry, c MappingCount) bool { got = append(got, c); return true })
	want := MappingCount{Packets: [2]uint64{0, 1}, Bytes: [2]uint64{0, uint64(len(pkt))}}
	if got[0] != want || got[1] != (MappingCount{}) {
		t.Errorf("counts %+v, want A %+v and nothing at B", got, want)
	}
}

// engine1M returns n /32 <-> /128 entries (entry i maps 20.0.0.0 + i to
// an address of 2001:db8:6::/48 made of i), their table, and an engine
// over it and the test prefix: the benchmarks' table of a million mappings.
func engine1M(b testing.TB, n int) ([]mapping.Entry, *mapping.Table, *xlat.Engine) {
	b.Helper()
	entries := make([]mapping.Entry, n)
	for i := range entries {
		v4 := [4]byte{20, byte(i >> 16), byte(i >> 8), byte(i)}
		v6 := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 6, 6: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}
		entries[i] = mapping.Entry{IPv4: netip.PrefixFrom(netip.AddrFrom4(v4), 32), IPv6: netip.PrefixFrom(netip.AddrFrom16(v6), 128)}
	}
	tbl, err := mapping.NewTable(entries)
	if err != nil {
		b.Fatal(err)
	}
	p, err := mapping.NewPrefix(netip.MustParsePrefix(prefixV6))
	if err != nil {
		b.Fatal(err)
	}
	snap, err := mapping.NewSnapshot(p, tbl)
	if err != nil {
		b.Fatal(err)
	}
	eng, err := xlat.NewEngine(&xlat.Config{Map: snap})
	if err != nil {
		b.Fatal(err)
	}
	return entries, tbl, eng
}
