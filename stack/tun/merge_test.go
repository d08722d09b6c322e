package tun

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/map646/map646/stack/xlat"
)

// dgram describes a test datagram: an IPv6 UDP datagram from
// 2001:db8:6::1 to 2001:db8:4::c000:201 unless a field says otherwise.
type dgram struct {
	payload             int
	flow                byte // the source port's low byte
	tc, hop             byte // 0: the defaults (0, 64)
	label               uint32
	flags               uint8 // virtio_net_hdr flags; NeedsCsum brings csum_start/offset
	badCsum, zeroCsum   bool
	nextHdr             byte // 0: UDP; else an extension header in front of UDP
	v4, superPkt, wrong bool // an IPv4 datagram; a USO super-packet; csum_start off by 8
}

var dvalid = uint8(xlat.OffloadDataValid)

// build returns d behind a virtio_net_hdr of hdr bytes, and its offload
// metadata.
func (d dgram) build(hdr int) ([]byte, xlat.Offload) {
	off := xlat.Offload{Flags: d.flags}
	if d.flags&xlat.OffloadNeedsCsum != 0 {
		off.CsumStart, off.CsumOffset = 40, 6
		if d.wrong {
			off.CsumStart += 8
		}
	}
	if d.superPkt {
		off.GSOType, off.GSOSize = xlat.GSOUDPL4, uint16(d.payload/2)
	}
	if d.v4 {
		b := make([]byte, hdr+28+d.payload)
		ip := header.IPv4(b[hdr:])
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b) - hdr), TTL: 64, Protocol: 17,
			SrcAddr: tcpip.AddrFrom4([4]byte{192, 0, 2, 1}), DstAddr: tcpip.AddrFrom4([4]byte{198, 51, 100, 1})})
		ip.SetChecksum(^ip.CalculateChecksum())
		binary.BigEndian.PutUint16(b[hdr+24:], uint16(8+d.payload))
		EncodeVnetHdr(b, &off)
		return b, off
	}
	ext := 0
	if d.nextHdr != 0 {
		ext = 8
	}
	b := make([]byte, hdr+40+ext+8+d.payload)
	ip := b[hdr:]
	hop := d.hop
	if hop == 0 {
		hop = 64
	}
	binary.BigEndian.PutUint32(ip, 6<<28|uint32(d.tc)<<20|d.label)
	binary.BigEndian.PutUint16(ip[4:], uint16(len(ip)-40))
	ip[6], ip[7] = 17, hop
	copy(ip[8:], []byte{0x20, 0x01, 0x0d, 0xb8, 0, 6, 15: 1})
	copy(ip[24:], []byte{0x20, 0x01, 0x0d, 0xb8, 0, 4, 12: 192, 0, 2, 1})
	u := ip[40:]
	if ext != 0 {
		ip[6] = d.nextHdr
		u[0] = 17 // next header; length 0: 8 bytes
		u = u[8:]
	}
	binary.BigEndian.PutUint16(u, 4000+uint16(d.flow))
	binary.BigEndian.PutUint16(u[2:], 53)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	for i := range u[8:] {
		u[8+i] = byte(i*7 + int(d.flow))
	}
	s := header.PseudoHeaderChecksum(17, tcpip.AddrFrom16Slice(ip[8:24]), tcpip.AddrFrom16Slice(ip[24:40]), uint16(len(u)))
	c := ^checksum.Checksum(u, s)
	if c == 0 {
		c = 0xffff
	}
	switch {
	case d.zeroCsum:
		c = 0
	case d.badCsum:
		c ^= 0x0101
	}
	binary.BigEndian.PutUint16(u[6:], c)
	EncodeVnetHdr(b, &off)
	return b, off
}

// mergeRun writes pkts through a merger as the io_uring's queueWrite
// does, each write's completion reaped at once; it returns the writes
// made, each with the datagrams it carries (0: a packet written on its
// own, not through the merge).
func mergeRun(t *testing.T, hdr int, pkts [][]byte, offs []xlat.Offload) (writes [][]byte, kinds []int) {
	t.Helper()
	m := newUDPMerger(hdr)
	flush := func() {
		b, id, n := m.finish()
		writes, kinds = append(writes, slices.Clone(b)), append(kinds, n)
		if lost := m.done(id, int32(len(b))); lost != 0 {
			t.Fatalf("a complete write lost %d datagrams", lost)
		}
	}
	for i, b := range pkts {
		if !m.offer(b, &offs[i], flush) {
			writes, kinds = append(writes, b), append(kinds, 0)
		}
	}
	if m.pending() {
		flush()
	}
	if m.inflight != 0 {
		t.Fatalf("%d merge writes left in flight", m.inflight)
	}
	return writes, kinds
}

