package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"

	"github.com/hashicorp/hcl/v2"

	"github.com/map646/map646/mapping"
	"github.com/map646/map646/stack/xlat"
)

// The schema. Body.Content rejects anything not listed here, so a
// misspelt attribute or block is an error, never silently ignored.
var (
	fileSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
		{Type: "translator"},
		{Type: "interface", LabelNames: []string{"name"}},
		{Type: "route"},
		{Type: "metrics"},
		{Type: "log"},
		{Type: "run_as"},
		{Type: "bgp"},
		{Type: "router_advertisement", LabelNames: []string{"interface"}},
	}}
	translatorSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "prefix", Required: true},
			{Name: "mappings_file"},
			{Name: "lowest_ipv6_mtu"},
			{Name: "udp_zero_checksum"},
			{Name: "hairpin"},
			{Name: "mapping_counters"},
			{Name: "icmp_source_pool"},
			{Name: "deny_ipv4"},
			{Name: "ipv4_mtu"},
			{Name: "ipv6_mtu"},
			{Name: "ipv4_address"},
			{Name: "mappings_overlap"},
			{Name: "traffic_class"},
			{Name: "tos"},
			{Name: "mtu_plateaus"},
			{Name: "icmp_errors_per_second"},
			{Name: "icmp_errors_burst"},
		},
		Blocks: []hcl.BlockHeaderSchema{{Type: "mapping"}, {Type: "tun"}, {Type: "fd"}, {Type: "nic"}},
	}
	mappingSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "ipv4", Required: true},
		{Name: "ipv6", Required: true},
		{Name: "overlap"},
	}}
	tunSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "name"}, {Name: "queues"}, {Name: "routes"}, {Name: "mtu"}, {Name: "offload"},
		{Name: "ipv4_interfaces"}, {Name: "ipv6_interfaces"},
	}}
	fdSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "fd", Required: true}, {Name: "mtu"}, {Name: "queues"}, {Name: "ethernet"}, {Name: "mac"}, {Name: "vnet_hdr"},
		{Name: "ipv4_gateway"}, {Name: "ipv6_gateway"},
	}}
	nicSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "ipv4", Required: true}, {Name: "ipv6"}, {Name: "queues"},
	}}
	interfaceSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "addresses"}, {Name: "mtu"},
	}}
	routeSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "to", Required: true}, {Name: "via"}, {Name: "dev"},
	}}
	metricsSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "listen"}, {Name: "mapping_top"}}}
	logSchema     = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "level"}, {Name: "format"}, {Name: "drops"}, {Name: "drops_per_second"},
	}}
	runAsSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "user", Required: true}, {Name: "group"}}}
	bgpSchema   = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "local_as", Required: true},
			{Name: "router_id", Required: true},
			{Name: "listen_port"},
			{Name: "hold_time"},
			{Name: "keepalive"},
			{Name: "send_hold_time"},
			{Name: "connect_retry"},
			{Name: "ipv4_nexthop_ipv6"},
		},
		Blocks: []hcl.BlockHeaderSchema{{Type: "neighbor", LabelNames: []string{"address"}}},
	}
	neighborSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "remote_as", Required: true}, {Name: "password"}, {Name: "local_address"}, {Name: "max_prefixes"},
	}}
	raSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "preference"}, {Name: "router_lifetime"}, {Name: "interval"}, {Name: "route_lifetime"},
	}}
)

// DefaultICMPErrorsPerSecond is the rate of the ICMP messages each queue
// of the translator originates (xlat.DefaultICMPRate).
const DefaultICMPErrorsPerSecond = xlat.DefaultICMPRate

// Defaults. docs/configuration.md lists the same values.
const (
	DefaultLowestIPv6MTU   = 1280 // RFC 7915 section 4: the IPv6 minimum MTU
	DefaultUDPZeroChecksum = "compute"
	DefaultHairpin         = "intrinsic"
	DefaultTunName         = "map646"
	DefaultMetricsListen   = "[::1]:9646"
	DefaultLogLevel        = "info"
	DefaultLogFormat       = "text"
	// DefaultDropsPerSecond bounds the drop log (log.drops): enough to see
	// what is dropped, too few to flood a serial console.
	DefaultDropsPerSecond = 10
	// MaxDropsPerSecond is the highest drops_per_second accepted (the data
	// path's own limit, stack.MaxDropLogRate).
	MaxDropsPerSecond      = 100000
	DefaultBGPHoldTime     = 90  // RFC 4271 section 10
	DefaultBGPConnectRetry = 120 // RFC 4271 section 10
	// DefaultBGPSendHoldTime is the least default send_hold_time: RFC 9687
	// section 3.4 suggests the greater of 8 minutes and twice hold_time.
	DefaultBGPSendHoldTime = 480
	// maxBGPSendHoldTime is the largest send_hold_time accepted: the
	// default for the largest hold_time.
	maxBGPSendHoldTime = 2 * 65535
	// DefaultBGPMaxPrefixes bounds the routes a neighbor may send per
	// address family; the speaker imports none, so only a misconfigured or
	// hostile neighbor comes near it.
	DefaultBGPMaxPrefixes = 1000
	// maxBGPMaxPrefixes is the largest max_prefixes accepted: every
	// received route is held in memory even though it is ignored.
	maxBGPMaxPrefixes   = 1000000
	DefaultRAPreference = "medium"
	DefaultRAInterval   = 30 // seconds; RFC 4861 section 6.2.1 allows 4 to 1800
)

