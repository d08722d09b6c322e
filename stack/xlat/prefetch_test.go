package xlat

import (
	"bytes"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/map646/map646/mapping"
)

// TestPrefetchCollect: the addresses Prefetch hands to the snapshot are
// the ones Process looks up (destination, then source), and packets too
// short for them, or of another version, add none.
func TestPrefetchCollect(t *testing.T) {
	v4 := ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(8)), v4opt{})
	v6 := ip6(S6A, C6, 64, 17, udpSeg(1, 2, payload(8)), v6opt{})
	bad := append([]byte(nil), v4...)
	bad[0] = 0x55
	for _, tc := range []struct {
		name  string
		pkts  [][]byte
		keys4 []string
		keys6 []string
	}{
		{"none", nil, nil, nil},
		{"ipv4", [][]byte{v4}, []string{S4A, C4}, nil},
		{"ipv6", [][]byte{v6}, nil, []string{C6, S6A}},
		{"mixed, in order", [][]byte{v6, v4, v4[:20], v6[:40]}, []string{S4A, C4, S4A, C4}, []string{C6, S6A, C6, S6A}},
		{"too short", [][]byte{v4[:19], v6[:39], v6[:20], {}}, nil, nil},
		{"other versions", [][]byte{bad, {0x45}, {0x65}}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var k prefetchKeys
			n4, n6 := k.collect(tc.pkts)
			var got4, got6 []string
			for _, a := range k.v4[:n4] {
				got4 = append(got4, netip.AddrFrom4(a).String())
			}
			for _, a := range k.v6[:n6] {
				got6 = append(got6, netip.AddrFrom16(a).String())
			}
			if fmt.Sprint(got4) != fmt.Sprint(tc.keys4) || fmt.Sprint(got6) != fmt.Sprint(tc.keys6) {
				t.Errorf("collect = %v, %v; want %v, %v", got4, got6, tc.keys4, tc.keys6)
			}
		})
	}
}

// TestPrefetchKeepsResults: a batch translated after Prefetch gives the
// same packets, results, emitted packets and counters as without it, for
// every kind of packet of the benchmarks (errors, fragments, hairpins,
// GSO), in batches longer than one chunk, with truncated packets mixed in.
func TestPrefetchKeepsResults(t *testing.T) {
	var batch [][]byte
	var offs []*Offload
	for range 3 * prefetchChunk / 16 {
		for _, c := range benchPackets() {
			batch = append(batch, c.pkt)
			offs = append(offs, c.off)
		}
		batch = append(batch, []byte{0x45, 0, 0}, []byte{0x60})
		offs = append(offs, nil, nil)
	}
	if len(batch) <= prefetchChunk {
		t.Fatalf("a batch of %d packets is not longer than a chunk (%d)", len(batch), prefetchChunk)
	}
	translate := func(prefetch bool) (out [][]byte, results []Result, emitted [][]byte, totals Totals) {
		w := newTestWorker(t, nil)
		w.ipID = 646 // NewWorker starts it at random
		var clock int64
		w.now = func() int64 { clock += int64(time.Second); return clock }
		bufs := make([][]byte, len(batch))
		views := make([][]byte, len(batch))
		for i, p := range batch {
			bufs[i] = make([]byte, Headroom+len(p)+64)
			copy(bufs[i][Headroom:], p)
			views[i] = bufs[i][Headroom : Headroom+len(p)]
		}
		if prefetch {
			w.Prefetch(views)
		}
		sk := &sink{}
		for i, p := range batch {
			var off *Offload
			if offs[i] != nil {
				o := *offs[i]
				off = &o
			}
			r := w.Process(bufs[i], Headroom, Headroom+len(p), off, sk)
			results = append(results, r)
			if r.Verdict == Forward {
				out = append(out, append([]byte(nil), bufs[i][r.Start:r.End]...))
			} else {
				out = append(out, nil)
			}
		}
		w.Flush()
		return out, results, sk.pkts, w.eng.Totals()
	}
	out0, res0, em0, tot0 := translate(false)
	out1, res1, em1, tot1 := translate(true)
	for i := range batch {
		if res0[i] != res1[i] || !bytes.Equal(out0[i], out1[i]) {
			t.Errorf("packet %d: with Prefetch %+v %x; without %+v %x", i, res1[i], out1[i], res0[i], out0[i])
		}
	}
	if len(em0) != len(em1) {
		t.Fatalf("emitted %d packets with Prefetch, %d without", len(em1), len(em0))
	}
	for i := range em0 {
		if !bytes.Equal(em0[i], em1[i]) {
			t.Errorf("emitted packet %d differs", i)
		}
	}
	if tot0 != tot1 {
		t.Errorf("counters with Prefetch %+v; without %+v", tot1, tot0)
	}
}

