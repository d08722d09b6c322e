package stack

import (
	"bytes"
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/stack/tun"
)

// Fuzzing the NIC mode's TPACKET_V2 ring reader with any frame the ring
// may hold: a status word with any flags (TP_STATUS_COPY, LOSING,
// VLAN_VALID...), tp_len and tp_snaplen in any relation (a truncated
// packet), tp_mac and tp_net anywhere, in or out of the frame, and any
// bytes behind them. The kernel writes the ring, but a reader that trusts
// it must still never read or write outside the frame or the packet
// buffer, and must give every frame it takes back.

// fuzzRingFrame builds the ring frame of one fuzz input at the ring's head.
func fuzzRingFrame(r *nicRing, status, plen, snap uint32, mac, net uint16, body []byte) {
	f := r.mem[r.head*r.frameSize : (r.head+1)*r.frameSize]
	clear(f)
	binary.NativeEndian.PutUint32(f[tpStatus:], status)
	binary.NativeEndian.PutUint32(f[tpLen:], plen)
	binary.NativeEndian.PutUint32(f[tpSnaplen:], snap)
	binary.NativeEndian.PutUint16(f[tpMac:], mac)
	binary.NativeEndian.PutUint16(f[tpMac+2:], net)
	copy(f[tpacket2HdrLen:], body)
}

// ringNextOne runs nicRing.next on one fuzzed frame into a packet buffer
// of plen bytes and checks what it did.
func ringNextOne(t *testing.T, r *nicRing, p []byte, status, plen, snap uint32, mac, net uint16, body []byte) ringResult {
	fuzzRingFrame(r, status, plen, snap, mac, net, body)
	head := r.head
	f := append([]byte(nil), r.mem[head*r.frameSize:(head+1)*r.frameSize]...)
	var stats tun.Counters
	taken := r.taken.Load()
	// peek reads the same frame first, and only reads: what it announces
	// lies in the frame, and is the packet next then delivers.
	var ahead [2][]byte
	k, frames := r.peek(ahead[:])
	if k > 1 || frames > 1 || k == 1 && status&unix.TP_STATUS_USER == 0 {
		t.Fatalf("peek of one frame (status %#x): %d packets over %d frames", status, k, frames)
	}
	if !bytes.Equal(r.mem[head*r.frameSize:(head+1)*r.frameSize], f) || r.head != head || r.taken.Load() != taken {
		t.Fatal("peek changed the ring")
	}
	n, res := r.next(p, &stats)
	counted := stats.ReadErrors.Load() + stats.InvalidVnetHdr.Load() + stats.ShortVnetHdr.Load() + stats.NotIP.Load()
	if status&unix.TP_STATUS_USER == 0 {
		if res != ringEmpty || r.head != head || r.taken.Load() != taken {
			t.Fatalf("a kernel-owned frame: result %d, head %d -> %d", res, head, r.head)
		}
		return res
	}
	if got := binary.NativeEndian.Uint32(r.mem[head*r.frameSize+tpStatus:]); got != unix.TP_STATUS_KERNEL {
		t.Fatalf("frame not given back: status %#x", got)
	}
	if r.head != (head+1)%r.frames || r.taken.Load() != taken+1 {
		t.Fatalf("head %d -> %d, taken %d -> %d", head, r.head, taken, r.taken.Load())
	}
	switch res {
	case ringPacket:
		m := int(mac)
		want := int(snap) - ethHdrLen
		if n != tun.VnetHdrLen+want || n > len(p) || counted != 0 {
			t.Fatalf("packet of %d bytes (snap %d, counted %d) into %d", n, snap, counted, len(p))
		}
		if !bytes.Equal(p[tun.VnetHdrLen:n], f[m+ethHdrLen:m+int(snap)]) {
			t.Fatalf("packet bytes differ from the frame's")
		}
		if k != 1 || !bytes.Equal(ahead[0], p[tun.VnetHdrLen:n]) {
			t.Fatalf("delivered a packet peek did not announce (%d announced)", k)
		}
		if et := binary.BigEndian.Uint16(f[m+12:]); et != unix.ETH_P_IP && et != unix.ETH_P_IPV6 {
			t.Fatalf("EtherType %#04x delivered", et)
		}
	case ringCopy:
		if status&unix.TP_STATUS_COPY == 0 || n != 0 {
			t.Fatalf("copy without TP_STATUS_COPY")
		}
	case ringSkipped:
		if counted != 1 || n != 0 {
			t.Fatalf("skipped, %d counted, n %d", counted, n)
		}
	default:
		t.Fatalf("result %d for a user frame", res)
	}
	return res
}

