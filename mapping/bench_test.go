package mapping

import (
	"bytes"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"
)

// benchEntries returns n /32 <-> /128 entries: IPv4 addresses consecutive
// from 20.0.0.0 (a public block, as an operator's pool would be) and IPv6
// addresses spread over 2001:db8:6::/48 subnets.
func benchEntries(n int) []Entry {
	out := make([]Entry, n)
	for i := range out {
		x := uint32(20<<24) + uint32(i)
		v6 := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 6, 6: byte(i >> 20), 7: byte(i >> 12), 14: byte(i >> 8), 15: byte(i)}
		v6[13] = byte(i>>16) & 0x0f
		out[i] = Entry{
			IPv4: netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)}), 32),
			IPv6: netip.PrefixFrom(netip.AddrFrom16(v6), 128),
		}
	}
	return out
}

var benchTables = struct {
	sync.Mutex
	m map[int]*benchTable
}{m: map[int]*benchTable{}}

type benchTable struct {
	tab                    *Table
	hit4, miss4, unmapped4 [][4]byte
	hit6, miss6, unmapped6 [][16]byte
}

const benchKeys = 1 << 16

func getBenchTable(b *testing.B, n int) *benchTable {
	benchTables.Lock()
	defer benchTables.Unlock()
	if bt := benchTables.m[n]; bt != nil {
		return bt
	}
	entries := benchEntries(n)
	tab, err := NewTable(entries)
	if err != nil {
		b.Fatal(err)
	}
	bt := &benchTable{tab: tab}
	rnd := newRand(uint64(n))
	for range benchKeys {
		en := entries[rnd.intn(n)]
		bt.hit4 = append(bt.hit4, en.IPv4.Addr().As4())
		bt.hit6 = append(bt.hit6, en.IPv6.Addr().As16())
		var m4 [4]byte
		rnd.fill(m4[:])
		m4[0] = 21 // outside the table
		bt.miss4 = append(bt.miss4, m4)
		m6 := en.IPv6.Addr().As16()
		m6[5] = 7 // 2001:db8:7::/48: outside the table
		bt.miss6 = append(bt.miss6, m6)
		// Unmapped addresses among mapped ones: the same /16 as the last
		// IPv4 entry, the same /64 as an IPv6 entry; the miss filters
		// cannot skip these.
		last := be32(entries[n-1].IPv4.Addr().As4())
		u := last&0xffff0000 | (last+1+uint32(rnd.intn(int(0xffff-last&0xffff)+1)))&0xffff
		if last&0xffff == 0xffff {
			u = last + 1 // no room in the /16: the next one, a filtered miss
		}
		bt.unmapped4 = append(bt.unmapped4, [4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
		u6 := en.IPv6.Addr().As16()
		u6[13] |= 0xf0 // benchEntries uses only the low nibble
		bt.unmapped6 = append(bt.unmapped6, u6)
	}
	benchTables.m[n] = bt
	return bt
}

var benchSizes = []int{1, 1000, 100_000, 1_000_000}

var sink4 [4]byte
var sink6 [16]byte
var sinkDelta uint16

// BenchmarkLookup4: "hit" looks up random entries, "miss" random addresses
// outside the table's /16s (what client addresses are), "unmapped"
// addresses next to mapped ones, which the miss filter cannot skip.
func BenchmarkLookup4(b *testing.B) {
	for _, n := range benchSizes {
		for _, kind := range []string{"hit", "miss", "unmapped"} {
			b.Run(fmt.Sprintf("n=%d/%s", n, kind), func(b *testing.B) {
				bt := getBenchTable(b, n)
				keys := map[string][][4]byte{"hit": bt.hit4, "miss": bt.miss4, "unmapped": bt.unmapped4}[kind]
				cpuLoop(b, func(i int) {
					sink6, sinkDelta, _ = bt.tab.Lookup4(keys[i&(benchKeys-1)])
				})
			})
		}
	}
}

func BenchmarkLookup6(b *testing.B) {
	for _, n := range benchSizes {
		for _, kind := range []string{"hit", "miss", "unmapped"} {
			b.Run(fmt.Sprintf("n=%d/%s", n, kind), func(b *testing.B) {
				bt := getBenchTable(b, n)
				keys := map[string][][16]byte{"hit": bt.hit6, "miss": bt.miss6, "unmapped": bt.unmapped6}[kind]
				cpuLoop(b, func(i int) {
					sink4, sinkDelta, _ = bt.tab.Lookup6(keys[i&(benchKeys-1)])
				})
			})
		}
	}
}

// BenchmarkSnapshot is the engine's per-address cost: an EAM hit for the
// server side and an EAM miss plus RFC 6052 embedding for the client side.
func BenchmarkSnapshot(b *testing.B) {
	bt := getBenchTable(b, 1_000_000)
	p, err := NewPrefix(netip.MustParsePrefix("2001:db8:64::/96"))
	if err != nil {
		b.Fatal(err)
	}
	s, err := NewSnapshot(p, bt.tab)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("To6/eam", func(b *testing.B) {
		cpuLoop(b, func(i int) {
			sink6, sinkDelta, _ = s.To6(bt.hit4[i&(benchKeys-1)])
		})
	})
	b.Run("To6/prefix", func(b *testing.B) {
		cpuLoop(b, func(i int) {
			sink6, sinkDelta, _ = s.To6(bt.miss4[i&(benchKeys-1)])
		})
	})
	clients := make([][16]byte, benchKeys)
	for i := range clients {
		clients[i], _ = p.Embed(bt.miss4[i])
	}
	b.Run("To4/prefix", func(b *testing.B) {
		cpuLoop(b, func(i int) {
			sink4, sinkDelta, _ = s.To4(clients[i&(benchKeys-1)])
		})
	})
}

// BenchmarkNewTable1M is the start-up cost of a million mappings (ns/op,
// and the thread's CPU time); B/entry is the heap the finished table holds
// per entry, measured once around one build.
func BenchmarkNewTable1M(b *testing.B) {
	const n = 1_000_000
	entries := benchEntries(n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tab, err := NewTable(entries)
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(tab)
	tab = nil
	cpuLoop(b, func(int) {
		if _, err := NewTable(entries); err != nil {
			b.Fatal(err)
		}
	})
	// After the loop: b.Loop's first call clears metrics reported earlier.
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/entry")
}

func benchCSV(n int) []byte {
	var buf bytes.Buffer
	buf.WriteString("# generated\n")
	for _, en := range benchEntries(n) {
		fmt.Fprintf(&buf, "%s,%s\n", en.IPv4.Addr(), en.IPv6.Addr())
	}
	return buf.Bytes()
}

// BenchmarkParseCSV1M parses a million-line mappings file and builds the
// table from it, as the daemon does at start-up (target: 3 s).
func BenchmarkParseCSV1M(b *testing.B) {
	src := benchCSV(1_000_000)
	b.SetBytes(int64(len(src)))
	var parse, build time.Duration
	for b.Loop() {
		t0 := time.Now()
		entries, _, err := ParseCSVLines(bytes.NewReader(src), "bench.csv")
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := NewTable(entries); err != nil {
			b.Fatal(err)
		}
		parse += t1.Sub(t0)
		build += time.Since(t1)
	}
	b.ReportMetric(float64(parse.Milliseconds())/float64(b.N), "parse-ms/op")
	b.ReportMetric(float64(build.Milliseconds())/float64(b.N), "build-ms/op")
}

func BenchmarkAggregate1M(b *testing.B) {
	bt := getBenchTable(b, 1_000_000)
	var n4 int
	for b.Loop() {
		n4 = len(Aggregate4(bt.tab))
	}
	b.ReportMetric(float64(n4), "routes4")
}

// BenchmarkLookupLongSuffix1M: a million RFC 7757 section 3.2 entries
// whose IPv6 suffix is longer than the IPv4 one (/30 <-> /124), so every
// hit takes the suffix-placing path in both directions.
func BenchmarkLookupLongSuffix1M(b *testing.B) {
	const n = 1_000_000
	entries := make([]Entry, n)
	for i := range entries {
		x := uint32(20<<24) + uint32(i)<<2
		v6 := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 6, 13: byte(i >> 12), 14: byte(i >> 4), 15: byte(i << 4)}
		entries[i] = Entry{
			IPv4: netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)}), 30),
			IPv6: netip.PrefixFrom(netip.AddrFrom16(v6), 124),
		}
	}
	tab, err := NewTable(entries)
	if err != nil {
		b.Fatal(err)
	}
	rnd := newRand(n)
	keys4 := make([][4]byte, benchKeys)
	keys6 := make([][16]byte, benchKeys)
	for k := range keys4 {
		en := entries[rnd.intn(n)]
		keys4[k] = en.IPv4.Addr().As4()
		keys4[k][3] |= 3
		keys6[k] = en.IPv6.Addr().As16()
		keys6[k][15] |= 0xd
	}
	b.Run("Lookup4", func(b *testing.B) {
		cpuLoop(b, func(i int) {
			sink6, sinkDelta, _ = tab.Lookup4(keys4[i&(benchKeys-1)])
		})
	})
	b.Run("Lookup6", func(b *testing.B) {
		cpuLoop(b, func(i int) {
			sink4, sinkDelta, _ = tab.Lookup6(keys6[i&(benchKeys-1)])
		})
	})
}

