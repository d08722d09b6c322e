package tun

import (
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
