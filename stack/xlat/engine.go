package xlat

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/map646/map646/mapping"
)

// Dir is the direction of translation.
type Dir uint8

const (
	Dir46 Dir = iota // IPv4 -> IPv6
	Dir64            // IPv6 -> IPv4
	NumDirs
)

func (d Dir) String() string {
	if d == Dir46 {
		return "4to6"
	}
	return "6to4"
}

// Proto classifies packets for counters.
type Proto uint8

const (
	ProtoOther Proto = iota
	ProtoTCP
	ProtoUDP
	ProtoICMP
	ProtoFragment // a non-first fragment
	NumProtos
)

var protoNames = [NumProtos]string{"other", "tcp", "udp", "icmp", "fragment"}

func (p Proto) String() string {
	if p >= NumProtos {
		return "invalid"
	}
	return protoNames[p]
}

// Reason says why a packet was not translated. Every value has a stable
// snake_case name (String) for logs and metric labels.
type Reason uint8

const (
	ReasonNone             Reason = iota
	ReasonMalformed               // truncated or inconsistent headers
	ReasonVersion                 // neither IPv4 nor IPv6
	ReasonHeadroom                // the caller reserved too little room in front
	ReasonSrcIllegal              // RFC 7915 4.1/5.1: 0/8, 127/8, multicast, class E, ::, ::1, fe80::/10, ff00::/8 source
	ReasonDstIllegal              // the same ranges as destination
	ReasonDenied                  // an IPv4 address inside Policy.DenyIPv4
	ReasonDstUnmapped             // 4->6: no EAM entry for the destination; 6->4: destination neither EAM nor prefix
	ReasonSrcUnmapped             // source neither EAM nor prefix (and not an ICMPv6 error)
	ReasonSourceRoute             // RFC 7915 4.1: unexpired LSRR/SSRR option; ICMPv4 3/5 sent
	ReasonSegmentsLeft            // RFC 7915 5.1: Routing header with Segments Left != 0; ICMPv6 4/0 sent
	ReasonExtHeaders              // extension header chain too long or cut short
	ReasonUDPZeroChecksum         // RFC 7915 4.5: IPv4 UDP checksum 0 with policy "drop"
	ReasonUDPZeroFragment         // RFC 7915 4.5: IPv4 UDP checksum 0 in a fragment (cannot be computed)
	ReasonICMPFragmented          // fragmented ICMP: the ICMPv6 pseudo-header length is unknown
	ReasonICMPType                // RFC 7915 4.2/5.2: ICMP type/code without counterpart, silently dropped
	ReasonICMPInner               // RFC 7915 4.3/5.3: the packet quoted by an ICMP error is unusable, or not its destination's
	ReasonICMPNested              // RFC 7915 4.3/5.3: an ICMP error quoting an ICMP error
	ReasonICMPProto               // ICMPv6 (58) inside IPv4 or ICMPv4 (1) inside IPv6
	ReasonPoolEmpty               // RFC 6791: untranslatable ICMPv6 error source and no pool
	ReasonTooBig                  // DF packet larger than the known next-hop MTU; Frag Needed / PTB sent
	ReasonHairpinOff              // RFC 7757 4.2: hairpinning needed but off
	ReasonHairpinError            // RFC 7757 4.2: an ICMP error that only intrinsic mode hairpins
	ReasonNoSink                  // fragments or errors to emit but no Sink
	ReasonProtoExtHeader          // IPv4 protocol 0, 43, 44 or 60: would read as an IPv6 extension header
	ReasonICMPChecksum            // an ICMP error with a bad checksum: recomputing it would hide the damage
	ReasonSpoofed                 // 6->4: source inside the RFC 6052 prefix; 4->6: source is a mapped (EAM) address
	ReasonOwnAddress              // to or from one of the translator's own addresses (Policy.OwnAddrs, IPv4Address)
	ReasonBroadcast               // RFC 1812 5.3.5.2: to or from the directed broadcast address of a mapped or own subnet
	ReasonHopLimit                // RFC 8200 3 / RFC 1812 5.3.1: a hairpinned packet whose hop limit ran out; ICMPv6 3/0 sent
	ReasonIGMP                    // RFC 7915 4.2: IGMP (IPv4 protocol 2) is silently dropped
	ReasonExtAfterFragment        // RFC 7915 5.1.1: extension header after the Fragment header of a non-atomic fragment
	ReasonTTLExceeded             // Policy.DecrementTTL: TTL / Hop Limit would reach 0 at the translator; Time Exceeded sent
	ReasonIPv4Checksum            // RFC 1812 5.2.2: an IPv4 header with a bad checksum
	NumReasons
)

