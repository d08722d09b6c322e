// Package config reads the HCL file that describes one map646 appliance: the
// translator (RFC 6052 prefix, RFC 7757 explicit address mappings, RFC 7915
// policy), the appliance's own interfaces and routes, metrics, logging, and
// the optional BGP speaker and router advertisements.
//
// Parse and Load check everything they can without touching the system, so a
// Config they return is complete (every default filled in) and valid: the
// address map has already been built once. Every problem is reported as an
// HCL diagnostic with file, line and column; see Error.
//
// docs/configuration.md is the reference for operators; keep it in step
// with the schema and the defaults here.
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/map646/map646/mapping"
	"github.com/map646/map646/stack/xlat"
)

// Config is one complete appliance configuration.
type Config struct {
	File   string // the HCL file's name as given to Load or Parse
	Digest string // hex SHA-256 of the HCL bytes followed by the mappings file's bytes

	Translator           Translator
	Interfaces           []Interface // appliance (VM / PID 1) mode: NICs to configure
	Routes               []Route     // appliance mode: static routes
	Metrics              Metrics
	Log                  Log
	RunAs                RunAs
	BGP                  *BGP                  // nil: no BGP speaker
	RouterAdvertisements []RouterAdvertisement // none: no router advertisements

	// Warnings are diagnostics that do not make the file invalid
	// (e.g. an IPv6 MTU below the IPv4 MTU + 20 that RFC 7755 recommends).
	Warnings hcl.Diagnostics

	snap   *mapping.Snapshot // built and checked by Parse; see Xlat
	origin mappingOrigin     // where each mapping was written; see MappingOrigin
}

// Translator is the `translator` block: what to translate and how.
type Translator struct {
	Prefix          netip.Prefix    // RFC 6052 prefix: where IPv4 clients appear on the IPv6 side
	Mappings        []mapping.Entry // RFC 7757 EAM entries: the mapping blocks in order, then the mappings_file lines
	MappingsFile    string          // resolved path (relative to the HCL file's directory); "" if none
	MappingsName    string          // mappings_file as written in the HCL file (the image builder places it for the guest)
	LowestIPv6MTU   int             // RFC 7915 section 4: default 1280
	UDPZeroChecksum string          // "compute" (default) or "drop" (RFC 7915 section 4.5)
	Hairpin         string          // "off", "simple" or "intrinsic" (default; RFC 7757 section 4.2)
	ICMPSourcePool  []netip.Prefix  // RFC 6791 sources for ICMPv4 errors from untranslatable IPv6 routers
	DenyIPv4        []netip.Prefix  // never translated
	IPv4MTU         int             // MTU towards the IPv4 side; 0: unknown
	IPv6MTU         int             // MTU towards the IPv6 side; 0: unknown
	// TrafficClass is `traffic_class`: how the IPv6 Traffic Class of a
	// packet translated 4to6 is made (RFC 7915 section 4.1); TOS is `tos`,
	// the IPv4 Type of Service of one translated 6to4 (section 5.1). The
	// zero value copies (the default).
	TrafficClass xlat.TOS
	TOS          xlat.TOS
	// MTUPlateaus is `mtu_plateaus` as written (RFC 1191 section 7, used
	// by RFC 7915 section 4.2); nil: the RFC's table.
	MTUPlateaus []int
	// ICMPErrorsPerSecond and ICMPErrorsBurst are the token bucket of the
	// ICMP messages each queue originates (default: 100 per second, a
	// burst of as many).
	ICMPErrorsPerSecond int
	ICMPErrorsBurst     int
	// IPv4Address is the translator's own IPv4 address: the source of its
	// ICMPv4 errors and of translated ones from IPv6 routers without an
	// IPv4 address when ICMPSourcePool is empty. Default: the first IPv4
	// address of the interface blocks, else DummyIPv4Address.
	IPv4Address netip.Addr
	// MappingCounters turns on per-entry packet and byte counters
	// (`map646 stats --mappings`, metrics.mapping_top). Off by default:
	// they cost memory per entry and queue (docs/configuration.md).
	MappingCounters bool
	// Link is how packets reach the translator: LinkTun (default, the
	// `tun` block), LinkFD (the `fd` block) or LinkNIC (the `nic` block).
	Link string
	Tun  Tun
	FD   FD
	NIC  NIC
	// LinkPos is where the fd block was written,
	// "file:line:col": the start-up checks of the link itself (what an
	// inherited descriptor turns out to carry) name it.
	LinkPos string
}