// BenchmarkLookupBatch1M: lookups of random keys in a million-entry table,
// one at a time ("single") and in batches (lookup4Batch: prefetch the
// batch, then look it up), on huge pages and on base pages,
// reported per lookup: ns/lookup (wall clock) and cpu-ns/lookup (the
// thread's CPU time, which a loaded machine does not inflate). "hit" and
// "unmapped" are the keys of BenchmarkLookup4/6.
func BenchmarkLookupBatch1M(b *testing.B) {
	// Base pages first: memory once advised keeps the advice after the
	// collector frees it, so a base-page table built after a huge-page
	// one could land on huge pages anyway (hugeMiB shows it). Compare
	// the two with -count 1, one process per run.
	for _, huge := range []bool{false, true} {
		b.Run(map[bool]string{true: "huge", false: "base"}[huge], func(b *testing.B) {
			benchLookupBatch(b, huge)
		})
	}
}

// benchLookupBatch builds its own table (on huge pages or not) rather
// than sharing getBenchTable's.
func benchLookupBatch(b *testing.B, huge bool) {
	useHugePages = huge
	tab, err := NewTable(benchEntries(1_000_000))
	useHugePages = true
	if err != nil {
		b.Fatal(err)
	}
	bt := *getBenchTable(b, 1_000_000)
	bt.tab = tab
	out4 := make([]Result4, 64)
	out6 := make([]Result6, 64)
	for _, kind := range []string{"4/hit", "6/hit", "6/unmapped"} {
		for _, size := range []int{1, 8, 16, 32, 64} {
			name := fmt.Sprintf("%s/batch=%d", kind, size)
			if size == 1 {
				name = kind + "/single"
			}
			b.Run(name, func(b *testing.B) {
				var body func(i int)
				switch {
				case kind == "4/hit" && size == 1:
					body = func(i int) { sink6, sinkDelta, _ = bt.tab.Lookup4(bt.hit4[i&(benchKeys-1)]) }
				case kind == "4/hit":
					body = func(i int) {
						from := (i * size) & (benchKeys - 1)
						lookup4Batch(bt.tab, bt.hit4[from:from+size], out4)
					}
				default:
					keys := bt.hit6
					if kind == "6/unmapped" {
						keys = bt.unmapped6
					}
					if size == 1 {
						body = func(i int) { sink4, sinkDelta, _ = bt.tab.Lookup6(keys[i&(benchKeys-1)]) }
					} else {
						body = func(i int) {
							from := (i * size) & (benchKeys - 1)
							lookup6Batch(bt.tab, keys[from:from+size], out6)
						}
					}
				}
				cpuLoopPer(b, size, "lookup", body)
				b.ReportMetric(tableHugeMiB(b, bt.tab), "hugeMiB")
			})
		}
	}
}
