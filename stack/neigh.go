package stack

import (
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// nextHop is where a translated packet for one destination leaves: the NIC
// (by interface index), the next hop's address (a gateway or, on-link, the
// destination itself) and its link address once known.
type nextHop struct {
	ifindex  int
	via      netip.Addr
	mac      [6]byte
	resolved bool
}

// neighKernel is how the resolver asks the host: its routing table and its
// neighbour table (ARP, RFC 826; IPv6 Neighbor Discovery, RFC 4861 section
// 7). The kernel implementation is netlink (neigh_linux.go); tests use a
// fake.
type neighKernel interface {
	// route returns the interface and next hop the kernel's routing
	// table chooses for dst (via is dst itself for an on-link route).
	route(dst netip.Addr) (ifindex int, via netip.Addr, err error)
	// neighbour returns the link address of via on ifindex if the kernel
	// has a usable one (reachable, stale, delay, probe, permanent).
	neighbour(ifindex int, via netip.Addr) (mac [6]byte, ok bool, err error)
	// solicit asks the kernel to resolve (or re-confirm) via on ifindex;
	// the answer arrives as a neighbour event.
	solicit(ifindex int, via netip.Addr) error
}

// maxDestinations bounds the destination cache: a flood of packets to
// distinct addresses (each client address is a destination on the IPv4
// side) empties it rather than grow it without limit.
const maxDestinations = 1 << 16

// resolver maps destination addresses to next hops and link addresses with
// the host's own tables, so that the appliance's routes (route blocks, BGP
// is announcements only) and neighbour resolution stay the kernel's: in NIC
// mode the kernel keeps its addresses and answers ARP and ND for them, and
// only the translator's transit packets bypass its forwarding.
//
// lookup is the packet path: a read lock and a map lookup, no allocation.
// A miss asks the resolving goroutine (without waiting) and the packet is
// dropped, as the kernel drops what overflows its own small queue of
// packets waiting for resolution. Neighbour events fill in and invalidate
// link addresses, any route change empties the cache.
type resolver struct {
	k     neighKernel
	ports map[int]bool // interface indexes the translator may send on
	log   *slog.Logger

	mu   sync.RWMutex
	dsts map[netip.Addr]nextHop

	req chan netip.Addr

	// parked packets wait for their next hop's link address, like the
	// kernel's small per-neighbour queue (unres_qlen): a flow's first
	// packet is not lost to resolution. send transmits one once resolved.
	parkMu  sync.Mutex
	parked  [parkSlots]parkedPacket
	parkSeq uint64 // the seq of the last packet parked
	send    func(h nextHop, pkt []byte)
	// expired counts the parked packets dropped because their next hop
	// was not resolved within parkTTL (the caller's Write had succeeded:
	// the link counts them as no_next_hop and write errors).
	expired atomic.Uint64
}

// Parking: slots of parkSize bytes, preallocated; a packet that does not
// fit, or finds no free slot, is dropped. A slot not sent within parkTTL is
// free again (its neighbour never answered).
const (
	parkSlots = 16
	parkSize  = 2048
	parkTTL   = 3 * time.Second
)

type parkedPacket struct {
	dst   netip.Addr
	since int64  // monoNow; 0: free
	seq   uint64 // the order packets were parked in, which they leave in
	n     int
	buf   [parkSize]byte
}

func newResolver(k neighKernel, ports []int, log *slog.Logger) *resolver {
	r := &resolver{
		k:     k,
		ports: map[int]bool{},
		log:   log,
		dsts:  map[netip.Addr]nextHop{},
		req:   make(chan netip.Addr, 256),
		send:  func(nextHop, []byte) {},
	}
	for _, p := range ports {
		r.ports[p] = true
	}
	return r
}

// lookup returns the next hop of dst if its link address is known.
func (r *resolver) lookup(dst netip.Addr) (nextHop, bool) {
	r.mu.RLock()
	h, ok := r.dsts[dst]
	r.mu.RUnlock()
	return h, ok && h.resolved
}

// request asks the resolving goroutine, without waiting, to resolve dst
// (after a failed lookup, and after parking the packet: the resolution
// then finds it parked).
func (r *resolver) request(dst netip.Addr) {
	select {
	case r.req <- dst:
	default: // the resolver is busy: a later packet asks again
	}
}

// run resolves requested destinations until done is closed.
func (r *resolver) run(done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case dst := <-r.req:
			r.resolve(dst)
		}
	}
}

