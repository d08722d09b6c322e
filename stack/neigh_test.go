package stack

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"testing"
)

// fakeNeighKernel is a routing and neighbour table.
type fakeNeighKernel struct {
	routes    map[netip.Addr][2]any // dst -> ifindex, via
	neighbors map[netip.Addr][6]byte
	solicited []netip.Addr
}

func (k *fakeNeighKernel) route(dst netip.Addr) (int, netip.Addr, error) {
	r, ok := k.routes[dst]
	if !ok {
		return 0, netip.Addr{}, errors.New("no route")
	}
	return r[0].(int), r[1].(netip.Addr), nil
}

func (k *fakeNeighKernel) neighbour(_ int, via netip.Addr) ([6]byte, bool, error) {
	m, ok := k.neighbors[via]
	return m, ok, nil
}

func (k *fakeNeighKernel) solicit(_ int, via netip.Addr) error {
	k.solicited = append(k.solicited, via)
	return nil
}

type sentPacket struct {
	hop nextHop
	pkt []byte
}

func TestResolver(t *testing.T) {
	a := netip.MustParseAddr
	dst4, gw4 := a("192.0.2.2"), a("203.0.113.2")
	dst6 := a("2001:db8:6::10")
	other := a("192.0.2.99")
	mac1, mac2 := [6]byte{2, 0, 0, 0, 0, 1}, [6]byte{2, 0, 0, 0, 0, 2}
	k := &fakeNeighKernel{
		routes: map[netip.Addr][2]any{
			dst4:  {4, gw4},  // through a gateway on NIC 4
			dst6:  {6, dst6}, // on-link on NIC 6
			other: {9, other},
		},
		neighbors: map[netip.Addr][6]byte{gw4: mac1},
	}
	r := newResolver(k, []int{4, 6}, slog.New(slog.DiscardHandler))
	var sent []sentPacket
	r.send = func(h nextHop, p []byte) { sent = append(sent, sentPacket{h, bytes.Clone(p)}) }
	resolveQueued := func() {
		for {
			select {
			case d := <-r.req:
				r.resolve(d)
			default:
				return
			}
		}
	}
	want := func(step string, dst netip.Addr, ok bool, mac [6]byte) {
		t.Helper()
		h, got := r.lookup(dst)
		if !got {
			r.request(dst)
		}
		if got != ok || (ok && h.mac != mac) {
			t.Errorf("%s: lookup %v = %+v %v, want %v %x", step, dst, h, got, ok, mac)
		}
	}

	// A known neighbour: the first lookup misses and asks, the next hits.
	want("gateway, first", dst4, false, mac1)
	resolveQueued()
	want("gateway, resolved", dst4, true, mac1)
	if len(k.solicited) != 0 {
		t.Errorf("solicited %v for a known neighbour", k.solicited)
	}

	// A packet whose lookup raced with the resolution is not parked:
	// park finds the next hop resolved and hands it back, for the caller
	// to send (after what was parked before, which has left by then).
	if h, ok, parked := r.park(dst4, []byte{0x45, 9}); !ok || parked || h.mac != mac1 {
		t.Fatalf("park after resolution: %+v resolved %v parked %v", h, ok, parked)
	}
	if len(sent) != 0 {
		t.Fatalf("sent %+v, nothing was parked", sent)
	}

	// An unknown one is solicited; its packet waits and leaves with the
	// neighbour event.
	want("on-link, first", dst6, false, mac2)
	if _, _, parked := r.park(dst6, []byte{0x60, 1, 2, 3}); !parked {
		t.Fatal("no room to park")
	}
	resolveQueued()
	if len(k.solicited) != 1 || k.solicited[0] != dst6 {
		t.Errorf("solicited %v, want [%v]", k.solicited, dst6)
	}
	want("on-link, unresolved", dst6, false, mac2)
	r.neighbourUpdate(6, dst6, mac2, true)
	want("on-link, after event", dst6, true, mac2)
	if len(sent) != 1 || !bytes.Equal(sent[0].pkt, []byte{0x60, 1, 2, 3}) || sent[0].hop.mac != mac2 || sent[0].hop.ifindex != 6 {
		t.Errorf("parked packet sent as %+v", sent)
	}

	// The neighbour goes away (or fails): misses again.
	r.neighbourUpdate(6, dst6, [6]byte{}, false)
	want("on-link, lost", dst6, false, mac2)
	// An event for another interface changes nothing.
	r.neighbourUpdate(4, dst6, mac1, true)
	want("other interface's event", dst6, false, mac2)

	// A route change forgets everything; the next lookup re-resolves
	// through the new route.
	k.routes[dst4] = [2]any{4, a("203.0.113.3")}
	k.neighbors[a("203.0.113.3")] = mac2
	r.routesChanged()
	want("after route change", dst4, false, mac2)
	resolveQueued()
	want("new gateway", dst4, true, mac2)

	// A route out of a NIC the translator does not serve, or none.
	for _, d := range []netip.Addr{other, a("198.51.100.77")} {
		want("not ours", d, false, mac1)
		resolveQueued()
		want("not ours, after resolving", d, false, mac1)
	}
}