// segment splits a write as the kernel's UDP segmentation does: a
// super-packet into its datagrams (each with its own lengths and a full
// checksum), anything else as it is, and returns the IP packets.
func segment(t *testing.T, hdr int, w []byte) [][]byte {
	t.Helper()
	var off xlat.Offload
	DecodeVnetHdr(w, &off)
	ip := w[hdr:]
	if off.GSOType == xlat.GSONone {
		return [][]byte{ip}
	}
	if off.GSOType != xlat.GSOUDPL4 || off.Flags != xlat.OffloadNeedsCsum || off.CsumStart != 40 || off.CsumOffset != 6 || off.HdrLen != 48 {
		t.Fatalf("super-packet header %+v", off)
	}
	if err := ValidateOffloadPacket(&off, ip); err != nil {
		t.Fatalf("the kernel would refuse the super-packet: %v (%+v)", err, off)
	}
	// The partial checksum is the pseudo-header's sum with the
	// super-packet's length.
	l := len(ip) - 40
	if got, want := binary.BigEndian.Uint16(ip[46:]), header.PseudoHeaderChecksum(17, tcpip.AddrFrom16Slice(ip[8:24]), tcpip.AddrFrom16Slice(ip[24:40]), uint16(l)); got != want {
		t.Fatalf("partial checksum %#x, want %#x", got, want)
	}
	if int(binary.BigEndian.Uint16(ip[4:])) != l || int(binary.BigEndian.Uint16(ip[44:])) != l {
		t.Fatalf("super-packet lengths %d/%d, want %d", binary.BigEndian.Uint16(ip[4:]), binary.BigEndian.Uint16(ip[44:]), l)
	}
	var out [][]byte
	for data := ip[48:]; len(data) > 0; {
		n := min(len(data), int(off.GSOSize))
		p := append(slices.Clone(ip[:48]), data[:n]...)
		data = data[n:]
		binary.BigEndian.PutUint16(p[4:], uint16(8+n))
		binary.BigEndian.PutUint16(p[44:], uint16(8+n))
		p[46], p[47] = 0, 0
		s := header.PseudoHeaderChecksum(17, tcpip.AddrFrom16Slice(p[8:24]), tcpip.AddrFrom16Slice(p[24:40]), uint16(8+n))
		c := ^checksum.Checksum(p[40:], s)
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(p[46:], c)
		out = append(out, p)
	}
	if len(out) > udpMaxSegments {
		t.Fatalf("%d segments, more than the kernel takes", len(out))
	}
	return out
}

func repeat(n int, d dgram) []dgram {
	s := make([]dgram, n)
	for i := range s {
		s[i] = d
	}
	return s
}