// MaxMappingTop bounds metrics.mapping_top: each entry exported is four
// series (packets and bytes, two directions).
const MaxMappingTop = 100

// DummyIPv4Address is RFC 7600's IPv4 dummy address: the translator's
// IPv4 address when neither ipv4_address nor an interface gives it one
// (draft-ietf-v6ops-icmpext-xlat-v6only-source proposes it as the source
// of ICMPv4 errors translated from IPv6-only routers).
var DummyIPv4Address = netip.AddrFrom4([4]byte{192, 0, 0, 8})

func (d *decoder) decodeFile(body hcl.Body) *Config {
	c := &Config{
		Log: Log{Level: DefaultLogLevel, Format: DefaultLogFormat, DropsPerSecond: DefaultDropsPerSecond},
	}
	content := d.content(body, fileSchema)
	if content == nil {
		return c
	}
	byType := content.Blocks.ByType()

	tr := byType["translator"]
	if len(tr) == 0 {
		d.errorf(content.MissingItemRange, "Missing translator block", "A translator block is required: it holds the prefix and the mappings.")
	}
	if b := d.singleBlock(tr, "translator"); b != nil {
		d.translator(b, &c.Translator)
	}

	seenIf := map[string]hcl.Range{}
	for _, b := range byType["interface"] {
		if d.interfaceLabel(b, seenIf, "Duplicate interface block", "is already configured") {
			c.Interfaces = append(c.Interfaces, d.iface(b))
		}
	}
	d.defaultIPv4Address(c)
	d.checkSides(c)
	seenRoute := map[netip.Prefix]hcl.Range{}
	for _, b := range byType["route"] {
		r, ok := d.route(b)
		if !ok {
			continue
		}
		// The kernel keeps one route per destination (and metric); a second
		// would fail to install or silently replace the first.
		if first, dup := seenRoute[r.To]; dup {
			d.errorf(b.DefRange, "Duplicate route", "A route to %v is already configured at %s.", r.To, posString(first))
			continue
		}
		seenRoute[r.To] = b.DefRange
		c.Routes = append(c.Routes, r)
	}
	if b := d.singleBlock(byType["metrics"], "metrics"); b != nil {
		c.Metrics.Listen = DefaultMetricsListen
		if a := d.metrics(b, &c.Metrics); a != nil && c.Metrics.MappingTop > 0 && !c.Translator.MappingCounters {
			d.errorf(a.Expr.Range(), "mapping_top without mapping counters",
				"mapping_top exports per-mapping counters, which are off: set mapping_counters = true in the translator block, or leave mapping_top out.")
		}
	}
	if b := d.singleBlock(byType["log"], "log"); b != nil {
		attrs := d.content(b.Body, logSchema).Attributes
		d.oneOf(attrs, "level", &c.Log.Level, "debug", "info", "warn", "error")
		d.oneOf(attrs, "format", &c.Log.Format, "text", "json")
		d.boolean(attrs, "drops", &c.Log.Drops)
		d.integer(attrs, "drops_per_second", &c.Log.DropsPerSecond, 1, MaxDropsPerSecond, false)
	}
	if b := d.singleBlock(byType["run_as"], "run_as"); b != nil {
		attrs := d.content(b.Body, runAsSchema).Attributes
		if a := d.str(attrs, "user", &c.RunAs.User); a != nil && c.RunAs.User == "" {
			d.errorf(a.Expr.Range(), "Invalid run_as user", "user must name a user (or a numeric uid); leave the block out to stay root.")
		}
		if a := d.str(attrs, "group", &c.RunAs.Group); a != nil && c.RunAs.Group == "" {
			d.errorf(a.Expr.Range(), "Invalid run_as group", "group must name a group (or a numeric gid); leave it out for the user's own group.")
		}
	}
	if b := d.singleBlock(byType["bgp"], "bgp"); b != nil {
		c.BGP = d.bgp(b)
	}
	seenRA := map[string]hcl.Range{}
	for _, b := range byType["router_advertisement"] {
		if d.interfaceLabel(b, seenRA, "Duplicate router_advertisement block", "already has one") {
			c.RouterAdvertisements = append(c.RouterAdvertisements, d.routerAdvertisement(b))
		}
	}
	return c
}

// checkSides refuses a name in tun.ipv4_interfaces whose interface block
// has IPv6 addresses only, and the reverse: the block puts it on the
// other side (Config.Sides), and with both rules its every packet would
// be refused.
func (d *decoder) checkSides(c *Config) {
	t := c.Translator.Tun
	for _, ifc := range c.Interfaces {
		has4, has6 := ifc.Families()
		switch {
		case has6 && !has4 && slices.Contains(t.IPv4Interfaces, ifc.Name):
			d.errorf(d.side4Ranges[ifc.Name], "Interface on both sides", "%q is in ipv4_interfaces, but its interface block gives it IPv6 addresses only, which puts it on the IPv6 side.", ifc.Name)
		case has4 && !has6 && slices.Contains(t.IPv6Interfaces, ifc.Name):
			d.errorf(d.side6Ranges[ifc.Name], "Interface on both sides", "%q is in ipv6_interfaces, but its interface block gives it IPv4 addresses only, which puts it on the IPv4 side.", ifc.Name)
		}
	}
}