var reasonNames = [NumReasons]string{
	"none", "malformed", "version", "headroom", "src_illegal", "dst_illegal", "denied",
	"dst_unmapped", "src_unmapped", "source_route", "segments_left", "ext_headers",
	"udp_zero_checksum", "udp_zero_fragment", "icmp_fragmented", "icmp_type", "icmp_inner",
	"icmp_nested", "icmp_proto", "pool_empty", "too_big", "hairpin_off", "hairpin_error", "no_sink",
	"proto_ext_header", "icmp_checksum", "spoofed", "own_address", "broadcast", "hop_limit", "igmp",
	"ext_after_fragment", "ttl_exceeded", "ipv4_checksum",
}

func (r Reason) String() string {
	if r >= NumReasons {
		return "invalid"
	}
	return reasonNames[r]
}

// Counters are one worker's tallies; each worker is their only writer, so
// the writer uses plain load+store (no locked instruction on the packet
// path) and readers use atomic loads.
type Counters struct {
	Packets     [NumDirs][NumProtos]atomic.Uint64 // translated packets
	Bytes       [NumDirs]atomic.Uint64            // bytes of translated packets (input size)
	Drops       [NumDirs][NumReasons]atomic.Uint64
	Emitted     atomic.Uint64 // packets made by the engine (ICMP errors, fragments)
	Hairpinned  atomic.Uint64 // RFC 7757 4.2 hairpinned packets (also counted as 6to4)
	RateLimited atomic.Uint64 // translator-originated errors suppressed by the rate limit
}

func inc(c *atomic.Uint64, n uint64) { c.Store(c.Load() + n) }

// Totals is a plain snapshot of summed counters.
type Totals struct {
	Packets     [NumDirs][NumProtos]uint64
	Bytes       [NumDirs]uint64
	Drops       [NumDirs][NumReasons]uint64
	Emitted     uint64
	Hairpinned  uint64
	RateLimited uint64
}

func (t *Totals) add(c *Counters) {
	for d := range NumDirs {
		for p := range NumProtos {
			t.Packets[d][p] += c.Packets[d][p].Load()
		}
		t.Bytes[d] += c.Bytes[d].Load()
		for r := range NumReasons {
			t.Drops[d][r] += c.Drops[d][r].Load()
		}
	}
	t.Emitted += c.Emitted.Load()
	t.Hairpinned += c.Hairpinned.Load()
	t.RateLimited += c.RateLimited.Load()
}

// Snapshot returns the worker's counters as plain numbers.
func (c *Counters) Snapshot() Totals {
	var t Totals
	t.add(c)
	return t
}

// Engine holds the current configuration; Workers translate with it.
type Engine struct {
	st      atomic.Pointer[state]
	mu      sync.Mutex
	workers []*Worker

	// update serialises Reload and SetLinkPolicy, whose read-modify-write
	// of the configuration would otherwise lose one another's change
	// (the packet path reads st without it).
	update sync.Mutex
	// given is the configuration Reload was last given, before link.
	given *Config
	// link fills in what the link knows of itself (SetLinkPolicy).
	link func(*Policy)
}

// NewEngine checks c and returns an engine that uses it.
func NewEngine(c *Config) (*Engine, error) {
	e := &Engine{}
	if err := e.Reload(c); err != nil {
		return nil, err
	}
	return e, nil
}

// Reload swaps in a new configuration atomically; packets in flight finish
// with the old one. An invalid configuration is refused and the old one
// stays in use.
func (e *Engine) Reload(c *Config) error {
	e.update.Lock()
	defer e.update.Unlock()
	if err := e.swap(c, e.link); err != nil {
		return err
	}
	e.given = c
	return nil
}

