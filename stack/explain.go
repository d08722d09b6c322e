package stack

import (
	"slices"

	"github.com/map646/map646/stack/xlat"
)

// Explanation says what a counter means and what an operator can do about
// it. It is the one source of these texts: `map646 stats --explain` prints
// them and docs/configuration.md's tables must say the same (a test
// compares them).
type Explanation struct {
	Name    string // the counter's stable name: a metric label value
	Meaning string
	Action  string
}

// reasonTexts explains every xlat.Reason (a test fails for a reason
// without an entry). Meaning completes "the packet was not translated
// because".
var reasonTexts = map[xlat.Reason][2]string{
	xlat.ReasonMalformed:        {"its headers are truncated or inconsistent.", "Nothing on the translator: broken or hostile senders. If real traffic is counted here, capture it (`tcpdump -i` on the tun) and report it."},
	xlat.ReasonVersion:          {"it is neither IPv4 nor IPv6.", "Nothing on the translator; something writes other frames into the link. Capture and report it if it grows."},
	xlat.ReasonHeadroom:         {"the data path reserved too little room in front of it (a bug, not traffic).", "Report it: it is a bug in map646."},
	xlat.ReasonSrcIllegal:       {"its source is 0/8, 127/8, 169.254/16, 224/4 or 240/4, or IPv6 unspecified, loopback, link-local or multicast (RFC 7915 sections 4.1, 5.1). An ICMPv4 error may come from 169.254/16 or 240/4 (a router can be numbered there), never from 0/8, 127/8, 224/4 or 255.255.255.255 (RFC 1812 section 4.2.2.11).", "Expected in small numbers. Many: something routes such traffic into the translator; check the routes towards the tun."},
	xlat.ReasonDstIllegal:       {"its destination is in those ranges, the limited broadcast included (also when embedded in `prefix`).", "Expected in small numbers (scans, misconfigured hosts). Many: check what routes these destinations to the translator."},
	xlat.ReasonDenied:           {"an IPv4 address is inside `deny_ipv4`.", "Intended by `deny_ipv4`; remove the prefix from it if the traffic should pass."},
	xlat.ReasonDstUnmapped:      {"4to6: the destination has no mapping; 6to4: the destination is neither mapped nor inside `prefix`.", "4to6: add a `mapping` for the address, or stop routing it to the translator. 6to4: a server sends to an address outside `prefix`; route only `prefix` and the mapped addresses to the translator."},
	xlat.ReasonSrcUnmapped:      {"the source is neither mapped nor expressible (and the packet is not an ICMP error).", "6to4: a server without a `mapping` sends through the translator; add its mapping or fix its routes."},
	xlat.ReasonSpoofed:          {"6to4: its source is inside `prefix`, where only the translator writes; 4to6: its source is a mapped address, which belongs to a server behind the translator.", "Forged sources, or the translator's output routed back into it: check that the routes of `prefix` and of the mapped addresses do not loop."},
	xlat.ReasonOwnAddress:       {"it is to one of the translator's own addresses (`ipv4_address`, the first `icmp_source_pool` address, `interface` addresses, in host mode every IPv4 address of the host), or from one and not an ICMP error (the host's own errors are translated). An echo request to an own address (an own IPv4 address, from the IPv4 side or inside `prefix`, or an own IPv6 address) is answered instead (counted as a translated ICMP packet and an emitted one), unless the reply is rate-limited (`rate_limited`).", "Traffic for the appliance itself must reach the host, not the tun: check the routes of its own addresses."},
	xlat.ReasonBroadcast:        {"it is to or from the directed broadcast address of an own or mapped IPv4 subnet shorter than /31 (RFC 1812 section 5.3.5.2).", "Nothing: directed broadcasts are never forwarded. Use /31 or /32 mappings if the addresses are real hosts."},
	xlat.ReasonHopLimit:         {"it was to be hairpinned with hop limit 1 or 0; an ICMPv6 Time Exceeded went back (RFC 8200 section 3).", "A routing loop between servers or a sender's very low hop limit (traceroute); check the servers' routes if it grows."},
	xlat.ReasonSourceRoute:      {"IPv4 with an unexpired source route option; an ICMPv4 3/5 went back (RFC 7915 section 4.1).", "Nothing: source routing is refused by design, and the sender was told."},
	xlat.ReasonSegmentsLeft:     {"IPv6 with a Routing header whose Segments Left is not 0; an ICMPv6 Parameter Problem went back unless it was an ICMPv6 error or a non-first fragment (RFC 7915 section 5.1, RFC 4443 section 2.4). Only packets whose source and destination would be translated count here and are answered; the others are counted under the address check that refuses them.", "Nothing: such packets cannot be translated, and the sender was told."},
	xlat.ReasonExtHeaders:       {"its IPv6 extension header chain is too long or cut short.", "Nothing on the translator: broken or hostile senders."},
	xlat.ReasonExtAfterFragment: {"an extension header follows the Fragment header of a non-atomic fragment: it cannot be removed from the first fragment alone (RFC 7915 section 5.1.1).", "Nothing on the translator; the sender's fragmentation cannot be translated."},
	xlat.ReasonTTLExceeded:      {"NIC mode and a tap (`fd` with `ethernet = true`) only, where the translator is the router: the TTL or Hop Limit would reach 0 at the translator; Time Exceeded is sent to the source (RFC 7915 sections 4.1 and 5.1). With a tun or a socket the kernel, or whoever writes into the link, does this before the translator.", "Nothing, unless it grows: then look for a routing loop through the translator, or senders with very low TTLs (traceroute)."},
	xlat.ReasonIPv4Checksum:     {"its IPv4 header checksum is wrong (RFC 1812 section 5.2.2: a router verifies it before forwarding; in host mode the kernel has already dropped such packets, in NIC mode the translator is the first to look).", "Nothing, unless it grows: then look for a link or NIC that corrupts packets."},
	xlat.ReasonProtoExtHeader:   {"IPv4 protocol 0, 43, 44 or 60, which would read as an IPv6 extension header.", "Nothing: broken or hostile senders."},
	xlat.ReasonIGMP:             {"IGMP (IPv4 protocol 2), silently dropped (RFC 7915 section 4.2).", "Nothing: IGMP stays on its link. Many: stop routing multicast into the translator."},
	xlat.ReasonUDPZeroChecksum:  {"IPv4 UDP with checksum 0 and `udp_zero_checksum = \"drop\"`.", "Set `udp_zero_checksum = \"compute\"` if these senders are legitimate."},
	xlat.ReasonUDPZeroFragment:  {"a fragment of IPv4 UDP with checksum 0, which cannot be computed.", "Nothing on the translator; the sender must checksum its UDP or send smaller datagrams."},
	xlat.ReasonICMPFragmented:   {"a fragmented ICMP message.", "Nothing: rare in real traffic (oversized pings, attacks)."},
	xlat.ReasonICMPType:         {"an ICMP type or code without a counterpart (RFC 7915 sections 4.2, 5.2).", "Nothing: expected (Timestamp, Router Advertisement, MLD and other single-protocol messages)."},
	xlat.ReasonICMPInner:        {"the packet quoted by an ICMP error is unusable, or is not one the error's destination sent.", "Nothing: broken or forged ICMP errors."},
	xlat.ReasonICMPNested:       {"an ICMP error quoting an ICMP error.", "Nothing: RFC 7915 forbids translating them."},
	xlat.ReasonICMPProto:        {"ICMPv6 inside IPv4, or ICMPv4 inside IPv6.", "Nothing: broken or forged packets."},
	xlat.ReasonICMPChecksum:     {"an ICMP error with a bad checksum (translating it would hide the damage).", "Nothing, unless it grows: then look for a link that corrupts packets."},
	xlat.ReasonPoolEmpty:        {"an ICMPv6 error from an untranslatable IPv6 router with no `icmp_source_pool` and no `ipv4_address`.", "Set `icmp_source_pool` or `ipv4_address`, so that IPv6 routers' errors (Packet Too Big among them) reach IPv4 clients."},
	xlat.ReasonTooBig:           {"DF set and larger than the known next-hop MTU; Fragmentation Needed or Packet Too Big went back. Also a UDP super-packet (USO) whose datagrams do not fit: one error quoting its first datagram (none in a hairpin; an IPv4 one without DF is not counted here: it is cut into its datagrams, each fragmented).", "Expected while path MTU discovery works. Many: raise the IPv6 side's MTU to the IPv4 side's + 20 (RFC 7755), check `ipv4_mtu` and `ipv6_mtu`, and that ICMP errors reach the senders."},
	xlat.ReasonHairpinOff:       {"hairpinning was needed and `hairpin = \"off\"`.", "Set `hairpin = \"intrinsic\"` if servers should reach each other by their public IPv4 addresses."},
	xlat.ReasonHairpinError:     {"an ICMP error to hairpin with `hairpin = \"simple\"`.", "Set `hairpin = \"intrinsic\"` so that errors between hairpinning servers get through."},
	xlat.ReasonNoSink:           {"fragments or errors to send but nowhere to send them (a bug, not traffic).", "Report it: it is a bug in map646."},
}