// TestMergeRule: which writes of a batch merge into one USO super-packet
// and what ends a merge; every datagram leaves once, in order, and the
// kernel's segmentation of a super-packet gives back exactly the
// datagrams merged (a datagram with a good checksum: the inputs' own
// checksums are the full ones).
func TestMergeRule(t *testing.T) {
	a := dgram{payload: 64, flags: dvalid}
	b := dgram{payload: 64, flags: dvalid, flow: 1}
	part := dgram{payload: 64, flags: xlat.OffloadNeedsCsum}
	plain := dgram{payload: 64} // no flags: its checksum is verified
	with := func(d dgram, f func(*dgram)) dgram { f(&d); return d }
	for _, tc := range []struct {
		name string
		in   []dgram
		want []int // per write: datagrams merged; 0: written on its own
	}{
		{"one flow", repeat(4, a), []int{4}},
		{"partial and valid checksums", []dgram{a, part, a, part}, []int{4}},
		{"verified checksums", repeat(3, plain), []int{3}},
		{"a lone datagram", []dgram{a}, []int{1}},
		{"shorter last ends the merge", []dgram{a, a, with(a, func(d *dgram) { d.payload = 10 }), a}, []int{3, 1}},
		{"a larger payload does not join", []dgram{with(a, func(d *dgram) { d.payload = 10 }), a, a}, []int{1, 2}},
		{"another flow", []dgram{a, a, b, b, a}, []int{2, 2, 1}},
		{"interleaved flows", []dgram{a, b, a, b}, []int{1, 1, 1, 1}},
		{"traffic class differs", []dgram{a, with(a, func(d *dgram) { d.tc = 0x20 })}, []int{1, 1}},
		{"ECN bits differ", []dgram{a, with(a, func(d *dgram) { d.tc = 1 })}, []int{1, 1}},
		{"flow label differs", []dgram{a, with(a, func(d *dgram) { d.label = 0x12345 })}, []int{1, 1}},
		{"hop limit differs", []dgram{a, with(a, func(d *dgram) { d.hop = 63 })}, []int{1, 1}},
		{"extension header", []dgram{a, with(a, func(d *dgram) { d.nextHdr = 60 }), a}, []int{1, 0, 1}},
		{"a fragment", []dgram{a, a, with(a, func(d *dgram) { d.nextHdr = 44 }), a}, []int{2, 0, 1}},
		{"129th datagram", repeat(129, dgram{payload: 8, flags: dvalid}), []int{128, 1}},
		{"64 KiB bound", repeat(46, dgram{payload: 1452, flags: dvalid}), []int{45, 1}},
		{"bad checksum in a run", []dgram{plain, plain, with(plain, func(d *dgram) { d.badCsum = true }), plain, plain}, []int{2, 0, 2}},
		{"zero checksum", []dgram{plain, with(plain, func(d *dgram) { d.zeroCsum = true }), with(a, func(d *dgram) { d.zeroCsum = true })}, []int{1, 0, 0}},
		{"partial checksum elsewhere", []dgram{part, with(part, func(d *dgram) { d.wrong = true })}, []int{1, 0}},
		{"a super-packet", []dgram{a, with(part, func(d *dgram) { d.superPkt = true }), a}, []int{1, 0, 1}},
		{"IPv4 is not merged", []dgram{with(a, func(d *dgram) { d.v4 = true }), with(a, func(d *dgram) { d.v4 = true })}, []int{0, 0}},
		{"no payload", []dgram{with(a, func(d *dgram) { d.payload = 0 }), with(a, func(d *dgram) { d.payload = 0 })}, []int{0, 0}},
		{"over mergeMaxPacket", repeat(2, dgram{payload: mergeMaxPacket - 47, flags: dvalid}), []int{0, 0}},
		{"at mergeMaxPacket", repeat(2, dgram{payload: mergeMaxPacket - 48, flags: dvalid}), []int{2}},
	} {
		for _, hdr := range []int{VnetHdrLen, MrgVnetHdrLen} {
			t.Run(fmt.Sprintf("%s/%d", tc.name, hdr), func(t *testing.T) {
				pkts := make([][]byte, len(tc.in))
				offs := make([]xlat.Offload, len(tc.in))
				for i, d := range tc.in {
					pkts[i], offs[i] = d.build(hdr)
				}
				writes, kinds := mergeRun(t, hdr, pkts, offs)
				if !slices.Equal(kinds, tc.want) {
					t.Fatalf("writes %v, want %v", kinds, tc.want)
				}
				var got [][]byte
				for i, w := range writes {
					if kinds[i] <= 1 {
						// Written as it came, header and all.
						if k := len(got); !bytes.Equal(w, pkts[k]) {
							t.Fatalf("write %d changed datagram %d", i, k)
						}
					}
					if kinds[i] == 0 {
						got = append(got, w[hdr:]) // whatever it is, as it came
						continue
					}
					got = append(got, segment(t, hdr, w)...)
				}
				if len(got) != len(pkts) {
					t.Fatalf("%d datagrams out of %d", len(got), len(pkts))
				}
				for i, p := range got {
					if want := pkts[i][hdr:]; !bytes.Equal(p, want) {
						t.Fatalf("datagram %d:\n got % x\nwant % x", i, p, want)
					}
				}
			})
		}
	}
}