// SetLinkPolicy makes link part of every configuration: Reload applies it
// to a copy of each configuration's Policy before checking it, and the
// configuration in use is checked again with it at once. link fills in
// what the link knows of itself and a configuration from elsewhere does
// not (NIC mode: the NICs' MTUs, RFC 7915 sections 4 and 5); call
// SetLinkPolicy again when that changes. Updates of both kinds are
// serialised, so that neither loses the other: a reload with a new map
// keeps the link's values, and a link change keeps the new map. A
// refused result leaves the engine as it was. The engine must have a
// configuration (NewEngine).
func (e *Engine) SetLinkPolicy(link func(*Policy)) error {
	e.update.Lock()
	defer e.update.Unlock()
	if err := e.swap(e.given, link); err != nil {
		return err
	}
	e.link = link
	return nil
}

// swap compiles c, with link applied to a copy of it, and puts the result
// in use.
func (e *Engine) swap(c *Config, link func(*Policy)) error {
	if c != nil && link != nil {
		x := *c
		link(&x.Policy)
		c = &x
	}
	s, err := compile(c)
	if err != nil {
		return err
	}
	e.st.Store(s)
	return nil
}

// Config returns the configuration in use (the link's policy applied).
func (e *Engine) Config() *Config { return e.st.Load().cfg }

// Totals sums the counters of every worker of e. Translated packets are
// included once their worker has flushed them (Worker.Flush).
func (e *Engine) Totals() Totals {
	var t Totals
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, w := range e.workers {
		t.add(&w.C)
	}
	return t
}

// net4 is an IPv4 prefix as integers, for allocation-free membership tests.
type net4 struct{ addr, mask uint32 }

func (n net4) contains(a uint32) bool { return a&n.mask == n.addr }

// hostRange is the usable part of an RFC 6791 pool prefix.
type hostRange struct{ first, n uint32 }

// state is a Config compiled for the packet path.
type state struct {
	cfg    *Config
	m      *mapping.Snapshot
	pfx    mapping.Prefix
	lowest int // lowest_ipv6_mtu
	// fit6 is the largest IPv6 packet that is neither fragmented nor
	// refused for the IPv6 next hop: min(lowest, mtu6).
	fit6     int
	mtu4     int
	mtu6     int
	decTTL   bool // Policy.DecrementTTL
	deny     []net4
	pool     []hostRange
	poolSize uint64
	// errSrc4 is the source of ICMPv4 errors the translator originates: the
	// first usable pool address, or 192.0.0.8 (RFC 7600) without a pool.
	errSrc4 [4]byte
	// errSrc6 is the source of ICMPv6 errors the translator originates:
	// errSrc4 inside the RFC 6052 prefix (so that it is the translator's
	// own address as the IPv6 side sees it).
	errSrc6  [16]byte
	errRate  int64 // errors per second per worker
	errBurst int64
	// plateaus are Policy.MTUPlateaus (or the RFC 1191 ones) in
	// descending order, without duplicates.
	plateaus []int
	// tos46 and tos64 are Policy.TrafficClass and TypeOfService.
	tos46, tos64 tosRule

	// ipv4Addr is Policy.IPv4Address (hasIPv4Addr false without one).
	ipv4Addr    [4]byte
	hasIPv4Addr bool
	// own4 and own6 are the translator's own addresses (own4 sorted);
	// bcast4 the directed broadcast addresses of own and mapped IPv4
	// subnets shorter than /31, sorted. special says any of the three is
	// non-empty, so that the packet path tests one flag when there are
	// none.
	own4    []uint32
	own6    [][16]byte
	bcast4  []uint32
	special bool
	// last4 has bit b set when an address of own4 or bcast4 ends in the
	// byte b: an inlined first test that lets almost every packet skip
	// the lists.
	last4 [4]uint64
}

// DefaultICMPRate is the ICMP messages per second each Worker may
// originate when Policy.ICMPRate is 0.
const DefaultICMPRate = 100

// MaxICMPRate bounds Policy.ICMPRate and ICMPBurst (the bucket's nanosecond
// arithmetic stays far from overflow).
const MaxICMPRate = 1000000

// tosRule is a compiled TOS: the octet written is in&mask | set.
type tosRule struct{ mask, set byte }

func (t tosRule) apply(in byte) byte { return in&t.mask | t.set }