// TestPrefetchNoAllocs: Prefetch is on the packet path.
func TestPrefetchNoAllocs(t *testing.T) {
	w := newTestWorker(t, nil)
	var batch [][]byte
	for range 5 {
		for _, c := range benchPackets() {
			batch = append(batch, c.pkt)
		}
	}
	if allocs := testing.AllocsPerRun(50, func() { w.Prefetch(batch) }); allocs != 0 {
		t.Errorf("Prefetch of %d packets: %v allocations", len(batch), allocs)
	}
}

// BenchmarkProcessBatch1M translates batches of 32 UDP packets between
// clients (in the RFC 6052 prefix) and random servers of a million-entry
// EAM table, each packet one at a time ("process") or after Prefetch of
// the batch ("prefetch"); per packet, wall clock and the thread's CPU time
// (which a loaded machine does not inflate). Each packet is copied into
// its buffer before it is translated, in both.
func BenchmarkProcessBatch1M(b *testing.B) {
	const n, batchSize, pool = 1_000_000, 32, 1 << 13
	entries := make([]mapping.Entry, n)
	for i := range entries {
		x := uint32(20<<24) + uint32(i)
		v6 := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 6, 6: byte(i >> 20), 7: byte(i >> 12), 13: byte(i>>16) & 0x0f, 14: byte(i >> 8), 15: byte(i)}
		entries[i] = mapping.Entry{
			IPv4: netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)}), 32),
			IPv6: netip.PrefixFrom(netip.AddrFrom16(v6), 128),
		}
	}
	tab, err := mapping.NewTable(entries)
	if err != nil {
		b.Fatal(err)
	}
	pfx, err := mapping.NewPrefix(netip.MustParsePrefix("2001:db8:64::/96"))
	if err != nil {
		b.Fatal(err)
	}
	snap, err := mapping.NewSnapshot(pfx, tab)
	if err != nil {
		b.Fatal(err)
	}
	eng, err := NewEngine(&Config{Map: snap, Policy: testPolicy()})
	if err != nil {
		b.Fatal(err)
	}
	tmpl4 := ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(64)), v4opt{})
	tmpl6 := ip6(S6A, C6, 64, 17, udpSeg(1, 2, payload(64)), v6opt{})
	rnd := uint64(646)
	next := func() int { rnd = rnd*6364136223846793005 + 1442695040888963407; return int(rnd>>33) % n }
	for _, dir := range []string{"4to6", "6to4"} {
		pkts := make([][]byte, pool)
		for i := range pkts {
			en := entries[next()]
			if dir == "4to6" {
				pkts[i] = append([]byte(nil), tmpl4...)
				a := en.IPv4.Addr().As4()
				copy(pkts[i][ip4Dst:], a[:])
			} else {
				pkts[i] = append([]byte(nil), tmpl6...)
				a := en.IPv6.Addr().As16()
				copy(pkts[i][ip6Src:], a[:])
			}
		}
		for _, prefetch := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/%s", dir, map[bool]string{false: "process", true: "prefetch"}[prefetch]), func(b *testing.B) {
				w := eng.NewWorker()
				bufs := make([][]byte, batchSize)
				views := make([][]byte, batchSize)
				for i := range bufs {
					bufs[i] = make([]byte, Headroom+len(tmpl6)+64)
				}
				sk := &nullSink{}
				b.ReportAllocs()
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				cpu0, wall0 := threadCPU(), time.Now()
				from := 0
				for b.Loop() {
					batch := pkts[from : from+batchSize]
					from = (from + batchSize) % pool
					for i, p := range batch {
						copy(bufs[i][Headroom:], p)
						views[i] = bufs[i][Headroom : Headroom+len(p)]
					}
					if prefetch {
						w.Prefetch(views)
					}
					for i, p := range batch {
						if r := w.Process(bufs[i], Headroom, Headroom+len(p), nil, sk); r.Verdict != Forward {
							b.Fatalf("packet not translated: %v", r.Reason)
						}
					}
				}
				pkts := float64(b.N * batchSize)
				b.ReportMetric(float64(time.Since(wall0).Nanoseconds())/pkts, "ns/pkt")
				b.ReportMetric(float64((threadCPU()-cpu0).Nanoseconds())/pkts, "cpu-ns/pkt")
			})
		}
	}
}
