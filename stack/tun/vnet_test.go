package tun

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/map646/map646/stack/xlat"
)

func TestVnetHdrLittleEndian(t *testing.T) {
	// A TCPv4 super-packet as the kernel hands it over: the fields are
	// little-endian on the wire of the tun.
	wire := []byte{0x01, 0x01, 0x36, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00}
	var o xlat.Offload
	if err := DecodeVnetHdr(wire, &o); err != nil {
		t.Fatal(err)
	}
	want := xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv4, HdrLen: 54, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	if o != want {
		t.Fatalf("decoded %+v, want %+v", o, want)
	}
	out := make([]byte, VnetHdrLen)
	EncodeVnetHdr(out, &o)
	if string(out) != string(wire) {
		t.Fatalf("encoded % x, want % x", out, wire)
	}
}

func TestVnetHdrRoundTrip(t *testing.T) {
	for _, o := range []xlat.Offload{
		{},
		{Flags: xlat.OffloadDataValid},
		{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv6 | xlat.GSOECN, HdrLen: 0x1234, GSOSize: 0xfedc, CsumStart: 0x0102, CsumOffset: 0xff00},
		{Flags: 0xff, GSOType: 0xff, HdrLen: 0xffff, GSOSize: 0xffff, CsumStart: 0xffff, CsumOffset: 0xffff},
	} {
		b := make([]byte, VnetHdrLen)
		EncodeVnetHdr(b, &o)
		var got xlat.Offload
		if err := DecodeVnetHdr(b, &got); err != nil || got != o {
			t.Errorf("round trip of %+v: %+v, %v", o, got, err)
		}
	}
}

func TestDecodeVnetHdrShort(t *testing.T) {
	var o xlat.Offload
	if err := DecodeVnetHdr(make([]byte, VnetHdrLen-1), &o); !errors.Is(err, ErrShortVnetHdr) {
		t.Fatalf("got %v, want ErrShortVnetHdr", err)
	}
}

