package xlat

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"
)

// Issue 10, RFC 7915 sections 4.1 and 5.1: the Traffic Class and the Type
// of Service are copied by default; each direction can reset the DSCP to
// zero or a fixed value, and the ECN bits are always copied. ICMP errors
// translated in either direction follow the same rule for their outer
// header; the packet they quote is not changed.
func TestTrafficClassPolicy(t *testing.T) {
	const in = 0xb9 // DSCP 46 (EF), ECN 01 (ECT(1))
	copyTOS, zero, af41 := TOS{}, TOS{Reset: true}, TOS{Reset: true, DSCP: 34}
	for _, c := range []struct {
		name      string
		tc, tos   TOS
		want46    byte // the IPv6 Traffic Class of a 4->6 packet
		want64    byte // the IPv4 Type of Service of a 6->4 packet
		quoteKept bool
	}{
		{"copy", copyTOS, copyTOS, in, in, true},
		{"zero-both", zero, zero, 0x01, 0x01, true},
		{"fixed-4to6-only", af41, copyTOS, 34<<2 | 1, in, true},
		{"fixed-6to4-only", copyTOS, af41, in, 34<<2 | 1, true},
		{"zero-4to6-fixed-6to4", zero, af41, 0x01, 34<<2 | 1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newTestWorker(t, func(p *Policy) { p.TrafficClass, p.TypeOfService = c.tc, c.tos })
			out, r, _ := run(w, ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(20)), v4opt{tos: in}), nil)
			if r.Verdict != Forward {
				t.Fatalf("4to6: verdict %d %v", r.Verdict, r.Reason)
			}
			if got := trafficClass(out); got != c.want46 {
				t.Errorf("4to6: traffic class %#x, want %#x", got, c.want46)
			}
			checkWellFormed(t, out, true)

			out, r, _ = run(w, ip6(S6A, C6, 64, 17, udpSeg(2, 1, payload(20)), v6opt{tc: in}), nil)
			if r.Verdict != Forward {
				t.Fatalf("6to4: verdict %d %v", r.Verdict, r.Reason)
			}
			if out[1] != c.want64 {
				t.Errorf("6to4: type of service %#x, want %#x", out[1], c.want64)
			}
			checkWellFormed(t, out, true)

			// Translated ICMP errors: the outer header follows the
			// setting, the quoted packet keeps what it had.
			quoted := ip4(S4A, C4, 58, 17, udpSeg(42000, 41000, payload(20)), v4opt{tos: in})
			out, r, _ = run(w, ip4(R4, S4A, 64, 1, icmpMsg(3, 3, 0, quoted), v4opt{tos: in}), nil)
			if r.Verdict != Forward {
				t.Fatalf("4to6 error: verdict %d %v", r.Verdict, r.Reason)
			}
			if got, inner := trafficClass(out), trafficClass(out[48:]); got != c.want46 || inner != in {
				t.Errorf("4to6 error: outer traffic class %#x, quoted %#x; want %#x, %#x", got, inner, c.want46, in)
			}
			quoted6 := ip6(C6, S6A, 57, 17, udpSeg(41000, 42000, payload(20)), v6opt{tc: in})
			out, r, _ = run(w, ip6(S6A, C6, 64, 58, icmpMsg(1, 4, 0, quoted6), v6opt{tc: in}), nil)
			if r.Verdict != Forward {
				t.Fatalf("6to4 error: verdict %d %v", r.Verdict, r.Reason)
			}
			if out[1] != c.want64 || out[28+1] != in {
				t.Errorf("6to4 error: outer type of service %#x, quoted %#x; want %#x, %#x", out[1], out[28+1], c.want64, in)
			}
		})
	}
	// The IPv6 fragments of a large DF=0 packet all carry the rule's
	// value; a hairpinned packet passes both rules (6to4, then 4to6).
	w := newTestWorker(t, func(p *Policy) { p.TrafficClass, p.TypeOfService = TOS{Reset: true, DSCP: 10}, af41 })
	_, r, sk := run(w, ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(1372)), v4opt{tos: in}), nil)
	if r.Verdict != Consumed || len(sk.pkts) < 2 {
		t.Fatalf("split: verdict %d %v, %d fragments", r.Verdict, r.Reason, len(sk.pkts))
	}
	for i, f := range sk.pkts {
		if got := trafficClass(f); got != 10<<2|1 {
			t.Errorf("fragment %d: traffic class %#x, want %#x", i, got, 10<<2|1)
		}
	}
	out, r, _ := run(w, ip6(S6A, v4in6(S4B), 64, 17, udpSeg(1, 2, payload(20)), v6opt{tc: in}), nil)
	if r.Verdict != Forward || trafficClass(out) != 10<<2|1 {
		t.Errorf("hairpin: verdict %d %v, traffic class %#x; want %#x", r.Verdict, r.Reason, trafficClass(out), 10<<2|1)
	}

	_, err := NewEngine(&Config{Map: testSnapshot(t), Policy: Policy{TypeOfService: TOS{Reset: true, DSCP: 64}}})
	if err == nil || !strings.Contains(err.Error(), "DSCP 64") {
		t.Errorf("DSCP 64 accepted: %v", err)
	}
}