// interfaceLabel checks a block labelled with an interface name: a valid
// name, and the first block of its kind for that interface (seen records
// where each was). It reports whether the block should be decoded.
func (d *decoder) interfaceLabel(b *hcl.Block, seen map[string]hcl.Range, dupSummary, dupVerb string) bool {
	name := b.Labels[0]
	if err := validIfName(name); err != nil {
		d.errorf(b.LabelRanges[0], "Invalid interface name", "%s.", err)
		return false
	}
	if first, dup := seen[name]; dup {
		d.errorf(b.DefRange, dupSummary, "Interface %q %s at %s.", name, dupVerb, posString(first))
		return false
	}
	seen[name] = b.DefRange
	return true
}

// defaultIPv4Address gives the translator an IPv4 address when the file
// does not: the first IPv4 address of the interface blocks, else RFC
// 7600's dummy address with a warning unless an icmp_source_pool makes
// the address matter less. Translated ICMPv4 errors from IPv6 routers
// without an IPv4 address (Packet Too Big among them) come from the pool
// or this address; without either they would be dropped and path MTU
// discovery would break (RFC 7915 section 5.2, RFC 6791).
func (d *decoder) defaultIPv4Address(c *Config) {
	t := &c.Translator
	if t.IPv4Address.IsValid() || !t.Prefix.IsValid() {
		return
	}
	for _, i := range c.Interfaces {
		for _, a := range i.Addresses {
			if a.Addr().Is4() {
				t.IPv4Address = a.Addr()
				return
			}
		}
	}
	t.IPv4Address = DummyIPv4Address
	if len(t.ICMPSourcePool) == 0 && !d.diags.HasErrors() {
		d.warnf(d.translatorRange, "No IPv4 address for ICMP errors",
			"Neither ipv4_address, nor icmp_source_pool, nor an interface block gives the translator an IPv4 address: ICMPv6 errors from IPv6 routers that have no IPv4 translation (Packet Too Big among them) are translated with the source %v (RFC 7600's dummy address), which networks that filter non-global sources drop, breaking path MTU discovery. Set ipv4_address to an IPv4 address of this translator, or icmp_source_pool (RFC 6791).",
			DummyIPv4Address)
	}
}