// compileTOS checks t; what names the setting for errors.
func compileTOS(t TOS, what string) (tosRule, error) {
	if !t.Reset {
		return tosRule{mask: 0xff}, nil
	}
	if t.DSCP > 63 {
		return tosRule{}, fmt.Errorf("xlat: %s DSCP %d: must be between 0 and 63", what, t.DSCP)
	}
	return tosRule{mask: 0x03, set: t.DSCP << 2}, nil
}

// compilePlateaus checks the MTU plateaus and sorts them in descending
// order without duplicates.
func compilePlateaus(in []int) ([]int, error) {
	if len(in) == 0 {
		in = DefaultMTUPlateaus
	}
	if len(in) > MaxMTUPlateaus {
		return nil, fmt.Errorf("xlat: %d MTU plateaus: at most %d", len(in), MaxMTUPlateaus)
	}
	for _, p := range in {
		if p < 68 || p > 65535 {
			return nil, fmt.Errorf("xlat: MTU plateau %d: must be between 68 and 65535", p)
		}
	}
	out := slices.Clone(in)
	slices.Sort(out)
	slices.Reverse(out)
	return slices.Compact(out), nil
}

func compile(c *Config) (*state, error) {
	if c == nil || c.Map == nil {
		return nil, errors.New("xlat: configuration without an address map")
	}
	p := c.Policy
	s := &state{cfg: c, m: c.Map, pfx: c.Map.Prefix(), lowest: p.LowestIPv6MTU, mtu4: p.IPv4MTU, mtu6: p.IPv6MTU, decTTL: p.DecrementTTL}
	if s.lowest == 0 {
		s.lowest = 1280
	}
	if s.lowest < 1280 || s.lowest > 65535 {
		return nil, fmt.Errorf("xlat: lowest IPv6 MTU %d: must be between 1280 and 65535", s.lowest)
	}
	s.fit6 = s.lowest
	if s.mtu6 > 0 && s.mtu6 < s.fit6 {
		s.fit6 = s.mtu6
	}
	if err := checkLimits(&p); err != nil {
		return nil, err
	}
	var err error
	if s.plateaus, err = compilePlateaus(p.MTUPlateaus); err != nil {
		return nil, err
	}
	if s.tos46, err = compileTOS(p.TrafficClass, "traffic class"); err != nil {
		return nil, err
	}
	if s.tos64, err = compileTOS(p.TypeOfService, "type of service"); err != nil {
		return nil, err
	}
	if err := s.compileLists(&p); err != nil {
		return nil, err
	}
	if err := s.compileOwn(&p); err != nil {
		return nil, err
	}
	s.errSrc4 = [4]byte{192, 0, 0, 8}
	switch {
	case len(s.pool) > 0:
		s.errSrc4 = be32put(s.pool[0].first)
	case s.hasIPv4Addr:
		s.errSrc4 = s.ipv4Addr
	}
	if s.pfx.Valid() {
		s.errSrc6, _ = s.pfx.Embed(s.errSrc4)
	}
	s.errRate = int64(p.ICMPRate)
	if s.errRate == 0 {
		s.errRate = DefaultICMPRate
	}
	s.errBurst = int64(p.ICMPBurst)
	if s.errBurst == 0 {
		s.errBurst = s.errRate
	}
	return s, nil
}

// checkLimits refuses policy numbers outside what the engine and the
// RFCs allow: MTUs (RFC 791, RFC 8200 section 5), enums, the ICMP rate.
func checkLimits(p *Policy) error {
	if p.IPv4MTU != 0 && (p.IPv4MTU < 68 || p.IPv4MTU > 65535) {
		return fmt.Errorf("xlat: IPv4 MTU %d: must be between 68 and 65535", p.IPv4MTU)
	}
	if p.IPv6MTU != 0 && (p.IPv6MTU < 1280 || p.IPv6MTU > 65535) {
		return fmt.Errorf("xlat: IPv6 MTU %d: must be between 1280 and 65535", p.IPv6MTU)
	}
	if p.UDPZeroChecksum > UDPZeroDrop {
		return fmt.Errorf("xlat: unknown UDP zero-checksum policy %d", p.UDPZeroChecksum)
	}
	if p.Hairpin > HairpinIntrinsic {
		return fmt.Errorf("xlat: unknown hairpin mode %d", p.Hairpin)
	}
	if p.ICMPRate < 0 || p.ICMPRate > MaxICMPRate {
		return fmt.Errorf("xlat: ICMP rate %d: must be between 0 and %d", p.ICMPRate, MaxICMPRate)
	}
	if p.ICMPBurst < 0 || p.ICMPBurst > MaxICMPRate {
		return fmt.Errorf("xlat: ICMP burst %d: must be between 0 and %d", p.ICMPBurst, MaxICMPRate)
	}
	return nil
}