// RFC 7915 section 4.2: a Fragmentation Needed with MTU 0 becomes a
// Packet Too Big with the greatest configured plateau below the quoted
// Total Length (+20); the plateaus may be given in any order.
func TestMTUPlateausConfigured(t *testing.T) {
	custom := []int{1300, 9000, 1400, 1400}
	for _, c := range []struct {
		name     string
		plateaus []int
		total    int // the quoted packet's Total Length
		want     uint32
	}{
		{"default-rfc1191", nil, 1500, 1492 + 20},
		{"custom-1400", custom, 1500, 1420},
		{"custom-1300", custom, 1400, 1320},
		{"custom-9000", custom, 9001, 9020},
		{"custom-none-below", custom, 1300, 1280},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newTestWorker(t, func(p *Policy) { p.MTUPlateaus = c.plateaus })
			out, r, _ := run(w, ip4(R4, S4A, 64, 1, icmpMsg(3, 4, 0, innerV4(c.total-28)), v4opt{}), nil)
			if r.Verdict != Forward || len(out) < 48 {
				t.Fatalf("verdict %d %v", r.Verdict, r.Reason)
			}
			if got := binary.BigEndian.Uint32(out[44:]); out[40] != 2 || got != c.want {
				t.Errorf("type %d MTU %d, want 2 %d", out[40], got, c.want)
			}
		})
	}
	if len(custom) != 4 || custom[0] != 1300 {
		t.Errorf("the engine changed the caller's slice: %v", custom)
	}
	many := make([]int, MaxMTUPlateaus+1)
	for i := range many {
		many[i] = 1000 + i
	}
	for _, bad := range [][]int{{67}, {1500, 65536}, many} {
		if _, err := NewEngine(&Config{Map: testSnapshot(t), Policy: Policy{MTUPlateaus: bad}}); err == nil {
			t.Errorf("plateaus %v accepted", bad)
		}
	}
}

// The bucket of the translator's own ICMP messages holds ICMPBurst
// messages and refills at ICMPRate per second; what it refuses is counted
// in RateLimited.
func TestICMPBurst(t *testing.T) {
	w := newTestWorker(t, func(p *Policy) { p.ICMPRate, p.ICMPBurst = 2, 4 })
	now := int64(0)
	w.now = func() int64 { return now }
	lsrr := []byte{0x83, 7, 4, 203, 0, 113, 9, 0}
	in := ip4(C4, S4A, 64, 17, udpSeg(1, 2, nil), v4opt{rawOpts: lsrr}) // answered with ICMPv4 3/5
	send := func(n int) (emitted int) {
		for range n {
			_, _, sk := run(w, in, nil)
			emitted += len(sk.pkts)
		}
		return emitted
	}
	if got := send(6); got != 4 || w.C.RateLimited.Load() != 2 {
		t.Errorf("burst of 4: %d emitted, %d rate-limited; want 4, 2", got, w.C.RateLimited.Load())
	}
	now += int64(time.Second)
	if got := send(3); got != 2 || w.C.RateLimited.Load() != 3 {
		t.Errorf("one second at 2/s: %d emitted, %d rate-limited; want 2, 3", got, w.C.RateLimited.Load())
	}
	now += int64(time.Hour)
	if got := send(5); got != 4 {
		t.Errorf("after an idle hour: %d emitted, want the burst of 4", got)
	}
	// Suppressing costs no allocation either (the bucket is empty now).
	buf := make([]byte, Headroom+len(in))
	sk := &nullSink{}
	before := w.C.RateLimited.Load()
	if a := testing.AllocsPerRun(50, func() {
		copy(buf[Headroom:], in)
		w.Process(buf, Headroom, len(buf), nil, sk)
	}); a != 0 || w.C.RateLimited.Load()-before < 50 || sk.n != 0 {
		t.Errorf("suppressed errors: %v allocations each, %d rate-limited, %d bytes emitted", a, w.C.RateLimited.Load()-before, sk.n)
	}
	for _, p := range []Policy{{ICMPRate: -1}, {ICMPBurst: -1}, {ICMPRate: MaxICMPRate + 1}, {ICMPBurst: MaxICMPRate + 1}} {
		if _, err := NewEngine(&Config{Map: testSnapshot(t), Policy: p}); err == nil {
			t.Errorf("rate %d burst %d accepted", p.ICMPRate, p.ICMPBurst)
		}
	}
}