func (d *decoder) translator(b *hcl.Block, t *Translator) {
	d.translatorRange = b.DefRange
	content := d.content(b.Body, translatorSchema)
	if content == nil {
		return
	}
	attrs := content.Attributes
	*t = Translator{
		LowestIPv6MTU:   DefaultLowestIPv6MTU,
		UDPZeroChecksum: DefaultUDPZeroChecksum,
		Hairpin:         DefaultHairpin,
		ICMPSourcePool:  []netip.Prefix{},
		DenyIPv4:        []netip.Prefix{},
		Link:            LinkTun,
		Tun:             Tun{Name: DefaultTunName, Routes: true, Offload: true, IPv4Interfaces: []string{}, IPv6Interfaces: []string{}},

		ICMPErrorsPerSecond: DefaultICMPErrorsPerSecond,
	}

	if a := d.prefix(attrs, "prefix", &t.Prefix, ipv6Only, strictLen); a != nil {
		d.prefixRange = a.Expr.Range()
		if _, err := mapping.NewPrefix(t.Prefix); err != nil {
			d.errorf(a.Expr.Range(), "Invalid prefix", "%s.", err)
		} else {
			d.warnPrefix(a.Expr.Range(), t.Prefix)
		}
	}
	lowest := d.integer(attrs, "lowest_ipv6_mtu", &t.LowestIPv6MTU, 1280, 65535, false)
	d.oneOf(attrs, "udp_zero_checksum", &t.UDPZeroChecksum, "compute", "drop")
	d.oneOf(attrs, "hairpin", &t.Hairpin, "off", "simple", "intrinsic")
	d.boolean(attrs, "mapping_counters", &t.MappingCounters)
	if a := d.prefixList(attrs, "icmp_source_pool", &t.ICMPSourcePool, ipv4Only, network); a != nil {
		d.warnICMPSourcePool(a, t.ICMPSourcePool)
	}
	denyAttr := d.prefixList(attrs, "deny_ipv4", &t.DenyIPv4, ipv4Only, network)
	if a := d.addr(attrs, "ipv4_address", &t.IPv4Address, ipv4Only); a != nil {
		d.ipv4AddrRange = a.Expr.Range()
		if b := t.IPv4Address.As4(); b[0] == 0 || b[0] == 127 || b[0] >= 224 || (b[0] == 169 && b[1] == 254) {
			d.errorf(a.Expr.Range(), "Invalid ipv4_address", "%v cannot be the translator's address: it is this-network, loopback, link-local, multicast or reserved space, which the translator never translates (RFC 7915 section 4.1).", t.IPv4Address)
		}
	}
	d.tosSetting(attrs, "traffic_class", &t.TrafficClass)
	d.tosSetting(attrs, "tos", &t.TOS)
	d.mtuPlateaus(attrs, &t.MTUPlateaus)
	d.integer(attrs, "icmp_errors_per_second", &t.ICMPErrorsPerSecond, 1, xlat.MaxICMPRate, false)
	t.ICMPErrorsBurst = t.ICMPErrorsPerSecond
	d.integer(attrs, "icmp_errors_burst", &t.ICMPErrorsBurst, 1, xlat.MaxICMPRate, false)
	v4mtu := d.integer(attrs, "ipv4_mtu", &t.IPv4MTU, 68, 65535, true)
	v6mtu := d.integer(attrs, "ipv6_mtu", &t.IPv6MTU, 1280, 65535, true)
	if v4mtu != nil && v6mtu != nil && t.IPv4MTU > 0 && t.IPv6MTU > 0 && t.IPv6MTU < t.IPv4MTU+20 {
		d.warnf(v6mtu.Expr.Range(), "IPv6 MTU below IPv4 MTU + 20",
			"RFC 7755 recommends an IPv6 MTU at least 20 bytes larger than the IPv4 MTU, so that full-size IPv4 packets (%d bytes) fit after translation (%d bytes); smaller ones cost fragmentation or Packet Too Big round trips.",
			t.IPv4MTU, t.IPv4MTU+20)
	}
	if lowest != nil && v6mtu != nil && t.IPv6MTU > 0 && t.LowestIPv6MTU > t.IPv6MTU {
		d.warnf(lowest.Expr.Range(), "lowest_ipv6_mtu above ipv6_mtu",
			"lowest_ipv6_mtu (%d) is larger than this translator's own IPv6 MTU (%d): packets between the two sizes are not fragmented by the translator and will not fit.",
			t.LowestIPv6MTU, t.IPv6MTU)
	}

	for _, mb := range content.Blocks.OfType("mapping") {
		if e, overlap, ok := d.mappingBlock(mb); ok {
			t.Mappings = append(t.Mappings, e)
			d.mappingBlocks = append(d.mappingBlocks, mb.DefRange)
			d.blockOverlap = append(d.blockOverlap, overlap)
		}
	}
	var file string
	if a := d.str(attrs, "mappings_file", &file); a != nil {
		d.mappingsFile(a, file, t)
	}
	if a := d.boolean(attrs, "mappings_overlap", &d.csvOverlap); a != nil && d.csvOverlap && attrs["mappings_file"] == nil {
		d.errorf(a.Expr.Range(), "Invalid mappings_overlap", "mappings_overlap applies to the mappings_file entries, and there is no mappings_file; use overlap = true in mapping blocks.")
	}

	tunMTUSet := false
	var tunMTU *hcl.Attribute
	if tb := d.singleBlock(content.Blocks.OfType("tun"), "tun"); tb != nil {
		ta := d.content(tb.Body, tunSchema).Attributes
		if a := d.str(ta, "name", &t.Tun.Name); a != nil {
			if err := validIfName(t.Tun.Name); err != nil {
				d.errorf(a.Expr.Range(), "Invalid tun name", "%s.", err)
			}
		}
		// The kernel allows at most 256 queues per tun (MAX_TAP_QUEUES).
		d.integer(ta, "queues", &t.Tun.Queues, 0, 256, false)
		d.boolean(ta, "routes", &t.Tun.Routes)
		tunMTU = d.integer(ta, "mtu", &t.Tun.MTU, 1280, 65535, false)
		tunMTUSet = tunMTU != nil
		d.boolean(ta, "offload", &t.Tun.Offload)
		d.side4Ranges, d.side6Ranges = map[string]hcl.Range{}, map[string]hcl.Range{}
		a4 := d.ifNameList(ta, "ipv4_interfaces", &t.Tun.IPv4Interfaces, d.side4Ranges)
		a6 := d.ifNameList(ta, "ipv6_interfaces", &t.Tun.IPv6Interfaces, d.side6Ranges)
		for _, n := range t.Tun.IPv6Interfaces {
			if slices.Contains(t.Tun.IPv4Interfaces, n) {
				d.errorf(d.side6Ranges[n], "Interface on both sides", "%q is in ipv4_interfaces too (%s): an interface that carries both families is on neither side; leave it out of both lists.", n, posString(d.side4Ranges[n]))
			}
		}
		for _, side := range []map[string]hcl.Range{d.side4Ranges, d.side6Ranges} {
			if r, ok := side[t.Tun.Name]; ok {
				d.errorf(r, "Interface side is the tun", "%q is the tun, which the translated packets come out of; name the host's interfaces that face each side.", t.Tun.Name)
			}
		}
		for _, a := range []*hcl.Attribute{a4, a6} {
			if a != nil && !t.Tun.Routes {
				d.warnf(a.Expr.Range(), "Interface sides without routes",
					"%s only adds policy rules, and routes = false adds none: whoever routes into the tun must keep the other family off each side's interfaces.", a.Name)
			}
		}
	}
	defaultMTU := max(1500, t.IPv6MTU)
	if t.IPv4MTU > 0 {
		defaultMTU = max(defaultMTU, t.IPv4MTU+20)
	}
	if !tunMTUSet {
		t.Tun.MTU = defaultMTU
	} else if a := tunMTU; t.Tun.MTU < max(t.IPv4MTU, t.IPv6MTU) {
		d.warnf(a.Expr.Range(), "tun MTU below the link MTU",
			"The tun MTU (%d) is smaller than ipv4_mtu (%d) or ipv6_mtu (%d): full-size packets from those links cannot enter the tun, and the kernel answers them with ICMP errors instead of translating them. Leave mtu out to get max(1500, ipv6_mtu, ipv4_mtu + 20).",
			t.Tun.MTU, t.IPv4MTU, t.IPv6MTU)
	}
	d.linkMode(content.Blocks, t, defaultMTU)

	if denyAttr != nil {
		d.warnDenyCancels(denyAttr, t)
	}
	if len(t.Mappings) == 0 && !d.diags.HasErrors() {
		d.warnf(b.DefRange, "No mappings",
			"The translator has no mapping blocks and no mappings_file entries: IPv4 clients reach nothing on the IPv6 side (RFC 7757 EAM entries are what map IPv6 servers to public IPv4 addresses); only the RFC 6052 prefix translates.")
	}
}