// resolve finds dst's route and next hop and, if the kernel knows the next
// hop's link address, publishes it; if not, it solicits it. The entry is
// stored before the neighbour table is read and the solicitation sent, so
// that the neighbour event answering it always finds the entry.
func (r *resolver) resolve(dst netip.Addr) {
	r.mu.RLock()
	h, ok := r.dsts[dst]
	r.mu.RUnlock()
	if ok && h.resolved {
		// Resolved since the lookup that asked: a packet parked after
		// that lookup leaves now.
		r.unpark()
		return
	}
	if !ok {
		ifindex, via, err := r.k.route(dst)
		if err != nil {
			r.log.Debug("no route for translated packet", "dst", dst, "err", err)
			return
		}
		if !r.ports[ifindex] {
			// The kernel would send it elsewhere (another NIC, or
			// back where it came from on a loop): not a link of the
			// translator.
			r.log.Debug("route leaves by a link the translator does not serve", "dst", dst, "ifindex", ifindex)
			return
		}
		h = nextHop{ifindex: ifindex, via: via}
		r.mu.Lock()
		if len(r.dsts) >= maxDestinations {
			clear(r.dsts)
		}
		r.dsts[dst] = h
		r.mu.Unlock()
	}
	mac, known, err := r.k.neighbour(h.ifindex, h.via)
	if err != nil {
		r.log.Debug("neighbour lookup", "via", h.via, "err", err)
		return
	}
	if known {
		r.publish(mac, func(d netip.Addr, cur nextHop) bool {
			return d == dst && cur.ifindex == h.ifindex && cur.via == h.via
		})
		return
	}
	if err := r.k.solicit(h.ifindex, h.via); err != nil {
		r.log.Debug("neighbour solicitation", "via", h.via, "err", err)
	}
}

// park keeps a copy of pkt, the packet to dst that lookup could not
// place, until its next hop is resolved; parked reports whether there was
// room (none for a packet larger than a slot, or nil: one too large for
// the caller to gather). If dst's next hop was resolved since that
// lookup, park keeps nothing and returns it (ok): the caller sends the
// packet itself, after every packet parked for dst has left (publish
// resolves under parkMu, after sending them), so a flow's first packets
// keep their order.
func (r *resolver) park(dst netip.Addr, pkt []byte) (h nextHop, ok, parked bool) {
	now := monoNow()
	r.parkMu.Lock()
	defer r.parkMu.Unlock()
	if h, ok := r.lookup(dst); ok {
		return h, true, false
	}
	if len(pkt) == 0 || len(pkt) > parkSize {
		return nextHop{}, false, false
	}
	for i := range r.parked {
		p := &r.parked[i]
		if p.since != 0 && time.Duration(now-p.since) < parkTTL {
			continue
		}
		if p.since != 0 {
			r.expired.Add(1) // its neighbour never answered
		}
		r.parkSeq++
		p.dst, p.since, p.seq = dst, now, r.parkSeq
		p.n = copy(p.buf[:], pkt)
		return nextHop{}, false, true
	}
	return nextHop{}, false, false
}

// publish gives mac to the destinations whose entries match (resolved),
// after sending the packets parked for them, oldest first, with parkMu
// held: a packet to one of them either was parked before and leaves
// here, or finds its next hop resolved (lookup, or park's second look)
// only once they all left.
func (r *resolver) publish(mac [6]byte, match func(dst netip.Addr, h nextHop) bool) {
	r.parkMu.Lock()
	defer r.parkMu.Unlock()
	r.sendParked(func(dst netip.Addr) (nextHop, bool) {
		h, ok := r.dsts[dst]
		if !ok || !match(dst, h) {
			return h, false
		}
		h.mac, h.resolved = mac, true
		return h, true
	})
	r.setMatching(mac, true, match)
}