// DropReasons explains every drop reason of the engine (xlat.Reason but
// ReasonNone), in the engine's order. A reason without a text has empty
// Meaning and Action.
func DropReasons() []Explanation {
	var e []Explanation
	for r := xlat.ReasonNone + 1; r < xlat.NumReasons; r++ {
		t := reasonTexts[r]
		e = append(e, Explanation{Name: r.String(), Meaning: t[0], Action: t[1]})
	}
	return e
}

// engineCounters explain the engine's counters that are neither
// translated packets nor drops: the unlabelled metrics of
// xlat.Totals.Visit, in its order (a test fails for one without an entry).
var engineCounters = []Explanation{
	{"emitted", "Packets the translator made itself: its ICMP errors (Fragmentation Needed, Packet Too Big, Time Exceeded, Parameter Problem, source route failed), its echo replies, the IPv6 fragments of DF=0 IPv4 packets larger than `lowest_ipv6_mtu`, and the datagrams cut from a DF=0 UDP super-packet too big for the IPv6 side (as fragments, or whole if they fit).", "Nothing: they are the translator doing its job. Many fragments: raise the IPv6 side's MTU (RFC 7755)."},
	{"hairpinned", "IPv6 packets from one server to another's public IPv4 address, translated twice (RFC 7757 section 4.2); also counted as translated 6to4.", "Nothing. Set `hairpin = \"off\"` if servers must not reach each other that way."},
	{"rate_limited", "ICMP messages the translator would have originated (errors and echo replies, not the errors it translates) but suppressed because its queue's bucket was empty: `icmp_errors_per_second` refills it, `icmp_errors_burst` is its size (RFC 4443 section 2.4 (f)). The packet that caused each is still counted under its drop reason.", "Nothing in a flood or a scan: the limit is doing its job. Growing under normal traffic (senders miss Packet Too Big, path MTU discovery stalls): raise `icmp_errors_per_second`, or fix the MTUs that cause the errors."},
}