// warnPrefix warns about RFC 6052 prefixes that NewPrefix accepts but that
// cannot work: translated addresses inside them would be multicast or
// link-local, or IPv4-compatible (::/96, deprecated by RFC 4291 section
// 2.5.5.1 and never routed).
func (d *decoder) warnPrefix(r hcl.Range, p netip.Prefix) {
	var why string
	switch a := p.Addr(); {
	case a.IsMulticast():
		why = "is multicast (ff00::/8): IPv4 clients would appear as multicast sources, which no IPv6 host answers (RFC 4291 section 2.7)"
	case a.IsLinkLocalUnicast():
		why = "is link-local (fe80::/10): its addresses are not routed beyond one link (RFC 4291 section 2.5.6)"
	case p == netip.MustParsePrefix("::/96"):
		why = "is ::/96, the IPv4-compatible space deprecated by RFC 4291 section 2.5.5.1; routers drop it"
	default:
		return
	}
	d.warnf(r, "Questionable prefix", "The translation prefix %v %s. Use the well-known 64:ff9b::/96 or a prefix from your own allocation.", p, why)
}

// rfc1918 is the private IPv4 space of RFC 1918 section 3.
var rfc1918 = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
}

// elemRange is where element i of a literal list attribute was written
// (the whole value when the list is not literal).
func elemRange(a *hcl.Attribute, i int) hcl.Range {
	if t, ok := a.Expr.(interface{ ExprList() []hcl.Expression }); ok {
		if elems := t.ExprList(); i < len(elems) {
			return elems[i].Range()
		}
	}
	return a.Expr.Range()
}

// warnICMPSourcePool warns about pool prefixes that make the translator's
// own ICMPv4 errors (RFC 6791 / RFC 7915 section 5.1) undeliverable or
// misleading: the whole IPv4 space, or private space, which strict uRPF
// and bogon filters on the way to an Internet client drop.
func (d *decoder) warnICMPSourcePool(a *hcl.Attribute, pool []netip.Prefix) {
	for i, p := range pool {
		switch {
		case p.Bits() == 0:
			d.warnf(elemRange(a, i), "Questionable icmp_source_pool",
				"%v would pick ICMPv4 error sources from the whole IPv4 space, including addresses that belong to others; RFC 6791 asks for a small pool of addresses that are yours.", p)
		default:
			for _, priv := range rfc1918 {
				if priv.Overlaps(p) {
					d.warnf(elemRange(a, i), "Questionable icmp_source_pool",
						"%v is private address space (RFC 1918, %v): ICMPv4 errors from it are dropped by bogon and uRPF filters on the way to Internet clients, which breaks Path MTU Discovery. RFC 6791 section 4 recommends a public address.", p, priv)
					break
				}
			}
		}
	}
}

// warnDenyCancels warns about deny_ipv4 entries that cover the IPv4 side
// of a mapping: traffic to that mapping is always dropped, so the mapping
// or the deny entry is a mistake.
func (d *decoder) warnDenyCancels(a *hcl.Attribute, t *Translator) {
	for i, p := range t.DenyIPv4 {
		first, n := -1, 0
		for j, e := range t.Mappings {
			if p.Overlaps(e.IPv4) {
				if first < 0 {
					first = j
				}
				n++
			}
		}
		if first < 0 {
			continue
		}
		others := ""
		if n > 1 {
			others = fmt.Sprintf(" and %d more mappings", n-1)
		}
		d.warnf(elemRange(a, i), "deny_ipv4 cancels a mapping",
			"deny_ipv4 %v covers the mapping %s at %s%s: packets to and from them are dropped instead of translated.",
			p, describe(t.Mappings[first]), posString(d.entryRange(first)), others)
	}
}

// linkMode reads the fd or nic block, if there is one: at most one of
// tun, fd and nic says how packets reach the translator.
func (d *decoder) linkMode(blocks hcl.Blocks, t *Translator, defaultMTU int) {
	var first *hcl.Block
	for _, b := range blocks {
		if b.Type != LinkTun && b.Type != LinkFD && b.Type != LinkNIC {
			continue
		}
		if first == nil {
			first = b
			continue
		}
		if b.Type != first.Type { // the same type twice is singleBlock's diagnostic
			d.errorf(b.DefRange, "Conflicting link blocks",
				"A translator is served by one link: a %s block is already at %s; use tun, fd or nic, not two of them.", first.Type, posString(first.DefRange))
		}
	}
	if fb := d.singleBlock(blocks.OfType(LinkFD), LinkFD); fb != nil {
		t.Link = LinkFD
		t.LinkPos = posString(fb.DefRange)
		t.FD.MTU = defaultMTU
		attrs := d.content(fb.Body, fdSchema).Attributes
		// 0, 1 and 2 are standard input, output and error.
		d.integer(attrs, "fd", &t.FD.FD, 3, 1<<20, false)
		d.integer(attrs, "mtu", &t.FD.MTU, 1280, 65535, false)
		t.FD.Queues = 1
		// The kernel allows at most 256 queues per tun (MAX_TAP_QUEUES).
		q := d.integer(attrs, "queues", &t.FD.Queues, 1, 256, false)
		d.fdEthernet(attrs, t)
		var vnet bool
		if d.boolean(attrs, "vnet_hdr", &vnet) != nil {
			t.FD.VnetHdr = map[bool]VnetHdr{true: VnetOn, false: VnetOff}[vnet]
		}
		if q != nil && t.FD.Ethernet && t.FD.Queues > 1 {
			d.errorf(q.Expr.Range(), "Invalid queues", "An Ethernet fd (a tap) is served on one descriptor; queues applies to bare-IP descriptors (a multi-queue tun's).")
		}
	}
	if nb := d.singleBlock(blocks.OfType(LinkNIC), LinkNIC); nb != nil {
		t.Link = LinkNIC
		attrs := d.content(nb.Body, nicSchema).Attributes
		for _, name := range []string{"ipv4", "ipv6"} {
			dst := &t.NIC.IPv4
			if name == "ipv6" {
				dst = &t.NIC.IPv6
			}
			if a := d.str(attrs, name, dst); a != nil {
				if err := validIfName(*dst); err != nil {
					d.errorf(a.Expr.Range(), "Invalid "+name, "%s.", err)
				}
			}
		}
		if t.NIC.IPv6 == "" {
			t.NIC.IPv6 = t.NIC.IPv4
		}
		// PACKET_FANOUT groups hold at most 256 sockets by default
		// (PACKET_FANOUT_MAX is larger, but queues cost memory each).
		d.integer(attrs, "queues", &t.NIC.Queues, 0, 256, false)
	}
}