// setMatching sets the link address and its state of the destinations
// whose entries match.
func (r *resolver) setMatching(mac [6]byte, resolved bool, match func(dst netip.Addr, h nextHop) bool) {
	r.mu.Lock()
	for dst, h := range r.dsts {
		if match(dst, h) {
			h.mac, h.resolved = mac, resolved
			r.dsts[dst] = h
		}
	}
	r.mu.Unlock()
}

// unpark sends the parked packets whose destinations are now resolved,
// oldest first.
func (r *resolver) unpark() {
	r.parkMu.Lock()
	defer r.parkMu.Unlock()
	r.sendParked(func(dst netip.Addr) (nextHop, bool) {
		h, ok := r.dsts[dst]
		return h, ok && h.resolved
	})
}

// sendParked sends, in the order they were parked, the packets for whose
// destination hop gives a next hop, and frees their slots; r.parkMu is
// held, hop is called with r.mu read-locked. Packets parked parkTTL ago
// or more are dropped, not sent: a next hop that answers late gets no
// packets that the flow's sender has given up on or sent again since.
func (r *resolver) sendParked(hop func(dst netip.Addr) (nextHop, bool)) {
	r.expireParked()
	for last := uint64(0); ; {
		// The oldest parked packet after last that can leave: a scan of
		// parkSlots per packet sent, and only while packets are parked.
		next := -1
		var nh nextHop
		r.mu.RLock()
		for i := range r.parked {
			p := &r.parked[i]
			if p.since == 0 || p.seq <= last || (next >= 0 && p.seq > r.parked[next].seq) {
				continue
			}
			if h, ok := hop(p.dst); ok {
				next, nh = i, h
			}
		}
		r.mu.RUnlock()
		if next < 0 {
			return
		}
		p := &r.parked[next]
		r.send(nh, p.buf[:p.n])
		p.since, last = 0, p.seq
	}
}

// expireParked drops (frees and counts) the parked packets whose next hop
// was not resolved within parkTTL; r.parkMu is held.
func (r *resolver) expireParked() {
	now := monoNow()
	for i := range r.parked {
		p := &r.parked[i]
		if p.since != 0 && time.Duration(now-p.since) >= parkTTL {
			p.since = 0
			r.expired.Add(1)
		}
	}
}

// neighbourUpdate applies a neighbour table event: a usable link address
// for via on ifindex (valid) or its loss.
func (r *resolver) neighbourUpdate(ifindex int, via netip.Addr, mac [6]byte, valid bool) {
	match := func(_ netip.Addr, h nextHop) bool { return h.ifindex == ifindex && h.via == via }
	if valid {
		r.publish(mac, match)
		return
	}
	r.setMatching(mac, false, match)
}

// routesChanged forgets every destination: the next packet to each looks
// its route up again.
func (r *resolver) routesChanged() {
	r.mu.Lock()
	clear(r.dsts)
	r.mu.Unlock()
}

// refresh asks the kernel to re-confirm every next hop in use. The kernel
// does not send to them itself, so without this their entries would age
// to stale and never be probed again: a neighbour that changed its link
// address would stay unreachable.
func (r *resolver) refresh() {
	// And drops the parked packets whose next hops never answered, so
	// that they are counted without waiting for their slots' reuse.
	r.parkMu.Lock()
	r.expireParked()
	r.parkMu.Unlock()
	type key struct {
		ifindex int
		via     netip.Addr
	}
	seen := map[key]bool{}
	r.mu.RLock()
	for _, h := range r.dsts {
		seen[key{h.ifindex, h.via}] = true
	}
	r.mu.RUnlock()
	for k := range seen {
		if err := r.k.solicit(k.ifindex, k.via); err != nil {
			r.log.Debug("neighbour refresh", "via", k.via, "err", err)
		}
	}
}

// neighbourRefresh is how often refresh runs: within the kernel's default
// base_reachable_time of 30 s, so in-use entries are probed while stale.
const neighbourRefresh = 20 * time.Second
