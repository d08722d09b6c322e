package tun

import (
	"bytes"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/map646/map646/stack/xlat"
)

// tcpPacket is an IP header of hlen bytes (only its version matters here)
// and a TCP header with flags, then data.
func tcpPacket(version byte, hlen int, flags byte, data int) []byte {
	p := make([]byte, hlen+20+data)
	p[0] = version << 4
	p[hlen+12] = 5 << 4 // data offset: 20 bytes
	p[hlen+13] = flags
	return p
}

func TestOffloadPacketRoundTrip(t *testing.T) {
	var off0 xlat.Offload
	const cwr, ack = 0x80, 0x10
	for _, tc := range []struct {
		name string
		off  xlat.Offload
		pkt  []byte
		gso  gvstack.GSO
	}{
		{"complete", xlat.Offload{}, tcpPacket(4, 20, ack, 100), gvstack.GSO{}},
		{"data valid", xlat.Offload{Flags: xlat.OffloadDataValid}, tcpPacket(4, 20, ack, 100), gvstack.GSO{}},
		{"partial checksum", xlat.Offload{Flags: xlat.OffloadNeedsCsum, CsumStart: 40, CsumOffset: 16}, tcpPacket(6, 40, ack, 100),
			gvstack.GSO{NeedsCsum: true, L3HdrLen: 40, CsumOffset: 16}},
		{"tso4", xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv4, HdrLen: 40, GSOSize: 1448, CsumStart: 20, CsumOffset: 16},
			tcpPacket(4, 20, ack, 4*1448), gvstack.GSO{Type: gvstack.GSOTCPv4, NeedsCsum: true, L3HdrLen: 20, CsumOffset: 16, MSS: 1448, MaxSize: GSOMaxSize}},
		{"tso6 ecn", xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv6 | xlat.GSOECN, HdrLen: 60, GSOSize: 1428, CsumStart: 40, CsumOffset: 16},
			tcpPacket(6, 40, ack|cwr, 4*1428), gvstack.GSO{Type: gvstack.GSOTCPv6, NeedsCsum: true, L3HdrLen: 40, CsumOffset: 16, MSS: 1428, MaxSize: GSOMaxSize}},
	} {
		pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(tc.pkt)})
		if !OffloadToPacket(&tc.off, pkt) {
			t.Fatalf("%s: refused", tc.name)
		}
		if pkt.GSOOptions != tc.gso || pkt.RXChecksumValidated != (tc.off.Flags&xlat.OffloadDataValid != 0) {
			t.Errorf("%s: GSO %+v valid %v, want %+v", tc.name, pkt.GSOOptions, pkt.RXChecksumValidated, tc.gso)
		}
		var back xlat.Offload
		has, err := OffloadFromPacket(pkt, tc.pkt, &back)
		if err != nil || has != (tc.off != xlat.Offload{}) || back != tc.off {
			t.Errorf("%s: back %+v (%v, %v), want %+v", tc.name, back, has, err, tc.off)
		}
		pkt.DecRef()
	}

	// UDP segmentation (USO, UFO) has no gVisor form: gVisor's GSOType
	// knows TCP only, and no value is made up for it. Nothing of pkt is
	// changed. gVisor's software GSO has no virtio_net_hdr form.
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(make([]byte, 100))})
	defer pkt.DecRef()
	for _, typ := range []uint8{xlat.GSOUDP, xlat.GSOUDPL4} {
		if OffloadToPacket(&xlat.Offload{Flags: xlat.OffloadNeedsCsum | xlat.OffloadDataValid, GSOType: typ, GSOSize: 10, CsumStart: 20, CsumOffset: 6}, pkt) {
			t.Errorf("GSO type %d accepted", typ)
		}
		if pkt.GSOOptions != (gvstack.GSO{}) || pkt.RXChecksumValidated {
			t.Errorf("GSO type %d: packet changed to %+v", typ, pkt.GSOOptions)
		}
	}
	for _, typ := range []gvstack.GSOType{gvstack.GSONone, gvstack.GSOTCPv4, gvstack.GSOTCPv6} {
		pkt.GSOOptions = gvstack.GSO{Type: typ}
		if _, err := OffloadFromPacket(pkt, make([]byte, 100), &off0); err != nil {
			t.Errorf("gVisor GSO type %d refused: %v", typ, err)
		}
	}
	pkt.GSOOptions = gvstack.GSO{Type: gvstack.GSOGvisor}
	var off xlat.Offload
	if _, err := OffloadFromPacket(pkt, make([]byte, 100), &off); err != ErrUnsupportedGSO {
		t.Errorf("software GSO: %v", err)
	}
	// A TSO packet too short for its TCP header: no hdr_len, no panic.
	pkt.GSOOptions = gvstack.GSO{Type: gvstack.GSOTCPv4, NeedsCsum: true, L3HdrLen: 90, MSS: 1000}
	if _, err := OffloadFromPacket(pkt, make([]byte, 100), &off); err != nil || off.HdrLen != 0 {
		t.Errorf("truncated TSO: %+v, %v", off, err)
	}
}

func TestCopyPacket(t *testing.T) {
	data := make([]byte, 1000)
	for i := range data {
		data[i] = byte(i)
	}
	var b buffer.Buffer
	b.Append(buffer.NewViewWithData(data[:7]))
	b.Append(buffer.NewViewWithData(data[7:500]))
	b.Append(buffer.NewViewWithData(data[500:]))
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: b, ReserveHeaderBytes: 32})
	defer pkt.DecRef()
	dst := make([]byte, 1000)
	if n, ok := CopyPacket(dst, pkt); !ok || n != 1000 || !bytes.Equal(dst, data) {
		t.Errorf("copied %d bytes (%v)", n, ok)
	}
	if _, ok := CopyPacket(dst[:999], pkt); ok {
		t.Error("copy into a short buffer succeeded")
	}
	// CopyHead: a prefix that ends inside the first view, one across
	// views, and a buffer larger than the packet.
	for _, want := range []int{0, 5, 7, 40, 501, 1000} {
		clear(dst)
		if n := CopyHead(dst[:want], pkt); n != want || !bytes.Equal(dst[:n], data[:want]) {
			t.Errorf("CopyHead of %d bytes copied %d: %v", want, n, dst[:n])
		}
	}
	big := make([]byte, 2000)
	if n := CopyHead(big, pkt); n != 1000 || !bytes.Equal(big[:n], data) {
		t.Errorf("CopyHead into 2000 bytes copied %d", n)
	}
}