// compileLists turns deny_ipv4 and icmp_source_pool into the ranges the
// packet path tests (RFC 6791: the pool skips network and broadcast
// addresses of prefixes shorter than /31).
func (s *state) compileLists(p *Policy) error {
	for _, d := range p.DenyIPv4 {
		n, err := toNet4(d)
		if err != nil {
			return fmt.Errorf("xlat: deny_ipv4: %w", err)
		}
		s.deny = append(s.deny, n)
	}
	for _, d := range p.ICMPSourcePool {
		n, err := toNet4(d)
		if err != nil {
			return fmt.Errorf("xlat: icmp_source_pool: %w", err)
		}
		r := hostRange{first: n.addr, n: ^n.mask + 1}
		if d.Bits() == 0 {
			r.n = ^uint32(0)
		}
		if d.Bits() < 31 { // skip the network and broadcast addresses
			r.first++
			r.n -= 2
		}
		s.pool = append(s.pool, r)
		s.poolSize += uint64(r.n)
	}
	return nil
}

// compileOwn fills own4, own6 and bcast4 from the policy's own addresses
// and the EAM table's IPv4 prefixes shorter than /31 (whose all-ones host
// part is a directed broadcast address, RFC 1812 section 5.3.5.2).
func (s *state) compileOwn(p *Policy) error {
	if a := p.IPv4Address; a.IsValid() {
		if !a.Is4() {
			return fmt.Errorf("xlat: IPv4 address %v is not an IPv4 address", a)
		}
		s.ipv4Addr, s.hasIPv4Addr = a.As4(), true
		s.own4 = append(s.own4, be32(s.ipv4Addr[:]))
	}
	if len(s.pool) > 0 {
		// The first pool address is the source of the translator's own
		// ICMP errors (errSrc4): the translator's address in traceroutes,
		// so it is the translator's own and answers ping; unless a pool
		// that overlaps the mappings makes it a server's.
		if _, _, mapped := s.m.Table().Lookup4(be32put(s.pool[0].first)); !mapped {
			s.own4 = append(s.own4, s.pool[0].first)
		}
	}
	for _, o := range p.OwnAddrs {
		if !o.IsValid() {
			return fmt.Errorf("xlat: own address %v is not valid", o)
		}
		a := o.Addr().Unmap()
		if a.Is4() {
			v := a.As4()
			s.own4 = append(s.own4, be32(v[:]))
			if b := o.Bits(); b < 31 {
				s.bcast4 = append(s.bcast4, be32(v[:])|^uint32(0)>>b)
			}
			continue
		}
		s.own6 = append(s.own6, a.As16())
	}
	for _, b := range s.m.Table().PrefixLengths() {
		if b >= 31 {
			continue
		}
		for e := range s.m.Table().All() {
			if bits := e.IPv4.Bits(); bits < 31 {
				v := e.IPv4.Masked().Addr().As4()
				s.bcast4 = append(s.bcast4, be32(v[:])|^uint32(0)>>bits)
			}
		}
		break
	}
	slices.Sort(s.bcast4)
	s.bcast4 = slices.Compact(s.bcast4)
	slices.Sort(s.own4)
	s.own4 = slices.Compact(s.own4)
	for _, l := range [][]uint32{s.own4, s.bcast4} {
		for _, a := range l {
			b := byte(a)
			s.last4[b>>6] |= 1 << (b & 63)
		}
	}
	s.special = len(s.own4)+len(s.own6)+len(s.bcast4) > 0
	return nil
}

// isOwn4 reports one of the translator's own IPv4 addresses. In host mode
// they include every address of the host, which may be thousands (a
// Kubernetes node puts each service address on an interface), so the
// sorted list is searched, not scanned.
func (s *state) isOwn4(a [4]byte) bool {
	_, found := slices.BinarySearch(s.own4, be32(a[:]))
	return found
}