// fdEthernet reads the fd block's Ethernet attributes: ethernet, and with
// it mac, ipv4_gateway and ipv6_gateway. A gateway must be a unicast
// address that the translator does not answer for itself (an EAM IPv4
// address, ipv4_address, an address in the prefix): it would resolve its
// own address and send its packets to itself.
func (d *decoder) fdEthernet(attrs hcl.Attributes, t *Translator) {
	d.boolean(attrs, "ethernet", &t.FD.Ethernet)
	for _, name := range []string{"mac", "ipv4_gateway", "ipv6_gateway"} {
		if a := attrs[name]; a != nil && !t.FD.Ethernet {
			d.errorf(a.NameRange, "Unexpected "+name, "%s applies to an fd that carries Ethernet frames (a tap); set ethernet = true, or leave %s out.", name, name)
			return
		}
	}
	var s string
	if a := d.str(attrs, "mac", &s); a != nil {
		mac, err := net.ParseMAC(s)
		switch {
		case err != nil:
			d.errorf(a.Expr.Range(), "Invalid mac", "%q is not a MAC address (write it as 02:00:5e:10:00:01).", s)
		case len(mac) != 6:
			d.errorf(a.Expr.Range(), "Invalid mac", "%q is not a 48-bit Ethernet address.", s)
		case mac[0]&1 != 0 || [6]byte(mac) == [6]byte{}:
			d.errorf(a.Expr.Range(), "Invalid mac", "%s is a group (multicast or broadcast) or all-zero address; the translator needs a unicast one (the low bit of the first byte clear).", mac)
		default:
			t.FD.MAC = [6]byte(mac)
		}
	}
	for _, name := range []string{"ipv4_gateway", "ipv6_gateway"} {
		dst, fam := &t.FD.IPv4Gateway, ipv4Only
		if name == "ipv6_gateway" {
			dst, fam = &t.FD.IPv6Gateway, ipv6Only
		}
		a := d.addr(attrs, name, dst, fam)
		if a == nil {
			continue
		}
		gw := *dst
		why := ""
		switch {
		case gw.IsUnspecified() || gw.IsMulticast() || gw.IsLoopback() || gw == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			why = "it is not a unicast address"
		case gw == t.IPv4Address:
			why = "it is the translator's own ipv4_address"
		case gw.Is6() && t.Prefix.IsValid() && t.Prefix.Contains(gw):
			why = fmt.Sprintf("it is inside the prefix %v, whose addresses the translator answers for", t.Prefix)
		}
		for _, e := range t.Mappings {
			if why == "" && e.IPv4.Contains(gw) {
				why = fmt.Sprintf("it is the mapped address of %s, which the translator answers for", describe(e))
			}
		}
		if why != "" {
			d.errorf(a.Expr.Range(), "Invalid "+name, "%v cannot be the next hop: %s.", gw, why)
			*dst = netip.Addr{}
		}
	}
}

// mappingBlock reads a mapping block; each side is an address (a /32 or
// /128 entry) or a prefix without host bits. overlap = true lets the entry
// lie inside another one (see mapping.TableOptions.Nested).
func (d *decoder) mappingBlock(b *hcl.Block) (e mapping.Entry, overlap, ok bool) {
	content := d.content(b.Body, mappingSchema)
	if content == nil {
		return e, false, false
	}
	a4 := d.prefix(content.Attributes, "ipv4", &e.IPv4, ipv4Only, network)
	a6 := d.prefix(content.Attributes, "ipv6", &e.IPv6, ipv6Only, network)
	d.boolean(content.Attributes, "overlap", &overlap)
	if a4 == nil || a6 == nil {
		return e, false, false
	}
	// The mapping package's per-entry rules (RFC 7757 section 3.1 suffix
	// lengths, host bits, special space, RFC 6052 section 3.1), checked
	// block by block so that every bad block is reported at once.
	if _, err := mapping.NewTable([]mapping.Entry{e}); err != nil {
		var ee *mapping.EntryError
		if errors.As(err, &ee) {
			err = ee.Err
		}
		d.errorf(b.DefRange, "Invalid mapping", "%s: %v.", describe(e), err)
		return e, false, false
	}
	return e, overlap, true
}