// Link modes: the values of Translator.Link.
const (
	LinkTun = "tun" // host mode: the kernel routes into the translator's tun
	LinkFD  = "fd"  // an inherited file descriptor carrying bare IP packets
	LinkNIC = "nic" // appliance mode: AF_PACKET on the NICs, kernel forwarding off
)

// FD is the `fd` block inside `translator`: a descriptor handed over by a
// supervisor or VM manager (a tun opened with IFF_NO_PI, or a datagram or
// seqpacket socket), one bare IP packet per read and write, behind a
// virtio_net_hdr if the tun was opened with IFF_VNET_HDR (see VnetHdr).
// Whoever hands it over routes into it.
//
// With Ethernet, the descriptor carries one Ethernet frame per read and
// write instead (a tap opened with IFF_TAP|IFF_NO_PI, a VM's NIC): the
// translator is then a host on that segment, with its own link address,
// answering ARP and Neighbor Solicitations for the addresses it
// translates to (the EAM IPv4 addresses, its ipv4_address, the RFC 6052
// prefix) and resolving the next hop of each translated packet: the
// family's gateway, or the destination itself (on-link).
type FD struct {
	FD  int // the descriptor number in this process; 3 or more
	MTU int // the link's IP MTU; default: as for the tun
	// Queues: the descriptors FD … FD+Queues-1, each one queue of a
	// multi-queue tun (IFF_MULTI_QUEUE), as socket activation and exec
	// hand over consecutive descriptors; default 1. Bare IP only.
	Queues int

	// VnetHdr says whether every packet has a virtio_net_hdr in front:
	// VnetAuto (default) asks a tun or tap (TUNGETIFF: IFF_VNET_HDR,
	// TUNGETVNETHDRSZ) and takes a socket to have none; VnetOn and
	// VnetOff say so for a socket, and for a tun must agree with it.
	VnetHdr VnetHdr

	Ethernet bool // frames, not bare IP packets: a tap
	// MAC is the translator's link address with Ethernet; zero (default):
	// one derived from the prefix and FD, locally administered.
	MAC         [6]byte
	IPv4Gateway netip.Addr // next hop of translated IPv4 with Ethernet; invalid: on-link
	IPv6Gateway netip.Addr // next hop of translated IPv6 with Ethernet; invalid: on-link
}

// VnetHdr is the fd block's vnet_hdr: unset, true or false.
type VnetHdr uint8

// The values of FD.VnetHdr.
const (
	VnetAuto VnetHdr = iota // ask the descriptor
	VnetOn                  // vnet_hdr = true
	VnetOff                 // vnet_hdr = false
)

// NIC is the `nic` block inside `translator`: the appliance reads transit
// packets off its NICs with AF_PACKET sockets and sends the translated ones
// out itself, to next hops from the kernel's routing and neighbour tables;
// kernel forwarding is turned off.
type NIC struct {
	IPv4   string // the NIC facing the IPv4 side
	IPv6   string // the NIC facing the IPv6 side; default: IPv4
	Queues int    // AF_PACKET sockets per NIC in one fanout group; 0 (default): one per CPU
}