func (s *state) isOwn6(a *[16]byte) bool {
	for i := range s.own6 {
		if s.own6[i] == *a {
			return true
		}
	}
	return false
}

func (s *state) isBcast4(a [4]byte) bool {
	_, found := slices.BinarySearch(s.bcast4, be32(a[:]))
	return found
}

// maybe4 reports whether src or dst may be an own or broadcast address
// (see last4); check4 says for sure.
func (s *state) maybe4(src, dst [4]byte) bool {
	return s.last4[src[3]>>6]&(1<<(src[3]&63)) != 0 || s.last4[dst[3]>>6]&(1<<(dst[3]&63)) != 0
}

// check4 applies the own-address and broadcast policy to a pair of IPv4
// addresses (ReasonNone: neither is special).
func (s *state) check4(src, dst [4]byte) Reason {
	if s.isOwn4(src) || s.isOwn4(dst) {
		return ReasonOwnAddress
	}
	if len(s.bcast4) > 0 && (s.isBcast4(src) || s.isBcast4(dst)) {
		return ReasonBroadcast
	}
	return ReasonNone
}

// AddressRule is the drop reason the configuration in use gives packets
// to a for what a is, whatever else they carry (ReasonNone: no such
// rule): for an IPv4 address ReasonDenied (Policy.DenyIPv4), then
// ReasonOwnAddress (one of the translator's own addresses, the host's
// among them in host mode) or ReasonBroadcast (the directed broadcast
// address of an own or mapped subnet, RFC 1812 section 5.3.5.2), in the
// order both directions test them (RFC 7915 sections 4.1 and 5.1:
// addresses46, addresses64 then own64); for an IPv6 address
// ReasonOwnAddress (an IPv6 address of Policy.OwnAddrs, toOwn6). It reads
// the lists the packet path reads, so that `map646 lookup` says what the
// engine does; it is not for packets. The packet path's exceptions
// stand: an Echo Request to an own address is answered (echo.go), and
// the host's ICMP errors from one are translated.
func (e *Engine) AddressRule(a netip.Addr) Reason {
	s := e.st.Load()
	a = a.Unmap()
	switch {
	case a.Is4():
		v := a.As4()
		if len(s.deny) > 0 && s.denied(v) {
			return ReasonDenied
		}
		return s.check4(v, v)
	case a.Is6():
		if v := a.As16(); s.isOwn6(&v) {
			return ReasonOwnAddress
		}
	}
	return ReasonNone
}

func toNet4(p netip.Prefix) (net4, error) {
	if !p.IsValid() || !p.Addr().Is4() {
		return net4{}, fmt.Errorf("%v is not an IPv4 prefix", p)
	}
	p = p.Masked()
	a := p.Addr().As4()
	var mask uint32
	if p.Bits() > 0 {
		mask = ^uint32(0) << (32 - p.Bits())
	}
	return net4{addr: be32(a[:]) & mask, mask: mask}, nil
}

func (s *state) denied(a [4]byte) bool {
	v := be32(a[:])
	for _, n := range s.deny {
		if n.contains(v) {
			return true
		}
	}
	return false
}

// poolAddr picks an RFC 6791 source deterministically from h (a hash of
// the packet), so that every translator in a group picks the same one.
func (s *state) poolAddr(h uint32) ([4]byte, bool) {
	if s.poolSize == 0 {
		return [4]byte{}, false
	}
	i := uint64(h) % s.poolSize
	for _, r := range s.pool {
		if i < uint64(r.n) {
			return be32put(r.first + uint32(i)), true
		}
		i -= uint64(r.n)
	}
	return [4]byte{}, false
}

// scratchSize holds the largest IP packet plus room for header growth.
const scratchSize = 65536 + 4*Headroom + 256