func TestValidateOffload(t *testing.T) {
	const csum = xlat.OffloadNeedsCsum
	for _, tc := range []struct {
		name string
		o    xlat.Offload
		len  int
		ok   bool
	}{
		{"plain", xlat.Offload{}, 20, true},
		{"data valid", xlat.Offload{Flags: xlat.OffloadDataValid}, 20, true},
		{"partial tcp4", xlat.Offload{Flags: csum, CsumStart: 20, CsumOffset: 16}, 40, true},
		{"checksum field ends at packet end", xlat.Offload{Flags: csum, CsumStart: 20, CsumOffset: 16}, 38, true},
		{"checksum field past packet end", xlat.Offload{Flags: csum, CsumStart: 20, CsumOffset: 16}, 37, false},
		{"tso4", xlat.Offload{Flags: csum, GSOType: xlat.GSOTCPv4, HdrLen: 40, GSOSize: 1460, CsumStart: 20, CsumOffset: 16}, 3000, true},
		{"tso6 ecn", xlat.Offload{Flags: csum, GSOType: xlat.GSOTCPv6 | xlat.GSOECN, GSOSize: 1440, CsumStart: 40, CsumOffset: 16}, 3000, true},
		{"uso", xlat.Offload{Flags: csum, GSOType: xlat.GSOUDPL4, GSOSize: 1000, CsumStart: 20, CsumOffset: 6}, 3000, true},
		{"ufo", xlat.Offload{Flags: csum, GSOType: xlat.GSOUDP, GSOSize: 1000, CsumStart: 20, CsumOffset: 6}, 3000, false},
		{"gso without segment size", xlat.Offload{Flags: csum, GSOType: xlat.GSOTCPv4, CsumStart: 20, CsumOffset: 16}, 3000, false},
		{"gso without partial checksum", xlat.Offload{GSOType: xlat.GSOTCPv4, GSOSize: 1460}, 3000, false},
		{"ecn without gso", xlat.Offload{GSOType: xlat.GSOECN}, 40, false},
		{"unknown gso type", xlat.Offload{Flags: csum, GSOType: 2, GSOSize: 1460, CsumStart: 20, CsumOffset: 16}, 3000, false},
		{"rsc info flag", xlat.Offload{Flags: 4}, 40, false},
	} {
		err := ValidateOffload(&tc.o, tc.len)
		if (err == nil) != tc.ok {
			t.Errorf("%s: ValidateOffload = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func BenchmarkVnetHdrCodec(b *testing.B) {
	buf := make([]byte, VnetHdrLen)
	o := xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv4, HdrLen: 54, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	b.ReportAllocs()
	for b.Loop() {
		EncodeVnetHdr(buf, &o)
		DecodeVnetHdr(buf, &o)
	}
}

// TestValidateOffloadPacket: offload metadata that passes the range
// checks but does not fit the packet's headers, as only a guest or VM
// manager writing into an inherited descriptor can hand over, is refused
// (see ValidateOffloadPacket); what a kernel hands over passes.
func TestValidateOffloadPacket(t *testing.T) {
	const csum = xlat.OffloadNeedsCsum
	// ip4 is an IPv4 header with IHL ihl words and protocol proto, flags
	// and fragment offset frag, then a TCP or UDP header and data.
	ip4 := func(ihl int, proto byte, frag uint16, data int) []byte {
		p := make([]byte, ihl*4+20+data)
		p[0] = 0x40 | byte(ihl)
		p[6], p[7] = byte(frag>>8), byte(frag)
		p[9] = proto
		p[ihl*4+12] = 5 << 4
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		return p
	}
	// ip6 is an IPv6 header, the extension headers ext (each a next
	// header and a length in 8-byte units past the first 8), then a TCP
	// or UDP header and data.
	ip6 := func(next byte, ext [][2]byte, proto byte, data int) []byte {
		p := make([]byte, 40)
		p[0] = 0x60
		p[6] = next
		for i, e := range ext {
			h := make([]byte, (int(e[1])+1)*8)
			h[0], h[1] = proto, e[1]
			if i+1 < len(ext) {
				h[0] = ext[i+1][0]
			}
			p = append(p, h...)
		}
		l4 := len(p)
		p = append(p, make([]byte, 20+data)...)
		p[l4+12] = 5 << 4
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
		return p
	}
	// padded is p with n bytes behind it that are not the packet's
	// (Ethernet padding).
	padded := func(p []byte, n int) []byte { return append(p, make([]byte, n)...) }
	// cut is p cut to n bytes, its IP header saying so.
	cut := func(p []byte, n int) []byte {
		p = p[:n]
		if p[0]>>4 == 4 {
			binary.BigEndian.PutUint16(p[2:], uint16(n))
		} else {
			binary.BigEndian.PutUint16(p[4:], uint16(n-40))
		}
		return p
	}
	tso := func(typ uint8, start int) xlat.Offload {
		return xlat.Offload{Flags: csum, GSOType: typ, GSOSize: 1000, CsumStart: uint16(start), CsumOffset: 16}
	}
	uso := func(start int, size uint16) xlat.Offload {
		return xlat.Offload{Flags: csum, GSOType: xlat.GSOUDPL4, GSOSize: size, CsumStart: uint16(start), CsumOffset: 6}
	}
	hbh := [][2]byte{{0, 0}}
	for _, tc := range []struct {
		name string
		o    xlat.Offload
		pkt  []byte
		ok   bool
	}{
		{"complete packet", xlat.Offload{}, ip4(5, 6, 0, 10), true},
		{"partial tcp4", xlat.Offload{Flags: csum, CsumStart: 20, CsumOffset: 16}, ip4(5, 6, 0, 10), true},
		{"partial tcp4 with options", xlat.Offload{Flags: csum, CsumStart: 24, CsumOffset: 16}, ip4(6, 6, 0, 10), true},
		{"partial udp6", xlat.Offload{Flags: csum, CsumStart: 40, CsumOffset: 6}, ip6(17, nil, 17, 10), true},
		{"partial udp6 behind hop-by-hop", xlat.Offload{Flags: csum, CsumStart: 48, CsumOffset: 6}, ip6(0, hbh, 17, 10), true},
		{"partial checksum inside the IPv4 header", xlat.Offload{Flags: csum, CsumStart: 0, CsumOffset: 10}, ip4(5, 17, 0, 10), false},
		{"partial checksum inside IPv4 options", xlat.Offload{Flags: csum, CsumStart: 20, CsumOffset: 2}, ip4(6, 17, 0, 10), false},
		{"partial checksum inside the IPv6 header", xlat.Offload{Flags: csum, CsumStart: 8, CsumOffset: 0}, ip6(17, nil, 17, 10), false},
		{"partial checksum inside an extension header", xlat.Offload{Flags: csum, CsumStart: 40, CsumOffset: 6}, ip6(0, hbh, 17, 10), false},
		{"partial tcp4 at udp's offset", xlat.Offload{Flags: csum, CsumStart: 20, CsumOffset: 6}, ip4(5, 6, 0, 10), false},
		{"partial udp6 at tcp's offset", xlat.Offload{Flags: csum, CsumStart: 40, CsumOffset: 16}, ip6(17, nil, 17, 10), false},
		{"partial checksum of an inner header (GRE)", xlat.Offload{Flags: csum, CsumStart: 44, CsumOffset: 16}, ip4(5, 47, 0, 40), true},
		{"partial checksum of a non-IP packet", xlat.Offload{Flags: csum, CsumStart: 20, CsumOffset: 6}, make([]byte, 60), false},
		{"IPv4 header longer than the packet", xlat.Offload{Flags: csum, CsumStart: 20, CsumOffset: 6}, ip4(15, 17, 0, 0)[:40], false},
		{"extension header past the end", xlat.Offload{Flags: csum, CsumStart: 40, CsumOffset: 6}, ip6(0, [][2]byte{{0, 0}}, 17, 0)[:44], false},
		{"extension header longer than the packet", xlat.Offload{Flags: csum, CsumStart: 40, CsumOffset: 6}, ip6(0, [][2]byte{{0, 200}}, 17, 0)[:100], false},
		{"too many extension headers", xlat.Offload{Flags: csum, CsumStart: 40 + 9*8, CsumOffset: 6}, ip6(60, [][2]byte{{60, 0}, {60, 0}, {60, 0}, {60, 0}, {60, 0}, {60, 0}, {60, 0}, {60, 0}, {60, 0}}, 17, 10), false},
		{"tso4", tso(xlat.GSOTCPv4, 20), ip4(5, 6, 0, 3000), true},
		{"tso6 behind a destination option", tso(xlat.GSOTCPv6, 48), ip6(60, [][2]byte{{60, 0}}, 6, 3000), true},
		{"tso4 on IPv6", tso(xlat.GSOTCPv4, 40), ip6(6, nil, 6, 3000), false},
		{"tso6 on IPv4", tso(xlat.GSOTCPv6, 20), ip4(5, 6, 0, 3000), false},
		{"tso4 on UDP", tso(xlat.GSOTCPv4, 20), ip4(5, 17, 0, 3000), false},
		{"tso4 at udp's offset", xlat.Offload{Flags: csum, GSOType: xlat.GSOTCPv4, GSOSize: 1000, CsumStart: 20, CsumOffset: 6}, ip4(5, 6, 0, 3000), false},
		{"tso4 past the transport header", tso(xlat.GSOTCPv4, 40), ip4(5, 6, 0, 3000), false},
		{"tso4 of a fragment", tso(xlat.GSOTCPv4, 20), ip4(5, 6, 0x2000, 3000), false},
		{"tso6 of a fragment", tso(xlat.GSOTCPv6, 48), ip6(44, [][2]byte{{44, 0}}, 6, 3000), false},
		{"tso4 with a TCP header past the end", tso(xlat.GSOTCPv4, 20), func() []byte { p := ip4(5, 6, 0, 0); p[32] = 15 << 4; return p }(), false},
		{"tso4 with a TCP header shorter than 20", tso(xlat.GSOTCPv4, 20), func() []byte { p := ip4(5, 6, 0, 100); p[32] = 4 << 4; return p }(), false},
		{"uso4", uso(20, 1000), ip4(5, 17, 0, 3000), true},
		{"uso6, last datagram short", uso(40, 1400), ip6(17, nil, 17, 46*1400+3-12), true},
		{"uso6 of 128 datagrams", uso(40, 10), ip6(17, nil, 17, 128*10-12), true},
		{"uso6 of 129 datagrams", uso(40, 10), ip6(17, nil, 17, 128*10-12+1), false},
		{"uso on TCP", uso(20, 1000), ip4(5, 6, 0, 3000), false},
		{"uso at tcp's offset", xlat.Offload{Flags: csum, GSOType: xlat.GSOUDPL4, GSOSize: 1000, CsumStart: 20, CsumOffset: 16}, ip4(5, 17, 0, 3000), false},
		{"partial udp4 checksum field in the padding", xlat.Offload{Flags: csum, CsumStart: 20, CsumOffset: 6}, padded(cut(ip4(5, 17, 0, 0), 24), 20), false},
		{"partial udp6 checksum field in the padding", xlat.Offload{Flags: csum, CsumStart: 40, CsumOffset: 6}, padded(cut(ip6(17, nil, 17, 0), 44), 20), false},
		{"partial tcp4 with padding", xlat.Offload{Flags: csum, CsumStart: 20, CsumOffset: 16}, padded(ip4(5, 6, 0, 0), 6), true},
		{"range check still applies", xlat.Offload{Flags: csum, CsumStart: 20, CsumOffset: 100}, ip4(5, 6, 0, 10), false},
	} {
		err := ValidateOffloadPacket(&tc.o, tc.pkt)
		if (err == nil) != tc.ok {
			t.Errorf("%s: ValidateOffloadPacket = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// BenchmarkValidateOffload: the range checks alone and with the header
// checks of ValidateOffloadPacket, on a TSO4 super-packet and on an IPv6
// UDP packet with a partial checksum (what host mode reads most), so that
// the cost the header checks add on the read path shows.
func BenchmarkValidateOffload(b *testing.B) {
	tso := make([]byte, 20+20+1448*40)
	tso[0], tso[9], tso[32] = 0x45, 6, 5<<4
	binary.BigEndian.PutUint16(tso[2:], uint16(len(tso)))
	udp := make([]byte, 40+8+1000)
	udp[0], udp[6] = 0x60, 17
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)-40))
	for _, c := range []struct {
		name string
		o    xlat.Offload
		pkt  []byte
	}{
		{"tso4", xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv4, HdrLen: 40, GSOSize: 1448, CsumStart: 20, CsumOffset: 16}, tso},
		{"partial-udp6", xlat.Offload{Flags: xlat.OffloadNeedsCsum, CsumStart: 40, CsumOffset: 6}, udp},
	} {
		b.Run(c.name+"/range", func(b *testing.B) {
			for b.Loop() {
				if ValidateOffload(&c.o, len(c.pkt)) != nil {
					b.Fatal("refused")
				}
			}
		})
		b.Run(c.name+"/packet", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if ValidateOffloadPacket(&c.o, c.pkt) != nil {
					b.Fatal("refused")
				}
			}
		})
	}
}