func (d *decoder) iface(b *hcl.Block) Interface {
	i := Interface{Name: b.Labels[0], Addresses: []netip.Prefix{}}
	attrs := d.content(b.Body, interfaceSchema).Attributes
	d.prefixList(attrs, "addresses", &i.Addresses, anyFamily, hostBits)
	if a := d.integer(attrs, "mtu", &i.MTU, 68, 65535, true); a != nil && i.MTU > 0 && i.MTU < 1280 {
		for _, p := range i.Addresses {
			if p.Addr().Is6() {
				d.errorf(a.Expr.Range(), "Invalid mtu", "interface %q has IPv6 address %v, and IPv6 needs an MTU of at least 1280 (RFC 8200 section 5).", i.Name, p)
				break
			}
		}
	}
	return i
}

func (d *decoder) route(b *hcl.Block) (Route, bool) {
	var r Route
	attrs := d.content(b.Body, routeSchema).Attributes
	to := d.prefix(attrs, "to", &r.To, anyFamily, strictLen)
	via := d.addr(attrs, "via", &r.Via, anyFamily)
	dev := d.str(attrs, "dev", &r.Dev)
	ok := to != nil && (attrs["via"] == nil || via != nil) && (attrs["dev"] == nil || dev != nil)
	if dev != nil {
		if err := validIfName(r.Dev); err != nil {
			d.errorf(dev.Expr.Range(), "Invalid dev", "%s.", err)
			ok = false
		}
	}
	if attrs["via"] == nil && attrs["dev"] == nil {
		d.errorf(b.DefRange, "Incomplete route", "A route needs a via (next hop), a dev (on-link), or both.")
		return r, false
	}
	if !ok {
		return r, false
	}
	if via != nil {
		switch {
		case r.Via.IsUnspecified() || r.Via.IsMulticast():
			d.errorf(via.Expr.Range(), "Invalid via", "%v cannot be a next hop.", r.Via)
			ok = false
		case r.To.Addr().Is6() && r.Via.Is4():
			d.errorf(via.Expr.Range(), "Invalid via", "an IPv6 route (%v) needs an IPv6 next hop, not %v.", r.To, r.Via)
			ok = false
		case r.Via.Is6() && r.Via.IsLinkLocalUnicast() && r.Dev == "":
			d.errorf(via.Expr.Range(), "Invalid via", "the link-local next hop %v needs a dev to say which link it is on.", r.Via)
			ok = false
		}
		// An IPv4 route through an IPv6 next hop is allowed: Linux
		// (RTA_VIA) and RFC 8950 support it.
	}
	return r, ok
}

// metrics decodes the metrics block; it returns the mapping_top
// attribute, if there is one.
func (d *decoder) metrics(b *hcl.Block, m *Metrics) (top *hcl.Attribute) {
	attrs := d.content(b.Body, metricsSchema).Attributes
	top = d.integer(attrs, "mapping_top", &m.MappingTop, 0, MaxMappingTop, false)
	a := d.str(attrs, "listen", &m.Listen)
	if a == nil || m.Listen == "" {
		return top
	}
	host, port, err := net.SplitHostPort(m.Listen)
	if err != nil {
		d.errorf(a.Expr.Range(), "Invalid listen", "%q is not host:port (write IPv6 addresses in brackets, e.g. [::1]:9646), or \"\" to disable metrics.", m.Listen)
		return top
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		d.errorf(a.Expr.Range(), "Invalid listen", "%q: the port must be a number from 1 to 65535.", m.Listen)
		return top
	}
	if host != "" {
		if _, err := parseAddr(host, anyFamily); err != nil {
			d.errorf(a.Expr.Range(), "Invalid listen", "%q: the host must be an IP address or empty (all addresses).", m.Listen)
		}
	}
	return top
}

func (d *decoder) asNumber(attrs hcl.Attributes, name string, dst *uint32) *hcl.Attribute {
	var n int
	a := d.integer(attrs, name, &n, 1, 4294967295, false)
	if a == nil {
		return nil
	}
	// RFC 6793 section 9: AS_TRANS stands in for 4-octet ASes on old
	// speakers and must not be anyone's own AS.
	if n == 23456 {
		d.errorf(a.Expr.Range(), "Invalid "+name, "23456 is AS_TRANS (RFC 6793), which is reserved.")
		return nil
	}
	*dst = uint32(n)
	return a
}