// Tun is the `tun` block inside `translator`: the device the kernel routes
// translatable traffic into.
type Tun struct {
	Name    string // default "map646"
	Queues  int    // 0 (default): one per CPU
	Routes  bool   // route the mapped IPv4 prefixes and the RFC 6052 prefix into the tun; default true
	MTU     int    // default: the larger of 1500, IPv6MTU and IPv4MTU+20
	Offload bool   // virtio-net header offloads (checksum, TSO, USO); default true
	// IPv4Interfaces and IPv6Interfaces name the host's interfaces that
	// face only the IPv4 side or only the IPv6 side, besides those the
	// interface blocks tell (Config.Sides): the kernel refuses to route
	// a packet of the other family that arrives on one into the tun.
	IPv4Interfaces []string
	IPv6Interfaces []string
}

// Sides returns the interfaces that face only the IPv4 side (v4) and
// only the IPv6 side (v6): those named in tun.ipv4_interfaces and
// tun.ipv6_interfaces, then the interface blocks with addresses of one
// family only, each once, in that order. A block with addresses of both
// families, or none, is on neither side: it cannot be told. A packet of
// one family that arrives on the other side's interface is not the
// translator's to take (RFC 7915 translates IPv6 from the IPv6 side and
// IPv4 from the IPv4 side): taken, it would let a neighbour on the IPv4
// link have IPv4 sent from a server's public address, or one on the IPv6
// link pose as an IPv4 client.
func (c *Config) Sides() (v4, v6 []string) {
	v4 = slices.Clone(c.Translator.Tun.IPv4Interfaces)
	v6 = slices.Clone(c.Translator.Tun.IPv6Interfaces)
	for _, ifc := range c.Interfaces {
		has4, has6 := ifc.Families()
		switch {
		case has4 && !has6 && !slices.Contains(v4, ifc.Name):
			v4 = append(v4, ifc.Name)
		case has6 && !has4 && !slices.Contains(v6, ifc.Name):
			v6 = append(v6, ifc.Name)
		}
	}
	return v4, v6
}

// Interface is an `interface "name"` block: one of the appliance's own NICs.
type Interface struct {
	Name      string
	Addresses []netip.Prefix // address with its prefix length, e.g. 203.0.113.1/28
	MTU       int            // 0: leave as it is
}

// Families reports whether the block gives its interface IPv4 addresses,
// IPv6 addresses, or both; one family alone puts it on that side.
func (i Interface) Families() (has4, has6 bool) {
	for _, a := range i.Addresses {
		has4 = has4 || a.Addr().Is4()
		has6 = has6 || a.Addr().Is6()
	}
	return has4, has6
}

// Route is a `route` block: a static route of the appliance.
type Route struct {
	To  netip.Prefix
	Via netip.Addr // invalid (zero) when the route is on-link via Dev
	Dev string     // "" when Via alone decides
}

// Metrics is the `metrics` block.
type Metrics struct {
	Listen string // host:port of the Prometheus endpoint and /healthz; "" disables
	// MappingTop exports the per-entry counters of this many entries, the
	// busiest by packets (0, the default: none; at most MaxMappingTop).
	// Needs translator.mapping_counters.
	MappingTop int
}

// Log is the `log` block.
type Log struct {
	Level  string // "debug", "info" (default), "warn", "error"
	Format string // "text" (default) or "json"
	// Drops turns on a warning per dropped packet with its addresses,
	// ports, protocol and drop reason (like TAYGA's `log drop`), at most
	// DropsPerSecond lines a second; the rest are counted. Off by default:
	// drops are otherwise only counted and summarised.
	Drops          bool
	DropsPerSecond int
}

// RunAs is the `run_as` block: the user (and group) the translator runs as
// once it is set up, keeping only the capabilities it needs. The names
// are resolved on the host that runs it; empty: stay root.
type RunAs struct {
	User  string // a user name or numeric uid
	Group string // a group name or numeric gid; "": the user's primary group
}