// Worker is the per-goroutine part of the engine: scratch buffers, the ICMP
// rate limiter and counters. A Worker must not be used concurrently.
type Worker struct {
	eng *Engine
	C   Counters

	// Translated-packet counts not yet published to C (see Flush).
	pend      [NumDirs][NumProtos]uint64
	pendBytes [NumDirs]uint64
	pendN     int

	scratch []byte           // ICMP error translation and fragments
	errBuf  []byte           // translator-originated ICMP errors
	usoHdr  [maxUDP4Hdr]byte // a super-packet's headers while splitUSO46 cuts it
	ipID    uint32           // IPv4 Identification for unfragmented 6->4 packets

	// Token bucket for translator-originated errors: credit is in
	// nanoseconds of budget; one error costs 1e9/rate.
	credit int64
	last   int64
	primed bool
	now    func() int64 // monotonic nanoseconds; replaced by tests

	prefetch prefetchKeys // Prefetch's addresses, kept off the stack
}

var monoStart = time.Now()

func monotonic() int64 { return int64(time.Since(monoStart)) }

// NewWorker returns a worker registered with e (its counters are summed by
// Engine.Totals).
func (e *Engine) NewWorker() *Worker {
	w := &Worker{
		eng:     e,
		scratch: make([]byte, scratchSize),
		errBuf:  make([]byte, Headroom+1280),
		now:     monotonic,
	}
	e.mu.Lock()
	// Different workers (and translators) start their IPv4 IDs apart.
	w.ipID = uint32(time.Now().UnixNano()) ^ uint32(len(e.workers))*0x9e3779b9
	e.workers = append(e.workers, w)
	e.mu.Unlock()
	return w
}

// Rehearsal returns a worker of w's engine that is not registered with it:
// what it translates is counted nowhere (Engine.Totals never reads its
// Counters). The data path replays a recently translated packet through
// one while a queue waits, so that the next packet finds the translation's
// code and data in the caches (stack.Handler.WarmQueue).
func (w *Worker) Rehearsal() *Worker {
	return &Worker{
		eng:     w.eng,
		scratch: make([]byte, scratchSize),
		errBuf:  make([]byte, Headroom+1280),
		now:     monotonic,
	}
}

// flushEvery bounds how many translated packets a worker tallies before
// publishing them to its Counters.
const flushEvery = 64

// Flush publishes the worker's pending counts of translated packets and
// bytes to C, where Engine.Totals reads them. Process flushes by itself
// every flushEvery packets; the data path calls Flush when it has no more
// packets to hand over (before blocking on a read), so that the totals
// are exact while traffic pauses. Drops and emitted packets are published
// at once.
func (w *Worker) Flush() {
	for d := range NumDirs {
		for p := range NumProtos {
			if n := w.pend[d][p]; n != 0 {
				inc(&w.C.Packets[d][p], n)
				w.pend[d][p] = 0
			}
		}
		if n := w.pendBytes[d]; n != 0 {
			inc(&w.C.Bytes[d], n)
			w.pendBytes[d] = 0
		}
	}
	w.pendN = 0
}

// allowError takes one token from the worker's bucket.
func (w *Worker) allowError(s *state) bool {
	cost := int64(time.Second) / s.errRate
	now := w.now()
	if !w.primed {
		w.primed = true
		w.credit = s.errBurst * cost
	} else {
		w.credit += now - w.last
		if max := s.errBurst * cost; w.credit > max {
			w.credit = max
		}
	}
	w.last = now
	if w.credit < cost {
		inc(&w.C.RateLimited, 1)
		return false
	}
	w.credit -= cost
	return true
}

// Visit calls fn once for every counter, with a metric name and its
// labels, so that exporters (Prometheus text, `map646 stats`) need no
// knowledge of the arrays: "packets" (dir, proto), "bytes" (dir), "drops"
// (dir, reason), and "emitted", "hairpinned", "rate_limited" (no labels).
func (t *Totals) Visit(fn func(metric string, labels [][2]string, v uint64)) {
	for d := range NumDirs {
		dl := [2]string{"dir", d.String()}
		for p := range NumProtos {
			fn("packets", [][2]string{dl, {"proto", p.String()}}, t.Packets[d][p])
		}
		fn("bytes", [][2]string{dl}, t.Bytes[d])
		for r := ReasonNone + 1; r < NumReasons; r++ {
			fn("drops", [][2]string{dl, {"reason", r.String()}}, t.Drops[d][r])
		}
	}
	fn("emitted", nil, t.Emitted)
	fn("hairpinned", nil, t.Hairpinned)
	fn("rate_limited", nil, t.RateLimited)
}