func (d *decoder) bgp(b *hcl.Block) *BGP {
	g := &BGP{HoldTime: DefaultBGPHoldTime, ConnectRetry: DefaultBGPConnectRetry, Neighbors: []Neighbor{}}
	content := d.content(b.Body, bgpSchema)
	if content == nil {
		return g
	}
	attrs := content.Attributes
	d.asNumber(attrs, "local_as", &g.LocalAS)
	if a := d.addr(attrs, "router_id", &g.RouterID, ipv4Only); a != nil && g.RouterID.IsUnspecified() {
		// RFC 6286 section 2.1: a non-zero 4-octet identifier.
		d.errorf(a.Expr.Range(), "Invalid router_id", "the BGP Identifier must not be 0.0.0.0 (RFC 6286 section 2.1).")
	}
	d.integer(attrs, "listen_port", &g.ListenPort, 0, 65535, false)
	// RFC 4271 section 4.2: the hold time is 0 or at least 3 seconds. 0
	// (no KEEPALIVEs at all) would leave a dead translator's routes in
	// place forever, and the embedded speaker (GoBGP) cannot express it, so
	// it is refused.
	hold := d.integer(attrs, "hold_time", &g.HoldTime, 3, 65535, false)
	g.Keepalive = g.HoldTime / 3
	if ka := d.integer(attrs, "keepalive", &g.Keepalive, 1, 65535, false); ka != nil && (hold != nil || attrs["hold_time"] == nil) && g.Keepalive >= g.HoldTime {
		d.errorf(ka.Expr.Range(), "Invalid keepalive", "keepalive (%d) must be shorter than hold_time (%d); RFC 4271 section 10 suggests a third of it.", g.Keepalive, g.HoldTime)
	}
	// RFC 9687 section 3.4: SendHoldTime must be greater than the hold
	// time, and KEEPALIVEs (sent more often than that) are what keep a
	// sender that can write from looking stalled.
	g.SendHoldTime = max(DefaultBGPSendHoldTime, 2*g.HoldTime)
	if sh := d.integer(attrs, "send_hold_time", &g.SendHoldTime, 4, maxBGPSendHoldTime, false); sh != nil && (hold != nil || attrs["hold_time"] == nil) && g.SendHoldTime <= g.HoldTime {
		d.errorf(sh.Expr.Range(), "Invalid send_hold_time", "send_hold_time (%d) must be longer than hold_time (%d) (RFC 9687 section 3.4).", g.SendHoldTime, g.HoldTime)
	}
	d.integer(attrs, "connect_retry", &g.ConnectRetry, 1, 65535, false)
	d.boolean(attrs, "ipv4_nexthop_ipv6", &g.IPv4NextHopIPv6)

	nbs := content.Blocks.OfType("neighbor")
	if len(nbs) == 0 {
		d.errorf(b.DefRange, "Missing neighbor", "A bgp block needs at least one neighbor block.")
	}
	seen := map[netip.Addr]hcl.Range{}
	for _, nb := range nbs {
		n := Neighbor{MaxPrefixes: DefaultBGPMaxPrefixes}
		addr, err := parseAddr(nb.Labels[0], anyFamily)
		if err != nil {
			d.errorf(nb.LabelRanges[0], "Invalid neighbor", "%s.", err)
			continue
		}
		if addr.IsUnspecified() || addr.IsMulticast() {
			d.errorf(nb.LabelRanges[0], "Invalid neighbor", "%v cannot be a BGP neighbor.", addr)
			continue
		}
		if first, dup := seen[addr]; dup {
			d.errorf(nb.DefRange, "Duplicate neighbor", "Neighbor %v is already configured at %s.", addr, posString(first))
			continue
		}
		seen[addr] = nb.DefRange
		n.Address = addr
		na := d.content(nb.Body, neighborSchema).Attributes
		d.asNumber(na, "remote_as", &n.RemoteAS)
		if a := d.str(na, "password", &n.Password); a != nil && len(n.Password) > 80 {
			// TCP_MD5SIG_MAXKEYLEN in the Linux kernel.
			d.errorf(a.Expr.Range(), "Invalid password", "TCP MD5 keys are at most 80 bytes; this one has %d.", len(n.Password))
		}
		if a := d.addr(na, "local_address", &n.LocalAddress, anyFamily); a != nil && n.LocalAddress.Is4() != addr.Is4() {
			d.errorf(a.Expr.Range(), "Invalid local_address", "%v and the neighbor %v are of different address families.", n.LocalAddress, addr)
		}
		d.integer(na, "max_prefixes", &n.MaxPrefixes, 1, maxBGPMaxPrefixes, false)
		g.Neighbors = append(g.Neighbors, n)
	}
	return g
}

func (d *decoder) routerAdvertisement(b *hcl.Block) RouterAdvertisement {
	ra := RouterAdvertisement{Interface: b.Labels[0], Preference: DefaultRAPreference, Interval: DefaultRAInterval}
	attrs := d.content(b.Body, raSchema).Attributes
	d.oneOf(attrs, "preference", &ra.Preference, "low", "medium", "high")
	// RFC 4861 section 6.2.1: MaxRtrAdvInterval is 4 to 1800 seconds.
	interval := d.integer(attrs, "interval", &ra.Interval, 4, 1800, false)
	intervalOK := interval != nil || attrs["interval"] == nil
	// AdvDefaultLifetime: 0, or MaxRtrAdvInterval to 9000 seconds.
	if a := d.integer(attrs, "router_lifetime", &ra.RouterLifetime, 1, 9000, true); a != nil && intervalOK && ra.RouterLifetime != 0 && ra.RouterLifetime < ra.Interval {
		d.errorf(a.Expr.Range(), "Invalid router_lifetime", "router_lifetime (%d) must be 0 or at least interval (%d) (RFC 4861 section 6.2.1).", ra.RouterLifetime, ra.Interval)
	}
	ra.RouteLifetime = 3 * ra.Interval
	// RFC 4191 section 2.3: 0xffffffff means forever.
	if a := d.integer(attrs, "route_lifetime", &ra.RouteLifetime, 1, 0xffffffff, false); a != nil && intervalOK && ra.RouteLifetime < ra.Interval {
		d.errorf(a.Expr.Range(), "Invalid route_lifetime", "route_lifetime (%d) is shorter than interval (%d): the route would expire between advertisements.", ra.RouteLifetime, ra.Interval)
	}
	return ra
}

// describe is used in diagnostics about a mapping entry.
func describe(e mapping.Entry) string { return fmt.Sprintf("%v = %v", e.IPv4, e.IPv6) }