func TestResolverParking(t *testing.T) {
	r := newResolver(&fakeNeighKernel{}, nil, slog.New(slog.DiscardHandler))
	dst := netip.MustParseAddr("192.0.2.2")
	park := func(pkt []byte) bool {
		_, _, parked := r.park(dst, pkt)
		return parked
	}
	if park(make([]byte, parkSize+1)) || park(nil) {
		t.Error("parked a packet larger than a slot, or none")
	}
	for i := range parkSlots {
		if !park([]byte{byte(i)}) {
			t.Fatalf("slot %d refused", i)
		}
	}
	if park([]byte{0xff}) {
		t.Error("parked beyond the slots")
	}
	// Slots whose neighbour never answered are free again after parkTTL.
	for i := range r.parked {
		r.parked[i].since -= int64(parkTTL)
	}
	if !park([]byte{0xff}) {
		t.Error("an expired slot was not reused")
	}
	if n := r.expired.Load(); n != 1 {
		t.Errorf("%d parked packets counted as expired after one slot's reuse, want 1", n)
	}
	// The other expired ones are dropped and counted by the periodic
	// refresh, or when the next hop answers late, and never sent.
	r.refresh()
	if n := r.expired.Load(); n != parkSlots {
		t.Errorf("%d parked packets counted as expired after refresh, want %d", n, parkSlots)
	}
	var sent [][]byte
	r.send = func(_ nextHop, p []byte) { sent = append(sent, p) }
	r.parked[0].since -= int64(parkTTL) // the one parked last expires too
	r.dsts[dst] = nextHop{ifindex: 4, via: dst, resolved: true}
	r.unpark()
	if len(sent) != 0 || r.expired.Load() != parkSlots+1 {
		t.Errorf("late resolution sent %d expired packets, counted %d expired, want none and %d", len(sent), r.expired.Load(), parkSlots+1)
	}
}

// TestResolverBounded: a flood of distinct destinations empties the cache
// instead of growing it.
func TestResolverBounded(t *testing.T) {
	k := &fakeNeighKernel{routes: map[netip.Addr][2]any{}, neighbors: map[netip.Addr][6]byte{}}
	gw := netip.MustParseAddr("203.0.113.2")
	k.neighbors[gw] = [6]byte{2}
	base := netip.MustParseAddr("10.0.0.0").As4()
	r := newResolver(k, []int{1}, slog.New(slog.DiscardHandler))
	for i := range maxDestinations + 10 {
		b := base
		b[1], b[2], b[3] = byte(i>>16), byte(i>>8), byte(i)
		d := netip.AddrFrom4(b)
		k.routes[d] = [2]any{1, gw}
		r.resolve(d)
		if len(r.dsts) > maxDestinations {
			t.Fatalf("%d destinations cached", len(r.dsts))
		}
	}
}

// TestResolverParkedOrder: the packets parked while a next hop is
// resolved leave in the order they came, before any packet that finds
// the next hop resolved: they are sent before the resolution is
// published (a lookup during their sending still misses), oldest first
// even when a reused slot puts a later one in front of them, and with
// the event that resolves them (a neighbour event, or resolve finding
// the neighbour known). Packets to another, unresolved destination stay.
func TestResolverParkedOrder(t *testing.T) {
	a := netip.MustParseAddr
	dstA, dstB, dstC := a("2001:db8:6::10"), a("2001:db8:6::11"), a("192.0.2.7")
	gwC := a("203.0.113.2")
	mac, macC := [6]byte{2, 0, 0, 0, 0, 1}, [6]byte{2, 0, 0, 0, 0, 3}
	k := &fakeNeighKernel{
		routes:    map[netip.Addr][2]any{dstA: {6, dstA}, dstB: {6, dstB}, dstC: {4, gwC}},
		neighbors: map[netip.Addr][6]byte{},
	}
	r := newResolver(k, []int{4, 6}, slog.New(slog.DiscardHandler))
	var sent []byte
	dstOf := map[byte]netip.Addr{}
	r.send = func(h nextHop, p []byte) {
		if _, ok := r.lookup(dstOf[p[1]]); ok {
			t.Errorf("packet %d sent after its next hop was published: a packet sent at once could have gone first", p[1])
		}
		sent = append(sent, p[1])
	}
	pkt := func(dst netip.Addr, n byte) []byte {
		dstOf[n] = dst
		return []byte{0x60, n}
	}
	park := func(dst netip.Addr, n byte) {
		t.Helper()
		if _, _, parked := r.park(dst, pkt(dst, n)); !parked {
			t.Fatalf("packet %d not parked", n)
		}
	}
	// Packets 1, 2, 3 to A and 4 to B take slots 0 to 3; packet 1 waits
	// past parkTTL (lost: its slot is free again), so packet 5 to A
	// takes slot 0, in front of packets 2 and 3.
	for n, d := range []netip.Addr{dstA, dstA, dstA, dstB} {
		park(d, byte(n+1))
		r.resolve(d) // the entry, and a solicitation
	}
	r.parked[0].since -= int64(parkTTL)
	park(dstA, 5)
	if r.parked[0].buf[1] != 5 {
		t.Fatalf("packet 5 in slot %v, want 0 (the expired one)", r.parked[0].buf[1])
	}
	r.neighbourUpdate(6, dstA, mac, true)
	if string(sent) != "\x02\x03\x05" {
		t.Errorf("sent packets %v after A's neighbour event, want [2 3 5]", sent)
	}
	if h, ok := r.lookup(dstA); !ok || h.mac != mac {
		t.Errorf("A after its event: %+v %v", h, ok)
	}
	// C's gateway is known to the kernel: resolve publishes it, after
	// sending what was parked for C; B's packet still waits.
	sent = nil
	park(dstC, 6)
	park(dstC, 7)
	k.neighbors[gwC] = macC
	r.resolve(dstC)
	if string(sent) != "\x06\x07" {
		t.Errorf("sent packets %v after C's resolution, want [6 7]", sent)
	}
	if _, ok := r.lookup(dstB); ok || r.parked[3].since == 0 {
		t.Error("B's packet left, or B resolved, without its neighbour")
	}
}