// EngineCounters explains the engine's own counters (emitted,
// hairpinned, rate_limited), in the order of xlat.Totals.Visit.
func EngineCounters() []Explanation { return slices.Clone(engineCounters) }

// linkCounter is one field of LinkStats with its name and texts.
type linkCounter struct {
	Explanation
	get func(*LinkStats) uint64
}

// linkCounters are the link counters, in the order they are shown (a test
// fails for a LinkStats field without an entry). Meaning is a sentence.
var linkCounters = []linkCounter{
	{Explanation{"reads", "Packets (or GSO super-packets) read from the link.", "Nothing: traffic."}, func(s *LinkStats) uint64 { return s.Reads }},
	{Explanation{"writes", "Packets written to the link, translated or made by the translator (ICMP errors, fragments).", "Nothing: traffic."}, func(s *LinkStats) uint64 { return s.Writes }},
	{Explanation{"read_errors", "Failed reads, and packets larger than any IP packet.", "A few while stopping are normal. Growing: the link misbehaves; look at `dmesg` and the tun's state."}, func(s *LinkStats) uint64 { return s.ReadErrors }},
	{Explanation{"write_errors", "Failed or short writes; the packet is lost.", "The kernel refused translated packets: check the tun's MTU, `dmesg`, and that routes for the translated destinations exist."}, func(s *LinkStats) uint64 { return s.WriteErrors }},
	{Explanation{"short_vnet_hdr", "Reads shorter than a virtio_net_hdr.", "Report it: the link does not frame packets as the tun map646 opened does."}, func(s *LinkStats) uint64 { return s.ShortVnetHdr }},
	{Explanation{"invalid_vnet_hdr", "Packets whose offload metadata the kernel would refuse, that does not fit the packet's headers (a guest writing into an fd), or that gVisor cannot express; in NIC mode also super-packets the kernel has no virtio-net header for (GRO of IP-in-IP or GRE flows), which it drops.", "Report it; meanwhile `tun { offload = false }` avoids offload metadata."}, func(s *LinkStats) uint64 { return s.InvalidVnetHdr }},
	{Explanation{"not_ip", "Packets that are neither IPv4 nor IPv6; with an Ethernet `fd` also frames too short or longer than `mtu` + 14, other EtherTypes, and malformed ARP or ND.", "Nothing: something writes other frames into the link."}, func(s *LinkStats) uint64 { return s.NotIP }},
	{Explanation{"panics", "Packets the translator panicked on: dropped while the queue went on; the first of a burst is logged with the packet in hex.", "Report it with that log line: it is a bug in map646."}, func(s *LinkStats) uint64 { return s.Panics }},
	{Explanation{"no_next_hop", "NIC mode and an Ethernet `fd`: packets with no route or no link-layer address for their destination, the parking slots full, or parked for 3 s without their next hop answering (also counted in write_errors).", "Check the routes of the translated destinations on the appliance (`ip route get`) and that the next hops answer ARP or neighbour discovery."}, func(s *LinkStats) uint64 { return s.NoNextHop }},
	{Explanation{"wrong_side", "NIC mode with two NICs: IPv6 that arrived on the IPv4 NIC, or IPv4 on the IPv6 NIC, not addressed to the appliance itself; dropped, as the translator takes each family from its own side only (a neighbour there could otherwise have packets translated from a server's or a client's address). The kernel still gets its copy.", "Find who routes the other family to the appliance over that link: a misconfigured neighbour, or someone spoofing."}, func(s *LinkStats) uint64 { return s.WrongSide }},
	{Explanation{"link_chatter", "Link-scope IPv6 multicast on the link (MLD, router and neighbour solicitations from `::` or `fe80::/10` to `ff02::/16`): the host kernel's own as the tun comes up, or in NIC mode the other hosts' on the link; with an Ethernet `fd`, frames for another MAC and broadcast or multicast IP. Not translated, and not a drop.", "Nothing."}, func(s *LinkStats) uint64 { return s.LinkChatter }},
	{Explanation{"drop_log_suppressed", "Lines of the drop log (`log { drops = true }`) not written because `drops_per_second` was spent; the next line written says how many.", "Raise `drops_per_second` to see more, or read the drop counters."}, func(s *LinkStats) uint64 { return s.DropLogSuppressed }},
}

// LinkCounters explains the link counters, in the order VisitLinkStats
// gives them.
func LinkCounters() []Explanation {
	e := make([]Explanation, len(linkCounters))
	for i, c := range linkCounters {
		e[i] = c.Explanation
	}
	return e
}

// VisitLinkStats calls f with the name and value of every link counter of
// s, in the order of LinkCounters: the names are those of
// map646_link_events_total and `map646 stats`.
func VisitLinkStats(s *LinkStats, f func(name string, v uint64)) {
	for _, c := range linkCounters {
		f(c.Name, c.get(s))
	}
}
