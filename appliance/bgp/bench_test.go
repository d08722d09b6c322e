package bgp

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
)

// scattered returns n IPv4 /32s that do not aggregate (every other address).
func scattered(n int) []netip.Prefix {
	out := make([]netip.Prefix, n)
	for i := range out {
		a := uint32(0x0a000000) + uint32(2*i) // 10.0.0.0 onwards; never sent anywhere
		out[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), 32)
	}
	return out
}

// BenchmarkDesiredDiff is the planning cost of a reload with 100k
// non-aggregatable prefixes of which one changed.
func BenchmarkDesiredDiff(b *testing.B) {
	old := scattered(100_000)
	cur, _ := Desired(old, nil, true)
	next := append(append([]netip.Prefix{}, old[1:]...), netip.MustParsePrefix("192.0.2.0/24"))
	b.ReportAllocs()
	for b.Loop() {
		want, err := Desired(next, nil, true)
		if err != nil {
			b.Fatal(err)
		}
		add, del := Diff(cur, want)
		if len(add) != 1 || len(del) != 1 {
			b.Fatalf("diff +%d -%d", len(add), len(del))
		}
	}
}

// BenchmarkSpeakerAnnounce is what GoBGP costs per announced prefix (and
// its withdrawal), with no neighbor: the bound on how many non-aggregatable
// prefixes a reload can push per second.
func BenchmarkSpeakerAnnounce(b *testing.B) {
	s, err := New(context.Background(), Config{LocalAS: 64496, RouterID: netip.MustParseAddr("192.0.2.2")}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	ps := scattered(1000)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Update(ctx, ps, nil, true); err != nil {
			b.Fatal(err)
		}
		if err := s.Update(ctx, ps, nil, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/2000, "ns/prefix")
}

// BenchmarkSpeakerWithdraw10k is the cost of withdrawing 10000 announced
// prefixes, with no neighbor: "half" is a reload that drops 5000 of them
// (withdrawn by path), "all" a failed health check (everything at once).
// It bounds how long a dead translator stays announced and how long the
// daemon's loop waits on the speaker.
func BenchmarkSpeakerWithdraw10k(b *testing.B) {
	all := manyPrefixes(10000)
	for _, bc := range []struct {
		name    string
		keep    []netip.Prefix
		healthy bool
	}{{"half", all[:5000], true}, {"all", nil, false}} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := New(context.Background(), Config{LocalAS: 64496, RouterID: netip.MustParseAddr("192.0.2.2")}, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close(context.Background())
			ctx := context.Background()
			for b.Loop() {
				b.StopTimer()
				if err := s.Update(ctx, all, nil, true); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := s.Update(ctx, bc.keep, nil, bc.healthy); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