// BGP is the `bgp` block: the speaker that announces the translated prefixes.
type BGP struct {
	LocalAS         uint32
	RouterID        netip.Addr
	ListenPort      int // 0: outgoing connections only
	HoldTime        int // seconds; default 90 (RFC 4271 section 10)
	Keepalive       int // seconds; default HoldTime/3
	SendHoldTime    int // seconds; > HoldTime, default max(480, 2×HoldTime) (RFC 9687 section 3.4)
	ConnectRetry    int // seconds; default 120 (RFC 4271 section 10)
	IPv4NextHopIPv6 bool
	Neighbors       []Neighbor
}

// Neighbor is a `neighbor "address"` block inside `bgp`.
type Neighbor struct {
	Address      netip.Addr
	RemoteAS     uint32
	Password     string     // TCP MD5 signature key (RFC 2385); "" for none
	LocalAddress netip.Addr // invalid (zero): chosen by the kernel
	// MaxPrefixes is the most routes of one address family the neighbor may
	// send before the session is ended (RFC 4486 Cease subcode 1).
	MaxPrefixes int
}

// RouterAdvertisement is a `router_advertisement "interface"` block: RFC 4861
// advertisements carrying an RFC 4191 route for the translated prefixes.
type RouterAdvertisement struct {
	Interface      string
	Preference     string // "low", "medium" (default) or "high" (RFC 4191 section 2.1)
	RouterLifetime int    // seconds; 0 (default): not a default router
	Interval       int    // seconds between unsolicited advertisements; default 30
	RouteLifetime  int    // seconds; default 3 * Interval
}

// Parse checks src as the HCL file named filename. A mappings_file is read
// relative to filename's directory. An invalid file gives an *Error; so
// does one nested deeper than MaxNesting, checked before HCL parses it.
func Parse(src []byte, filename string) (*Config, error) {
	return parse(src, filename, fileSource{})
}

// Digest is Config.Digest of an HCL file's bytes and its mappings file's
// (nil if none).
func Digest(hclSrc, mappingsSrc []byte) string {
	h := sha256.New()
	h.Write(hclSrc)
	h.Write(mappingsSrc)
	return hex.EncodeToString(h.Sum(nil))
}

func parse(src []byte, filename string, fsrc fileSource) (*Config, error) {
	files := map[string]*hcl.File{}
	if len(src) > MaxConfigBytes {
		return nil, fmt.Errorf("%s is %d bytes, more than the limit of %d", filename, len(src), MaxConfigBytes)
	}
	if diags := checkNesting(src, filename); diags.HasErrors() {
		files[filename] = &hcl.File{Bytes: src}
		return nil, &Error{Diagnostics: diags, Files: files}
	}
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if f != nil {
		files[filename] = f
	}
	if diags.HasErrors() {
		return nil, &Error{Diagnostics: diags, Files: files}
	}
	if diags := checkOperands(f.Body.(*hclsyntax.Body)); diags.HasErrors() {
		return nil, &Error{Diagnostics: diags, Files: files}
	}
	d := &decoder{files: files, dir: filepath.Dir(filename), src: fsrc}
	c := d.decodeFile(f.Body)
	c.File = filename

	c.Digest = Digest(src, d.mappingsSrc)

	if !d.diags.HasErrors() {
		d.buildMap(c, d.prefixRange)
	}
	var errs, warns hcl.Diagnostics
	for _, x := range d.diags {
		if x.Severity == hcl.DiagError {
			errs = append(errs, x)
		} else {
			warns = append(warns, x)
		}
	}
	if len(errs) > 0 {
		return nil, &Error{Diagnostics: append(errs, warns...), Files: files}
	}
	c.Warnings = warns
	return c, nil
}

// Snapshot is the address map Parse built from Translator.Prefix and
// Translator.Mappings. A Config is treated as immutable once parsed.
func (c *Config) Snapshot() *mapping.Snapshot { return c.snap }

// Summary is a one-line description for logs and `map646 check`.
func (c *Config) Summary() string {
	return fmt.Sprintf("%d mappings, prefix %v, digest %s", len(c.Translator.Mappings), c.Translator.Prefix, c.Digest)
}