func newFuzzRing() *nicRing {
	fs := ringFrameSize(1500)
	return &nicRing{mem: make([]byte, 4*fs), frameSize: fs, frames: 4}
}

// ringFuzzSeeds are frames of each kind next must handle.
func ringFuzzSeeds() [][]any {
	const user = unix.TP_STATUS_USER
	mac := uint16(ringFrameHeader - tun.VnetHdrLen + tun.VnetHdrLen)
	body := make([]byte, 1600)
	eth := body[mac-tpacket2HdrLen:]
	binary.BigEndian.PutUint16(eth[12:], unix.ETH_P_IP)
	eth[ethHdrLen] = 0x45
	return [][]any{
		{uint32(user), uint32(100), uint32(100), mac, mac + ethHdrLen, body},
		{uint32(user | unix.TP_STATUS_COPY), uint32(70000), uint32(1500), mac, mac + ethHdrLen, body},
		{uint32(user | unix.TP_STATUS_LOSING), uint32(100), uint32(100), mac, mac + ethHdrLen, body},
		{uint32(user | unix.TP_STATUS_VLAN_VALID), uint32(100), uint32(100), mac, mac + ethHdrLen, body},
		{uint32(user), uint32(1600), uint32(100), mac, mac + ethHdrLen, body},       // truncated
		{uint32(user), uint32(10), uint32(10), mac, mac + ethHdrLen, body},          // a runt
		{uint32(user), uint32(100), uint32(100), uint16(4), uint16(18), body},       // mac inside the header
		{uint32(user), uint32(4000), uint32(4000), mac, mac + ethHdrLen, body},      // past the frame
		{uint32(user), ^uint32(0), ^uint32(0), ^uint16(0), ^uint16(0), body},        // everything at its largest
		{uint32(unix.TP_STATUS_KERNEL), uint32(100), uint32(100), mac, mac, body},   // still the kernel's
		{uint32(user), uint32(2000), uint32(2000), mac, mac + ethHdrLen, body[:10]}, // garbage EtherType
	}
}

func FuzzNICRingNext(f *testing.F) {
	for _, s := range ringFuzzSeeds() {
		f.Add(s[0].(uint32), s[1].(uint32), s[2].(uint32), s[3].(uint16), s[4].(uint16), s[5].([]byte))
	}
	r := newFuzzRing()
	big := make([]byte, tun.VnetHdrLen+tun.GSOMaxSize)
	small := make([]byte, tun.VnetHdrLen+100)
	f.Fuzz(func(t *testing.T, status, plen, snap uint32, mac, net uint16, body []byte) {
		p := big
		if plen&1 != 0 {
			p = small // a packet buffer smaller than the frame's packet
		}
		ringNextOne(t, r, p, status, plen, snap, mac, net, body)
	})
}

// TestRingNextSeeds: next's invariants hold on the seeds, and they reach
// every result.
func TestRingNextSeeds(t *testing.T) {
	r := newFuzzRing()
	p := make([]byte, tun.VnetHdrLen+tun.GSOMaxSize)
	seen := map[ringResult]bool{}
	for _, s := range ringFuzzSeeds() {
		seen[ringNextOne(t, r, p, s[0].(uint32), s[1].(uint32), s[2].(uint32), s[3].(uint16), s[4].(uint16), s[5].([]byte))] = true
	}
	if len(seen) != 4 {
		t.Errorf("results %v, want all four", seen)
	}
}