// TestMergeArenaAndIDs: a merge write keeps its arena bytes and its id
// until its completion: with completions late, merging stops (the
// datagrams are written on their own) when the arena or the ids run out,
// and resumes once they come; a failed write loses every datagram in it.
func TestMergeArenaAndIDs(t *testing.T) {
	m := newUDPMerger(VnetHdrLen)
	big, off := dgram{payload: 1452, flags: dvalid}.build(VnetHdrLen)
	var ids []int
	flush := func() {
		_, id, _ := m.finish()
		ids = append(ids, id)
	}
	merged := 0
	for range 200 {
		if m.offer(big, &off, flush) {
			merged++
		}
	}
	if m.pending() {
		flush()
	}
	// Two super-packets of 45 fill the arena but for a few datagrams.
	if merged == 200 || merged < 90 {
		t.Fatalf("%d of 200 datagrams merged with no completion", merged)
	}
	lost := 0
	for i, id := range ids {
		res := int32(-5) // EIO for the first
		if i > 0 {
			res = int32(m.want[id])
		}
		lost += m.done(id, res)
	}
	if m.inflight != 0 || lost != 45 {
		t.Fatalf("in flight %d, lost %d, want 0 and the first write's 45", m.inflight, lost)
	}
	if m.done(ids[0], 0) != 0 || m.inflight != 0 {
		t.Fatal("a second completion of a freed id counted")
	}
	if !m.offer(big, &off, flush) {
		t.Fatal("no merge after every completion came")
	}

	// Ids: small datagrams of alternating flows, one merge each.
	m = newUDPMerger(VnetHdrLen)
	ids = ids[:0]
	a, offA := dgram{payload: 8, flags: dvalid}.build(VnetHdrLen)
	b, offB := dgram{payload: 8, flags: dvalid, flow: 1}.build(VnetHdrLen)
	merged = 0
	for i := range 3 * mergeWrites {
		p, o := a, &offA
		if i%2 == 1 {
			p, o = b, &offB
		}
		if m.offer(p, o, flush) {
			merged++
		}
	}
	if merged != mergeWrites {
		t.Fatalf("%d datagrams began merges with %d ids", merged, mergeWrites)
	}
}

// BenchmarkMerge is the merge's cost per datagram: the checks, the copy,
// the super-packet's header, by datagram size and how the checksum is
// known (flags, or verified).
func BenchmarkMerge(b *testing.B) {
	for _, size := range []int{64, 512, 1452} {
		for _, how := range []string{"partial", "verify"} {
			b.Run(fmt.Sprintf("%s/%d", how, size), func(b *testing.B) {
				d := dgram{payload: size, flags: xlat.OffloadNeedsCsum}
				if how == "verify" {
					d.flags = 0
				}
				p, off := d.build(VnetHdrLen)
				m := newUDPMerger(VnetHdrLen)
				flush := func() {
					_, id, _ := m.finish()
					m.done(id, int32(m.want[id]))
				}
				b.SetBytes(int64(len(p)))
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					if !m.offer(p, &off, flush) {
						b.Fatal("not merged")
					}
					if i%16 == 15 { // a batch
						flush()
					}
				}
			})
		}
	}
}

// FuzzMerge: hostile packets (any bytes, a partial checksum or no flags)
// written through the merge: nothing panics, every packet leaves once, in
// order; a super-packet is one the kernel takes, and its segments are the
// datagrams merged, byte for byte (a partial checksum's field aside: the
// kernel computes it), so a datagram with a bad checksum and no flags
// never merges.
func FuzzMerge(f *testing.F) {
	good, _ := dgram{payload: 16}.build(0)
	bad, _ := dgram{payload: 16, badCsum: true}.build(0)
	f.Add(append(append([]byte{0, byte(len(good))}, good...), append([]byte{0, byte(len(bad))}, bad...)...))
	f.Add(append(append([]byte{1, byte(len(good))}, good...), append([]byte{1, byte(len(good))}, good...)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		const hdr = VnetHdrLen
		var pkts [][]byte
		var offs []xlat.Offload
		for len(data) >= 2 && len(pkts) < 300 {
			flags, n := data[0], int(data[1])*8
			data = data[2:]
			n = min(n, len(data))
			off := xlat.Offload{}
			if flags&1 != 0 {
				off = xlat.Offload{Flags: xlat.OffloadNeedsCsum, CsumStart: 40, CsumOffset: 6}
			}
			b := make([]byte, hdr+n)
			copy(b[hdr:], data[:n])
			data = data[n:]
			EncodeVnetHdr(b, &off)
			pkts, offs = append(pkts, b), append(offs, off)
		}
		writes, kinds := mergeRun(t, hdr, pkts, offs)
		k := 0
		for i, w := range writes {
			if kinds[i] <= 1 {
				if !bytes.Equal(w, pkts[k]) {
					t.Fatalf("write %d changed packet %d", i, k)
				}
				k++
				continue
			}
			for _, s := range segment(t, hdr, w) {
				want := pkts[k][hdr:]
				if offs[k].Flags&xlat.OffloadNeedsCsum != 0 {
					want = slices.Clone(want)
					want[46], want[47] = s[46], s[47]
				}
				if !bytes.Equal(s, want) {
					t.Fatalf("segment of write %d is not packet %d:\n got % x\nwant % x", i, k, s, want)
				}
				k++
			}
		}
		if k != len(pkts) {
			t.Fatalf("%d packets out of %d", k, len(pkts))
		}
	})
}
