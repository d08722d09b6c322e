package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/map646/map646/mapping"
	"github.com/map646/map646/stack/xlat"
)

const minimal = `
translator {
  prefix = "2001:db8:64::/96"
}
`

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal), "min.hcl")
	if err != nil {
		t.Fatal(err)
	}
	want := Translator{
		Prefix:          netip.MustParsePrefix("2001:db8:64::/96"),
		LowestIPv6MTU:   1280,
		UDPZeroChecksum: "compute",
		Hairpin:         "intrinsic",
		ICMPSourcePool:  []netip.Prefix{},
		DenyIPv4:        []netip.Prefix{},
		IPv4Address:     DummyIPv4Address,
		Link:            "tun",
		Tun:             Tun{Name: "map646", Queues: 0, Routes: true, MTU: 1500, Offload: true, IPv4Interfaces: []string{}, IPv6Interfaces: []string{}},

		ICMPErrorsPerSecond: 100, ICMPErrorsBurst: 100,
	}
	if !reflect.DeepEqual(c.Translator, want) {
		t.Errorf("Translator:\n got %+v\nwant %+v", c.Translator, want)
	}
	if c.Log != (Log{Level: "info", Format: "text", DropsPerSecond: DefaultDropsPerSecond}) || c.RunAs != (RunAs{}) {
		t.Errorf("Log = %+v, RunAs = %+v", c.Log, c.RunAs)
	}
	if c.Metrics.Listen != "" || c.BGP != nil || c.Interfaces != nil || c.Routes != nil || c.RouterAdvertisements != nil {
		t.Errorf("absent blocks are not empty: %+v", c)
	}
	if c.File != "min.hcl" || len(c.Digest) != 64 {
		t.Errorf("File %q Digest %q", c.File, c.Digest)
	}
	if c.Snapshot() == nil || c.Snapshot().Table().Len() != 0 {
		t.Errorf("Snapshot not built")
	}
}

const full = `
translator {
  prefix = "2001:db8:64::/96"
  mapping {
    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }
  mapping {
    ipv4 = "198.51.100.128/25"
    ipv6 = "2001:db8:6::100:0/121"
  }
  lowest_ipv6_mtu   = 1400
  udp_zero_checksum = "drop"
  hairpin           = "simple"
  icmp_source_pool  = ["203.0.113.64/26"]
  deny_ipv4         = ["192.0.2.0/24", "203.0.113.99"]
  ipv4_mtu          = 1500
  ipv6_mtu          = 1520
  mapping_counters  = true
  tun {
    name    = "xl0"
    queues  = 4
    routes  = false
    mtu     = 9000
    offload = false
  }
}

interface "eth0" {
  addresses = ["203.0.113.1/28", "2001:db8:ffff::1/64"]
  mtu       = 1520
}
interface "eth1" {}

route {
  to  = "0.0.0.0/0"
  via = "203.0.113.14"
}
route {
  to  = "2001:db8:6::/64"
  via = "fe80::1"
  dev = "eth1"
}
route {
  to  = "192.0.2.0/24"
  dev = "eth0"
}

metrics {
  mapping_top = 10
}
log {
  level            = "debug"
  format           = "json"
  drops            = true
  drops_per_second = 25
}

bgp {
  local_as          = 64512
  router_id         = "203.0.113.1"
  listen_port       = 179
  hold_time         = 9
  send_hold_time    = 120
  connect_retry     = 5
  ipv4_nexthop_ipv6 = true
  neighbor "203.0.113.14" {
    remote_as     = 64500
    password      = "s3cret"
    local_address = "203.0.113.1"
    max_prefixes  = 50
  }
  neighbor "2001:db8:ffff::14" {
    remote_as = 4200000000
  }
}

router_advertisement "eth1" {
  preference      = "high"
  router_lifetime = 0
  interval        = 10
}
router_advertisement "eth2" {
  route_lifetime = 86400
}
`

func TestFull(t *testing.T) {
	c, err := Parse([]byte(full), "full.hcl")
	if err != nil {
		t.Fatal(err)
	}
	pp := netip.MustParsePrefix
	want := &Config{
		File:   "full.hcl",
		Digest: c.Digest,
		Translator: Translator{
			Prefix: pp("2001:db8:64::/96"),
			Mappings: []mapping.Entry{
				{IPv4: pp("198.51.100.10/32"), IPv6: pp("2001:db8:6::10/128")},
				{IPv4: pp("198.51.100.128/25"), IPv6: pp("2001:db8:6::100:0/121")},
			},
			LowestIPv6MTU:   1400,
			UDPZeroChecksum: "drop",
			Hairpin:         "simple",
			ICMPSourcePool:  []netip.Prefix{pp("203.0.113.64/26")},
			DenyIPv4:        []netip.Prefix{pp("192.0.2.0/24"), pp("203.0.113.99/32")},
			IPv4MTU:         1500,
			IPv6MTU:         1520,
			MappingCounters: true,
			IPv4Address:     netip.MustParseAddr("203.0.113.1"), // eth0's
			Link:            "tun",
			Tun:             Tun{Name: "xl0", Queues: 4, Routes: false, MTU: 9000, Offload: false, IPv4Interfaces: []string{}, IPv6Interfaces: []string{}},

			ICMPErrorsPerSecond: 100, ICMPErrorsBurst: 100,
		},
		Interfaces: []Interface{
			{Name: "eth0", Addresses: []netip.Prefix{pp("203.0.113.1/28"), pp("2001:db8:ffff::1/64")}, MTU: 1520},
			{Name: "eth1", Addresses: []netip.Prefix{}},
		},
		Routes: []Route{
			{To: pp("0.0.0.0/0"), Via: netip.MustParseAddr("203.0.113.14")},
			{To: pp("2001:db8:6::/64"), Via: netip.MustParseAddr("fe80::1"), Dev: "eth1"},
			{To: pp("192.0.2.0/24"), Dev: "eth0"},
		},
		Metrics: Metrics{Listen: "[::1]:9646", MappingTop: 10},
		Log:     Log{Level: "debug", Format: "json", Drops: true, DropsPerSecond: 25},
		BGP: &BGP{
			LocalAS: 64512, RouterID: netip.MustParseAddr("203.0.113.1"), ListenPort: 179,
			HoldTime: 9, Keepalive: 3, SendHoldTime: 120, ConnectRetry: 5, IPv4NextHopIPv6: true,
			Neighbors: []Neighbor{
				{Address: netip.MustParseAddr("203.0.113.14"), RemoteAS: 64500, Password: "s3cret", LocalAddress: netip.MustParseAddr("203.0.113.1"), MaxPrefixes: 50},
				{Address: netip.MustParseAddr("2001:db8:ffff::14"), RemoteAS: 4200000000, MaxPrefixes: DefaultBGPMaxPrefixes},
			},
		},
		RouterAdvertisements: []RouterAdvertisement{
			{Interface: "eth1", Preference: "high", RouterLifetime: 0, Interval: 10, RouteLifetime: 30},
			{Interface: "eth2", Preference: "medium", RouterLifetime: 0, Interval: 30, RouteLifetime: 86400},
		},
		snap:   c.snap,
		origin: c.origin, // checked below
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
	for i, wantLine := range []int{4, 8} {
		if f, l, ok := c.MappingOrigin(i); f != "full.hcl" || l != wantLine || !ok {
			t.Errorf("MappingOrigin(%d) = %s:%d, %v; want full.hcl:%d", i, f, l, ok, wantLine)
		}
	}
	if _, _, ok := c.MappingOrigin(2); ok {
		t.Errorf("MappingOrigin(2) of 2 entries is ok")
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings: %v", c.Warnings)
	}

	x, err := c.Xlat()
	if err != nil {
		t.Fatal(err)
	}
	wantPol := xlat.Policy{
		LowestIPv6MTU: 1400, UDPZeroChecksum: xlat.UDPZeroDrop, Hairpin: xlat.HairpinSimple,
		ICMPSourcePool: want.Translator.ICMPSourcePool, DenyIPv4: want.Translator.DenyIPv4,
		IPv4MTU: 1500, IPv6MTU: 1520, ClampMSS: true,
		IPv4Address: netip.MustParseAddr("203.0.113.1"),
		OwnAddrs:    []netip.Prefix{pp("203.0.113.1/28"), pp("2001:db8:ffff::1/64")},
		ICMPRate:    100, ICMPBurst: 100,
	}
	if !reflect.DeepEqual(x.Policy, wantPol) {
		t.Errorf("Policy %+v, want %+v", x.Policy, wantPol)
	}
	// The map translates what the mapping blocks say (RFC 7757) and the
	// rest through the prefix (RFC 6052).
	v6, _, o := x.Map.To6(netip.MustParseAddr("198.51.100.130").As4())
	if o != mapping.ByEAM || netip.AddrFrom16(v6) != netip.MustParseAddr("2001:db8:6::100:2") {
		t.Errorf("To6(198.51.100.130) = %v %v", netip.AddrFrom16(v6), o)
	}
	v6, _, o = x.Map.To6(netip.MustParseAddr("192.0.2.2").As4())
	if o != mapping.ByPrefix || netip.AddrFrom16(v6) != netip.MustParseAddr("2001:db8:64::c000:202") {
		t.Errorf("To6(192.0.2.2) = %v %v", netip.AddrFrom16(v6), o)
	}
}

// TestXlatPolicyWords checks each policy word maps to its engine value.
func TestXlatPolicyWords(t *testing.T) {
	for _, tc := range []struct {
		udp, hairpin string
		wantUDP      xlat.UDPZero
		wantHairpin  xlat.Hairpin
	}{
		{"compute", "off", xlat.UDPZeroCompute, xlat.HairpinOff},
		{"drop", "simple", xlat.UDPZeroDrop, xlat.HairpinSimple},
		{"compute", "intrinsic", xlat.UDPZeroCompute, xlat.HairpinIntrinsic},
	} {
		src := `translator {
  prefix = "2001:db8:64::/96"
  udp_zero_checksum = "` + tc.udp + `"
  hairpin = "` + tc.hairpin + `"
}`
		c, err := Parse([]byte(src), "p.hcl")
		if err != nil {
			t.Fatal(err)
		}
		x, err := c.Xlat()
		if err != nil {
			t.Fatal(err)
		}
		if x.Policy.UDPZeroChecksum != tc.wantUDP || x.Policy.Hairpin != tc.wantHairpin {
			t.Errorf("%s/%s: got %v/%v", tc.udp, tc.hairpin, x.Policy.UDPZeroChecksum, x.Policy.Hairpin)
		}
	}
}

// TestXlatHandBuilt: a Config assembled in Go rather than parsed still
// gives an engine configuration, and bad values are refused.
func TestXlatHandBuilt(t *testing.T) {
	c := &Config{Translator: Translator{
		Prefix:   netip.MustParsePrefix("2001:db8:64::/96"),
		Mappings: []mapping.Entry{{IPv4: netip.MustParsePrefix("198.51.100.10/32"), IPv6: netip.MustParsePrefix("2001:db8:6::10/128")}},
	}}
	x, err := c.Xlat()
	if err != nil {
		t.Fatal(err)
	}
	if x.Map.Table().Len() != 1 || x.Policy.Hairpin != xlat.HairpinIntrinsic {
		t.Errorf("got %d entries, hairpin %v", x.Map.Table().Len(), x.Policy.Hairpin)
	}
	c.Translator.Hairpin = "sometimes"
	if _, err := c.Xlat(); err == nil {
		t.Error("hairpin \"sometimes\" accepted")
	}
	c.Translator.Hairpin = ""
	c.Translator.Prefix = netip.MustParsePrefix("2001:db8:64::/97")
	if _, err := c.Xlat(); err == nil {
		t.Error("a /97 prefix accepted")
	}
}

// TestLinkModes: the fd and nic blocks choose the link and fill their
// defaults; without either the tun stays the link.
func TestLinkModes(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		link       string
		fd         FD
		nic        NIC
	}{
		{"default", "", LinkTun, FD{}, NIC{}},
		{"tun block", "tun {\n    routes = false\n  }", LinkTun, FD{}, NIC{}},
		{"fd", "fd {\n    fd = 3\n  }", LinkFD, FD{FD: 3, MTU: 1500, Queues: 1}, NIC{}},
		{"fd mtu from ipv6_mtu", "ipv6_mtu = 9000\n  fd {\n    fd = 7\n  }", LinkFD, FD{FD: 7, MTU: 9000, Queues: 1}, NIC{}},
		{"fd mtu", "fd {\n    fd = 3\n    mtu = 1520\n  }", LinkFD, FD{FD: 3, MTU: 1520, Queues: 1}, NIC{}},
		{"fd queues", "fd {\n    fd = 5\n    queues = 2\n  }", LinkFD, FD{FD: 5, MTU: 1500, Queues: 2}, NIC{}},
		{"fd tap derived mac", "fd {\n    fd = 3\n    ethernet = true\n  }", LinkFD, FD{FD: 3, MTU: 1500, Queues: 1, Ethernet: true}, NIC{}},
		{"fd tap", "fd {\n    fd = 3\n    ethernet = true\n    mac = \"02:00:5e:10:00:01\"\n    ipv4_gateway = \"192.0.2.1\"\n    ipv6_gateway = \"fe80::1\"\n  }", LinkFD,
			FD{FD: 3, MTU: 1500, Queues: 1, Ethernet: true, MAC: [6]byte{2, 0, 0x5e, 0x10, 0, 1}, IPv4Gateway: netip.MustParseAddr("192.0.2.1"), IPv6Gateway: netip.MustParseAddr("fe80::1")}, NIC{}},
		{"fd vnet_hdr on", "fd {\n    fd = 3\n    vnet_hdr = true\n  }", LinkFD, FD{FD: 3, MTU: 1500, Queues: 1, VnetHdr: VnetOn}, NIC{}},
		{"fd vnet_hdr off", "fd {\n    fd = 3\n    vnet_hdr = false\n    ethernet = true\n  }", LinkFD, FD{FD: 3, MTU: 1500, Queues: 1, VnetHdr: VnetOff, Ethernet: true}, NIC{}},
		{"nic one", "nic {\n    ipv4 = \"eth0\"\n  }", LinkNIC, FD{}, NIC{IPv4: "eth0", IPv6: "eth0"}},
		{"nic two", "nic {\n    ipv4 = \"eth0\"\n    ipv6 = \"eth1\"\n    queues = 2\n  }", LinkNIC, FD{}, NIC{IPv4: "eth0", IPv6: "eth1", Queues: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := tr(tc.body)
			c, err := Parse([]byte(src), "link.hcl")
			if err != nil {
				t.Fatal(err)
			}
			tr := c.Translator
			if tr.Link != tc.link || tr.FD != tc.fd || tr.NIC != tc.nic {
				t.Errorf("link %q fd %+v nic %+v, want %q %+v %+v", tr.Link, tr.FD, tr.NIC, tc.link, tc.fd, tc.nic)
			}
			// Start-up checks of an inherited descriptor name the fd
			// block.
			wantPos := ""
			if tc.link == LinkFD {
				at := strings.Index(src, "fd {")
				wantPos = fmt.Sprintf("link.hcl:%d:%d", strings.Count(src[:at], "\n")+1, at-strings.LastIndex(src[:at], "\n"))
			}
			if tr.LinkPos != wantPos {
				t.Errorf("LinkPos %q, want %q", tr.LinkPos, wantPos)
			}
		})
	}
}

func TestTunMTUDefault(t *testing.T) {
	for _, tc := range []struct {
		attrs string
		want  int
	}{
		{"", 1500},
		{"ipv4_mtu = 1500", 1520},
		{"ipv6_mtu = 9000", 9000},
		{"ipv4_mtu = 1400\n ipv6_mtu = 1280", 1500},
	} {
		c, err := Parse([]byte("translator {\n prefix = \"2001:db8:64::/96\"\n "+tc.attrs+"\n}\n"), "t.hcl")
		if err != nil {
			t.Fatal(err)
		}
		if c.Translator.Tun.MTU != tc.want {
			t.Errorf("%q: tun MTU %d, want %d", tc.attrs, c.Translator.Tun.MTU, tc.want)
		}
	}
}

// ipv4_address: given, else the first interface IPv4 address, else RFC
// 7600's dummy address with a warning that an icmp_source_pool silences;
// the engine gets it with every interface address as its own. Without
// ipv6_mtu, the engine's IPv6 MTU is the smallest of the interfaces with
// an IPv6 address (a Packet Too Big must not announce more). An MTU from
// the file turns the TCP MSS clamp on; without one it stays off.
func TestOwnAddressesAndLinkMTU(t *testing.T) {
	pp := netip.MustParsePrefix
	a := netip.MustParseAddr
	ifaces := `
interface "eth0" {
  addresses = ["2001:db8:ffff::1/64"]
  mtu       = 9000
}
interface "eth1" {
  addresses = ["203.0.113.1/28", "2001:db8:fffe::1/64"]
  mtu       = 1500
}
interface "eth2" {
  addresses = ["198.18.0.1/24"]
  mtu       = 1400
}
`
	for _, tc := range []struct {
		name     string
		src      string
		addr     netip.Addr
		own      []netip.Prefix
		mtu6     int
		warnings int
	}{
		{"given", tr(`ipv4_address = "203.0.113.65"`), a("203.0.113.65"), nil, 0, 0},
		{"given-over-interface", tr(`ipv4_address = "203.0.113.65"`) + ifaces, a("203.0.113.65"),
			[]netip.Prefix{pp("2001:db8:ffff::1/64"), pp("203.0.113.1/28"), pp("2001:db8:fffe::1/64"), pp("198.18.0.1/24")}, 1500, 0},
		{"from-interface", minimal + ifaces, a("203.0.113.1"),
			[]netip.Prefix{pp("2001:db8:ffff::1/64"), pp("203.0.113.1/28"), pp("2001:db8:fffe::1/64"), pp("198.18.0.1/24")}, 1500, 0},
		{"ipv6_mtu-wins", tr(`ipv6_mtu = 1600`) + ifaces, a("203.0.113.1"),
			[]netip.Prefix{pp("2001:db8:ffff::1/64"), pp("203.0.113.1/28"), pp("2001:db8:fffe::1/64"), pp("198.18.0.1/24")}, 1600, 0},
		{"dummy", minimal, DummyIPv4Address, nil, 0, 1},
		{"dummy-with-pool", tr(`icmp_source_pool = ["203.0.113.64/26"]`), DummyIPv4Address, nil, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.src), "o.hcl")
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, w := range c.Warnings {
				if w.Summary != "No mappings" { // these files have none on purpose
					n++
				}
			}
			if n != tc.warnings {
				t.Errorf("%d warnings, want %d: %v", n, tc.warnings, c.Warnings)
			}
			if c.Translator.IPv4Address != tc.addr {
				t.Errorf("ipv4_address %v, want %v", c.Translator.IPv4Address, tc.addr)
			}
			x, err := c.Xlat()
			if err != nil {
				t.Fatal(err)
			}
			if x.Policy.IPv4Address != tc.addr || !reflect.DeepEqual(x.Policy.OwnAddrs, tc.own) || x.Policy.IPv6MTU != tc.mtu6 {
				t.Errorf("policy: address %v, own %v, IPv6 MTU %d; want %v, %v, %d",
					x.Policy.IPv4Address, x.Policy.OwnAddrs, x.Policy.IPv6MTU, tc.addr, tc.own, tc.mtu6)
			}
			if x.Policy.ClampMSS != (tc.mtu6 > 0) {
				t.Errorf("policy: ClampMSS %v with IPv6 MTU %d from the file", x.Policy.ClampMSS, tc.mtu6)
			}
			if _, err := xlat.NewEngine(x); err != nil {
				t.Errorf("engine refused the policy: %v", err)
			}
		})
	}
}

func TestWarnings(t *testing.T) {
	src := `translator {
  prefix   = "2001:db8:64::/96"
  ipv4_mtu = 1500
  ipv6_mtu = 1500
  lowest_ipv6_mtu = 1501
  mapping {
    ipv4 = "198.51.100.1"
    ipv6 = "2001:db8:6::1"
  }
}`
	c, err := Parse([]byte(src), "w.hcl")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range c.Warnings {
		got = append(got, FormatDiagnostic(w))
	}
	want := []string{"w.hcl:4:14: warning: IPv6 MTU below IPv4 MTU + 20", "w.hcl:5:21: warning: lowest_ipv6_mtu above ipv6_mtu",
		"w.hcl:1:1: warning: No IPv4 address for ICMP errors"}
	if len(got) != len(want) {
		t.Fatalf("warnings %q, want %q", got, want)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("warning %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
}

// tr wraps translator attributes in a valid file; its content starts on
// line 3, column 3.
func tr(body string) string {
	return "translator {\n  prefix = \"2001:db8:64::/96\"\n  " + body + "\n}\n"
}

// TestErrors: every kind of bad input gives a diagnostic at the exact
// position of the offending text.
func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      string // "line:col: summary", file name "bad.hcl" implied
	}{
		{"syntax", "translator {\n  prefix = \n}", "2:12: Invalid expression"},
		{"no translator", `metrics {}`, "1:1: Missing translator block"},
		{"two translators", minimal + minimal, "6:1: Duplicate translator block"},
		{"unknown block", minimal + "\nfirewall {}\n", "6:1: Unsupported block type"},
		{"run_as no user", minimal + "\nrun_as {\n  group = \"nogroup\"\n}\n", "6:8: Missing required argument"},
		{"run_as empty user", minimal + "\nrun_as {\n  user = \"\"\n}\n", "7:10: Invalid run_as user"},
		{"run_as empty group", minimal + "\nrun_as {\n  user = \"nobody\"\n  group = \"\"\n}\n", "8:11: Invalid run_as group"},
		{"two run_as", minimal + "\nrun_as {\n  user = \"a\"\n}\nrun_as {\n  user = \"b\"\n}\n", "9:1: Duplicate run_as block"},
		{"unknown attribute", tr(`prefx = "x"`), "3:3: Unsupported argument"},
		{"missing prefix", "translator {\n}\n", "1:12: Missing required argument"},
		{"prefix not v6", "translator {\n  prefix = \"192.0.2.0/24\"\n}", "2:12: Invalid prefix"},
		{"prefix length", "translator {\n  prefix = \"2001:db8:64::/97\"\n}", "2:12: Invalid prefix"},
		{"prefix host bits", "translator {\n  prefix = \"2001:db8:64::1/96\"\n}", "2:12: Invalid prefix"},
		{"prefix no length", "translator {\n  prefix = \"2001:db8:64::\"\n}", "2:12: Invalid prefix"},
		{"prefix u octet", "translator {\n  prefix = \"2001:db8:0:0:ff00::/96\"\n}", "2:12: Invalid prefix"},
		{"prefix wrong type", "translator {\n  prefix = [1]\n}", "2:12: Incorrect attribute value type"},
		{"variables", "translator {\n  prefix = var.p\n}", "2:12: Variables not allowed"},
		{"lowest mtu", tr(`lowest_ipv6_mtu = 1000`), "3:21: Invalid lowest_ipv6_mtu"},
		{"fractional mtu", tr(`ipv4_mtu = 1500.5`), "3:14: Invalid ipv4_mtu"},
		{"ipv6 mtu", tr(`ipv6_mtu = 1279`), "3:14: Invalid ipv6_mtu"},
		{"udp zero", tr(`udp_zero_checksum = "ignore"`), "3:23: Invalid udp_zero_checksum"},
		{"hairpin", tr(`hairpin = "on"`), "3:13: Invalid hairpin"},
		{"traffic_class word", tr(`traffic_class = "reset"`), "3:19: Invalid traffic_class"},
		{"traffic_class dscp", tr(`traffic_class = 64`), "3:19: Invalid traffic_class"},
		{"tos fraction", tr(`tos = 1.5`), "3:9: Invalid tos"},
		{"tos negative", tr(`tos = -1`), "3:9: Invalid tos"},
		{"tos list", tr(`tos = [1]`), "3:9: Invalid tos"},
		{"plateaus empty", tr(`mtu_plateaus = []`), "3:18: Invalid mtu_plateaus"},
		{"plateau low", tr(`mtu_plateaus = [1500, 67]`), "3:25: Invalid mtu_plateaus"},
		{"plateau high", tr(`mtu_plateaus = [65536]`), "3:19: Invalid mtu_plateaus"},
		{"plateau fraction", tr(`mtu_plateaus = [1499.5]`), "3:19: Invalid mtu_plateaus"},
		{"plateau dup", tr(`mtu_plateaus = [1492, 1006, 1492]`), "3:31: Duplicate mtu_plateaus"},
		{"plateaus words", tr(`mtu_plateaus = ["big"]`), "3:18: Incorrect attribute value type"},
		{"plateaus too many", tr(`mtu_plateaus = [` + strings.Repeat("1500, ", 65) + `]`), "3:18: Invalid mtu_plateaus"},
		{"icmp rate zero", tr(`icmp_errors_per_second = 0`), "3:28: Invalid icmp_errors_per_second"},
		{"icmp rate high", tr(`icmp_errors_per_second = 1000001`), "3:28: Invalid icmp_errors_per_second"},
		{"icmp burst zero", tr(`icmp_errors_burst = 0`), "3:23: Invalid icmp_errors_burst"},
		{"pool v6", tr(`icmp_source_pool = ["203.0.113.64/26", "2001:db8::/64"]`), "3:42: Invalid icmp_source_pool"},
		{"pool dup", tr(`icmp_source_pool = ["203.0.113.64/26", "203.0.113.64/26"]`), "3:42: Duplicate icmp_source_pool"},
		{"deny host bits", tr(`deny_ipv4 = ["192.0.2.1/24"]`), "3:16: Invalid deny_ipv4"},
		{"deny null", tr(`deny_ipv4 = null`), "3:15: Invalid value"},
		{"ipv4_address v6", tr(`ipv4_address = "2001:db8::1"`), "3:18: Invalid ipv4_address"},
		{"ipv4_address prefix", tr(`ipv4_address = "203.0.113.1/28"`), "3:18: Invalid ipv4_address"},
		{"ipv4_address loopback", tr(`ipv4_address = "127.0.0.1"`), "3:18: Invalid ipv4_address"},
		{"ipv4_address link-local", tr(`ipv4_address = "169.254.169.254"`), "3:18: Invalid ipv4_address"},
		{"ipv4_address multicast", tr(`ipv4_address = "224.0.0.1"`), "3:18: Invalid ipv4_address"},
		{"ipv4_address mapped", tr("ipv4_address = \"198.51.100.7\"\n  mapping {\n    ipv4 = \"198.51.100.0/24\"\n    ipv6 = \"2001:db8:6::/120\"\n  }"), "3:18: Invalid ipv4_address"},
		{"mapping missing ipv6", tr("mapping {\n    ipv4 = \"198.51.100.1\"\n  }"), "3:11: Missing required argument"},
		{"mapping ipv4 side v6", tr("mapping {\n    ipv4 = \"2001:db8::1\"\n    ipv6 = \"2001:db8:6::1\"\n  }"), "4:12: Invalid ipv4"},
		{"mapping suffix", tr("mapping {\n    ipv4 = \"198.51.100.0/24\"\n    ipv6 = \"2001:db8:6::/124\"\n  }"), "3:3: Invalid mapping"},
		{"mapping host bits", tr("mapping {\n    ipv4 = \"198.51.100.1/24\"\n    ipv6 = \"2001:db8:6::/120\"\n  }"), "4:12: Invalid ipv4"},
		{"mapping duplicate", tr("mapping {\n    ipv4 = \"198.51.100.1\"\n    ipv6 = \"2001:db8:6::1\"\n  }\n  mapping {\n    ipv4 = \"198.51.100.1\"\n    ipv6 = \"2001:db8:6::2\"\n  }"), "7:3: Invalid mapping"},
		{"mapping in prefix", tr("mapping {\n    ipv4 = \"198.51.100.1\"\n    ipv6 = \"2001:db8:64::1\"\n  }"), "3:3: Invalid mapping"},
		{"mappings file missing", tr(`mappings_file = "nope.csv"`), "3:19: Cannot read mappings_file"},
		{"mappings file empty name", tr(`mappings_file = ""`), "3:19: Invalid mappings_file"},
		{"tun name", tr("tun {\n    name = \"a/b\"\n  }"), "4:12: Invalid tun name"},
		{"tun long name", tr("tun {\n    name = \"abcdefghijklmnop\"\n  }"), "4:12: Invalid tun name"},
		{"tun queues", tr("tun {\n    queues = 1000\n  }"), "4:14: Invalid queues"},
		{"tun mtu", tr("tun {\n    mtu = 576\n  }"), "4:11: Invalid mtu"},
		{"tun routes type", tr("tun {\n    routes = \"maybe\"\n  }"), "4:14: Incorrect attribute value type"},
		{"two tuns", tr("tun {}\n  tun {}"), "4:3: Duplicate tun block"},
		{"tun and nic", tr("tun {}\n  nic {\n    ipv4 = \"eth0\"\n  }"), "4:3: Conflicting link blocks"},
		{"fd and nic", tr("fd {\n    fd = 3\n  }\n  nic {\n    ipv4 = \"eth0\"\n  }"), "6:3: Conflicting link blocks"},
		{"two fds", tr("fd {\n    fd = 3\n  }\n  fd {\n    fd = 4\n  }"), "6:3: Duplicate fd block"},
		{"fd missing", tr("fd {}"), "3:6: Missing required argument"},
		{"fd stdin", tr("fd {\n    fd = 0\n  }"), "4:10: Invalid fd"},
		{"fd mtu", tr("fd {\n    fd = 3\n    mtu = 1000\n  }"), "5:11: Invalid mtu"},
		{"fd queues zero", tr("fd {\n    fd = 3\n    queues = 0\n  }"), "5:14: Invalid queues"},
		{"fd queues tap", tr("fd {\n    fd = 3\n    ethernet = true\n    queues = 2\n  }"), "6:14: Invalid queues"},
		{"fd mac without ethernet", tr("fd {\n    fd = 3\n    mac = \"02:00:5e:10:00:01\"\n  }"), "5:5: Unexpected mac"},
		{"fd gateway without ethernet", tr("fd {\n    fd = 3\n    ethernet = false\n    ipv4_gateway = \"192.0.2.1\"\n  }"), "6:5: Unexpected ipv4_gateway"},
		{"fd mac syntax", tr("fd {\n    fd = 3\n    ethernet = true\n    mac = \"02:00:5e\"\n  }"), "6:11: Invalid mac"},
		{"fd mac long", tr("fd {\n    fd = 3\n    ethernet = true\n    mac = \"02:00:5e:10:00:01:02:03\"\n  }"), "6:11: Invalid mac"},
		{"fd mac multicast", tr("fd {\n    fd = 3\n    ethernet = true\n    mac = \"33:33:00:00:00:01\"\n  }"), "6:11: Invalid mac"},
		{"fd mac zero", tr("fd {\n    fd = 3\n    ethernet = true\n    mac = \"00:00:00:00:00:00\"\n  }"), "6:11: Invalid mac"},
		{"fd vnet_hdr not bool", tr("fd {\n    fd = 3\n    vnet_hdr = 12\n  }"), "5:16: Incorrect attribute value type"},
		{"fd ipv4 gateway family", tr("fd {\n    fd = 3\n    ethernet = true\n    ipv4_gateway = \"2001:db8::1\"\n  }"), "6:20: Invalid ipv4_gateway"},
		{"fd ipv6 gateway family", tr("fd {\n    fd = 3\n    ethernet = true\n    ipv6_gateway = \"192.0.2.1\"\n  }"), "6:20: Invalid ipv6_gateway"},
		{"fd ipv4 gateway broadcast", tr("fd {\n    fd = 3\n    ethernet = true\n    ipv4_gateway = \"255.255.255.255\"\n  }"), "6:20: Invalid ipv4_gateway"},
		{"fd ipv6 gateway multicast", tr("fd {\n    fd = 3\n    ethernet = true\n    ipv6_gateway = \"ff02::1\"\n  }"), "6:20: Invalid ipv6_gateway"},
		{"fd ipv6 gateway in prefix", tr("fd {\n    fd = 3\n    ethernet = true\n    ipv6_gateway = \"2001:db8:64::c000:201\"\n  }"), "6:20: Invalid ipv6_gateway"},
		{"fd ipv4 gateway mapped", tr("mapping {\n    ipv4 = \"198.51.100.10\"\n    ipv6 = \"2001:db8:6::10\"\n  }\n  fd {\n    fd = 3\n    ethernet = true\n    ipv4_gateway = \"198.51.100.10\"\n  }"), "10:20: Invalid ipv4_gateway"},
		{"fd ipv4 gateway own address", tr("ipv4_address = \"192.0.2.1\"\n  fd {\n    fd = 3\n    ethernet = true\n    ipv4_gateway = \"192.0.2.1\"\n  }"), "7:20: Invalid ipv4_gateway"},
		{"nic missing ipv4", tr("nic {\n    ipv6 = \"eth1\"\n  }"), "3:7: Missing required argument"},
		{"nic name", tr("nic {\n    ipv4 = \"eth 0\"\n  }"), "4:12: Invalid ipv4"},
		{"nic ipv6 name", tr("nic {\n    ipv4 = \"eth0\"\n    ipv6 = \"\"\n  }"), "5:12: Invalid ipv6"},
		{"nic queues", tr("nic {\n    ipv4 = \"eth0\"\n    queues = 300\n  }"), "5:14: Invalid queues"},
		{"nic unknown", tr("nic {\n    ipv4 = \"eth0\"\n    mode = \"mmap\"\n  }"), "5:5: Unsupported argument"},
		{"interface name", minimal + `interface "eth0:1" {}`, "5:11: Invalid interface name"},
		{"interface dup", minimal + "interface \"eth0\" {}\ninterface \"eth0\" {}", "6:1: Duplicate interface block"},
		{"interface no length", minimal + `interface "eth0" { addresses = ["203.0.113.1"] }`, "5:33: Invalid addresses"},
		{"interface mtu v6", minimal + "interface \"eth0\" {\n  addresses = [\"2001:db8::1/64\"]\n  mtu = 1000\n}", "7:9: Invalid mtu"},
		{"route neither", minimal + `route { to = "0.0.0.0/0" }`, "5:1: Incomplete route"},
		{"route bad to", minimal + "route {\n  to = \"0.0.0.1/0\"\n  via = \"203.0.113.14\"\n}", "6:8: Invalid to"},
		{"route family", minimal + "route {\n  to = \"::/0\"\n  via = \"203.0.113.14\"\n}", "7:9: Invalid via"},
		{"route link-local", minimal + "route {\n  to = \"::/0\"\n  via = \"fe80::1\"\n}", "7:9: Invalid via"},
		{"route dup", minimal + "route {\n  to = \"::/0\"\n  via = \"2001:db8::1\"\n}\nroute {\n  to = \"::/0\"\n  via = \"2001:db8::2\"\n}", "9:1: Duplicate route"},
		{"route bad dev", minimal + "route {\n  to = \"::/0\"\n  dev = \"\"\n}", "7:9: Invalid dev"},
		{"metrics listen", minimal + `metrics { listen = "localhost" }`, "5:20: Invalid listen"},
		{"metrics port", minimal + `metrics { listen = "[::1]:99999" }`, "5:20: Invalid listen"},
		{"metrics host", minimal + `metrics { listen = "example.com:9646" }`, "5:20: Invalid listen"},
		{"two metrics", minimal + "metrics {}\nmetrics {}", "6:1: Duplicate metrics block"},
		{"metrics mapping_top without counters", minimal + `metrics { mapping_top = 5 }`, "5:25: mapping_top without mapping counters"},
		{"metrics mapping_top huge", tr("mapping_counters = true") + `metrics { mapping_top = 101 }`, "5:25: Invalid mapping_top"},
		{"metrics mapping_top negative", tr("mapping_counters = true") + `metrics { mapping_top = -1 }`, "5:25: Invalid mapping_top"},
		{"mapping_counters not bool", tr(`mapping_counters = "yes"`), "3:22: "},
		{"log level", minimal + `log { level = "trace" }`, "5:15: Invalid level"},
		{"log format", minimal + `log { format = "xml" }`, "5:16: Invalid format"},
		{"log drops", minimal + `log { drops = "yes" }`, "5:15: "},
		{"log drops_per_second 0", minimal + `log { drops_per_second = 0 }`, "5:26: Invalid drops_per_second"},
		{"log drops_per_second huge", minimal + `log { drops_per_second = 100001 }`, "5:26: Invalid drops_per_second"},
		{"bgp no neighbor", minimal + `bgp {
  local_as = 64512
  router_id = "203.0.113.1"
}`, "5:1: Missing neighbor"},
		{"bgp missing as", minimal + `bgp {
  router_id = "203.0.113.1"
  neighbor "203.0.113.14" { remote_as = 64500 }
}`, "5:5: Missing required argument"},
		{"bgp as trans", minimal + `bgp {
  local_as = 23456
  router_id = "203.0.113.1"
  neighbor "203.0.113.14" { remote_as = 64500 }
}`, "6:14: Invalid local_as"},
		{"bgp as range", minimal + `bgp {
  local_as = 4294967296
  router_id = "203.0.113.1"
  neighbor "203.0.113.14" { remote_as = 64500 }
}`, "6:14: Invalid local_as"},
		{"bgp router id v6", minimal + `bgp {
  local_as = 64512
  router_id = "2001:db8::1"
  neighbor "203.0.113.14" { remote_as = 64500 }
}`, "7:15: Invalid router_id"},
		{"bgp router id zero", minimal + `bgp {
  local_as = 64512
  router_id = "0.0.0.0"
  neighbor "203.0.113.14" { remote_as = 64500 }
}`, "7:15: Invalid router_id"},
		{"bgp hold time", minimal + `bgp {
  local_as = 64512
  router_id = "203.0.113.1"
  hold_time = 2
  neighbor "203.0.113.14" { remote_as = 64500 }
}`, "8:15: Invalid hold_time"},
		{"bgp keepalive", minimal + `bgp {
  local_as = 64512
  router_id = "203.0.113.1"
  hold_time = 9
  keepalive = 9
  neighbor "203.0.113.14" { remote_as = 64500 }
}`, "9:15: Invalid keepalive"},
		{"bgp hold time zero", minimal + `bgp {
  local_as = 64512
  router_id = "203.0.113.1"
  hold_time = 0
  neighbor "203.0.113.14" { remote_as = 64500 }
}`, "8:15: Invalid hold_time"},
		{"bgp keepalive zero", minimal + `bgp {
  local_as = 64512
  router_id = "203.0.113.1"
  keepalive = 0
  neighbor "203.0.113.14" { remote_as = 64500 }
}`, "8:15: Invalid keepalive"},
		{"bgp keepalive above default hold", minimal + `bgp {
  local_as = 64512
  router_id = "203.0.113.1"
  keepalive = 90
  neighbor "203.0.113.14" { remote_as = 64500 }
}`, "8:15: Invalid keepalive"},
		{"bgp send hold time not above hold time", minimal + `bgp {
  local_as = 64512
  router_id = "203.0.113.1"
  hold_time = 9
  send_hold_time = 9
  neighbor "203.0.113.14" { remote_as = 64500 }
}`, "9:20: Invalid send_hold_time"},
		{"bgp send hold time below default hold time", minimal + `bgp {
  local_as = 64512
  router_id = "203.0.113.1"
  send_hold_time = 60
  neighbor "203.0.113.14" { remote_as = 64500 }
}`, "8:20: Invalid send_hold_time"},
		{"bgp send hold time range", minimal + `bgp {
  local_as = 64512
  router_id = "203.0.113.1"
  send_hold_time = 131071
  neighbor "203.0.113.14" { remote_as = 64500 }
}`, "8:20: Invalid send_hold_time"},
		{"bgp neighbor addr", minimal + `bgp {
  local_as = 64512
  router_id = "203.0.113.1"
  neighbor "203.0.113.300" { remote_as = 64500 }
}`, "8:12: Invalid neighbor"},
		{"bgp neighbor dup", minimal + `bgp {
  local_as = 64512
  router_id = "203.0.113.1"
  neighbor "203.0.113.14" { remote_as = 64500 }
  neighbor "203.0.113.14" { remote_as = 64501 }
}`, "9:3: Duplicate neighbor"},
		{"bgp local family", minimal + `bgp {
  local_as = 64512
  router_id = "203.0.113.1"
  neighbor "203.0.113.14" {
    remote_as = 64500
    local_address = "2001:db8::1"
  }
}`, "10:21: Invalid local_address"},
		{"bgp password", minimal + `bgp {
  local_as = 64512
  router_id = "203.0.113.1"
  neighbor "203.0.113.14" {
    remote_as = 64500
    password = "` + strings.Repeat("x", 81) + `"
  }
}`, "10:16: Invalid password"},
		{"bgp max_prefixes 0", minimal + `bgp {
  local_as = 64512
  router_id = "203.0.113.1"
  neighbor "203.0.113.14" {
    remote_as = 64500
    max_prefixes = 0
  }
}`, "10:20: Invalid max_prefixes"},
		{"bgp max_prefixes huge", minimal + `bgp {
  local_as = 64512
  router_id = "203.0.113.1"
  neighbor "203.0.113.14" {
    remote_as = 64500
    max_prefixes = 1000001
  }
}`, "10:20: Invalid max_prefixes"},
		{"ra preference", minimal + `router_advertisement "eth1" { preference = "highest" }`, "5:44: Invalid preference"},
		{"ra interval", minimal + `router_advertisement "eth1" { interval = 3 }`, "5:42: Invalid interval"},
		{"ra router lifetime", minimal + `router_advertisement "eth1" { router_lifetime = 20 }`, "5:49: Invalid router_lifetime"},
		{"ra route lifetime", minimal + `router_advertisement "eth1" {
  interval = 100
  route_lifetime = 50
}`, "7:20: Invalid route_lifetime"},
		{"side dup", tr(`tun { ipv4_interfaces = ["eth0", "eth0"] }`), "3:36: Duplicate ipv4_interfaces"},
		{"side bad name", tr(`tun { ipv6_interfaces = ["eth/0"] }`), "3:28: Invalid ipv6_interfaces"},
		{"side not a list", tr(`tun { ipv4_interfaces = "eth0" }`), "3:27: Incorrect attribute value type"},
		{"side both lists", tr("tun {\n    ipv4_interfaces = [\"eth0\"]\n    ipv6_interfaces = [\"eth1\", \"eth0\"]\n  }"), "5:32: Interface on both sides"},
		{"side is the tun", tr(`tun { ipv4_interfaces = ["map646"] }`), "3:28: Interface side is the tun"},
		{"side against interface block", tr(`tun { ipv4_interfaces = ["eth1"] }`) + "interface \"eth1\" {\n  addresses = [\"2001:db8:6::1/64\"]\n}\n", "3:28: Interface on both sides"},
		{"ra dup", minimal + "router_advertisement \"eth1\" {}\nrouter_advertisement \"eth1\" {}", "6:1: Duplicate router_advertisement block"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.src), "bad.hcl")
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.src)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not *Error: %v", err, err)
			}
			var diags hcl.Diagnostics
			if !errors.As(err, &diags) || len(diags) == 0 {
				t.Fatalf("errors.As(err, &hcl.Diagnostics) failed")
			}
			first := strings.SplitN(err.Error(), "\n", 2)[0]
			if want := "bad.hcl:" + tc.want; !strings.HasPrefix(first, want) {
				t.Errorf("got  %s\nwant %s...", first, want)
			}
		})
	}
}

// TestAllErrorsAtOnce: an operator fixes a file in one pass, so every
// independent problem is reported, not just the first.
func TestAllErrorsAtOnce(t *testing.T) {
	src := `translator {
  prefix  = "2001:db8:64::/97"
  hairpin = "on"
  mapping {
    ipv4 = "198.51.100.0/24"
    ipv6 = "2001:db8:6::/124"
  }
}
log { level = "loud" }
`
	_, err := Parse([]byte(src), "many.hcl")
	if err == nil {
		t.Fatal("accepted")
	}
	got := err.Error()
	for _, want := range []string{"many.hcl:2:13: Invalid prefix", "many.hcl:3:13: Invalid hairpin", "many.hcl:4:3: Invalid mapping", "many.hcl:9:15: Invalid level"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	if n := strings.Count(got, "\n") + 1; n != 4 {
		t.Errorf("%d diagnostics, want 4:\n%s", n, got)
	}
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestMappingsFile(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"etc/map646.hcl": tr("mapping {\n    ipv4 = \"198.51.100.1\"\n    ipv6 = \"2001:db8:6::1\"\n  }\n  mappings_file = \"maps/m.csv\""),
		"etc/maps/m.csv": "# server, public\n198.51.100.2, 2001:db8:6::2\n\n  198.51.100.4/30,2001:db8:7::/126 # a block\n",
	})
	path := filepath.Join(dir, "etc/map646.hcl")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	pp := netip.MustParsePrefix
	want := []mapping.Entry{
		{IPv4: pp("198.51.100.1/32"), IPv6: pp("2001:db8:6::1/128")},
		{IPv4: pp("198.51.100.2/32"), IPv6: pp("2001:db8:6::2/128")},
		{IPv4: pp("198.51.100.4/30"), IPv6: pp("2001:db8:7::/126")},
	}
	if err == nil && !reflect.DeepEqual(c.Translator.Mappings, want) {
		t.Errorf("Mappings %v, want %v", c.Translator.Mappings, want)
	}
	if c.Translator.MappingsFile != filepath.Join(dir, "etc/maps/m.csv") {
		t.Errorf("MappingsFile %q", c.Translator.MappingsFile)
	}
	// Changing the mappings file alone changes the digest.
	d1 := c.Digest
	if err := os.WriteFile(filepath.Join(dir, "etc/maps/m.csv"), []byte("198.51.100.3,2001:db8:6::3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c2, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c2.Digest == d1 {
		t.Error("digest did not change with the mappings file")
	}
	c3, err := Load(path)
	if err != nil || c3.Digest != c2.Digest {
		t.Errorf("digest not stable: %v %s %s", err, c3.Digest, c2.Digest)
	}
}

// TestMappingsFileErrors: problems in the CSV point at its line and
// column; conflicts between the CSV and a mapping block name both places.
func TestMappingsFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, csv string
		want      []string // substrings of the error, "D" replaced by the directory
	}{
		{"syntax", "198.51.100.2,2001:db8:6::2\n198.51.100.3;2001:db8:6::3\n",
			[]string{"D/m.csv:2:27: Invalid mapping: expected"}},
		{"bad address", "198.51.100.2,2001:db8:6::2\n\n  198.51.100.300 , 2001:db8:6::3\n",
			[]string{"D/m.csv:3:3: Invalid mapping: invalid IPv4 address"}},
		{"v6 on v4 side", "2001:db8:6::3,2001:db8:6::3\n",
			[]string{"D/m.csv:1:1: Invalid mapping"}},
		{"duplicate in file", "# c\n198.51.100.2,2001:db8:6::2\n\n\t198.51.100.2,2001:db8:6::3\n",
			[]string{"D/m.csv:4:2: Invalid mapping", "The other entry (198.51.100.2/32 = 2001:db8:6::2/128) is at D/m.csv:2:1."}},
		{"duplicate of block", "198.51.100.1,2001:db8:6::5\n",
			[]string{"D/m.csv:1:1: Invalid mapping", "is at D/a.hcl:3:3."}},
		{"inside prefix", "198.51.100.9,2001:db8:64::9\n",
			[]string{"D/m.csv:1:1: Invalid mapping", "The translation prefix is set at D/a.hcl:2:12."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{
				"a.hcl": tr("mapping {\n    ipv4 = \"198.51.100.1\"\n    ipv6 = \"2001:db8:6::1\"\n  }\n  mappings_file = \"m.csv\""),
				"m.csv": tc.csv,
			})
			_, err := Load(filepath.Join(dir, "a.hcl"))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				w = strings.ReplaceAll(w, "D/", dir+"/")
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got  %v\nwant %s", err, w)
				}
			}
		})
	}
}

func TestWriteDiagnostics(t *testing.T) {
	_, err := Parse([]byte("translator {\n\tprefix = \"2001:db8:64::/97\"\n}\n"), "s.hcl")
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := WriteDiagnostics(&b, ce.Diagnostics, ce.Files); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "s.hcl:2:11: Invalid prefix: ") ||
		lines[1] != "    2 | \tprefix = \"2001:db8:64::/97\"" ||
		lines[2] != "      | \t         ^^^^^^^^^^^^^^^^^^" {
		t.Errorf("got:\n%s", b.String())
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "none.hcl"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want not exist", err)
	}
}

// FuzzParse: no input makes Parse panic, and whatever it accepts is a
// complete configuration whose engine configuration builds.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte(full))
	f.Add([]byte(tr("mapping {\n    ipv4 = \"198.51.100.0/24\"\n    ipv6 = \"2001:db8:6::/120\"\n  }")))
	f.Add([]byte("translator { prefix = \"64:ff9b::/96\" }\nbgp {\n}\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		c, err := Parse(src, "fuzz.hcl")
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Diagnostics) == 0 {
				t.Fatalf("error without diagnostics: %v", err)
			}
			return
		}
		if c.Snapshot() == nil {
			t.Fatal("accepted without an address map")
		}
		if _, err := c.Xlat(); err != nil {
			t.Fatalf("accepted but Xlat fails: %v", err)
		}
	})
}

func TestRunAs(t *testing.T) {
	for _, tc := range []struct {
		body string
		want RunAs
	}{
		{"run_as {\n  user = \"map646\"\n}\n", RunAs{User: "map646"}},
		{"run_as {\n  user = \"65534\"\n  group = \"nogroup\"\n}\n", RunAs{User: "65534", Group: "nogroup"}},
	} {
		c, err := Parse([]byte(minimal+tc.body), "run_as.hcl")
		if err != nil {
			t.Fatal(err)
		}
		if c.RunAs != tc.want {
			t.Errorf("%q: RunAs %+v, want %+v", tc.body, c.RunAs, tc.want)
		}
	}
}

// diagPositions is "file:line:col: summary" of each diagnostic of err, the
// directory dir written as "D".
func diagPositions(t *testing.T, err error, dir string) []string {
	t.Helper()
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T), want an *Error", err, err)
	}
	var out []string
	for _, d := range ce.Diagnostics {
		if d.Severity != hcl.DiagError {
			continue
		}
		s := FormatDiagnostic(d)
		if i := strings.Index(s, ": "); i >= 0 {
			if j := strings.Index(s[i+2:], ": "); j >= 0 {
				s = s[:i+2+j]
			}
		}
		out = append(out, strings.ReplaceAll(s, dir+"/", "D/"))
	}
	return out
}

// TestReportsAllMappingProblems: every bad CSV line, and every refused
// entry, is reported at its place in file order; past mapping.MaxReported
// only a count.
func TestReportsAllMappingProblems(t *testing.T) {
	hcl := tr("mapping {\n    ipv4 = \"198.51.100.1\"\n    ipv6 = \"2001:db8:6::1\"\n  }\n  mapping {\n    ipv4 = \"198.51.100.1\"\n    ipv6 = \"2001:db8:6::2\"\n  }\n  mappings_file = \"m.csv\"")
	for _, tc := range []struct {
		name, csv string
		want      []string
	}{
		{"bad lines", "198.51.100.2,2001:db8:6::2\nnope\n198.51.100.3,2001:db8:6::3\n198.51.100.4;x\n1.2.3.4/24,2001:db8::/120\n",
			[]string{"D/m.csv:2:5: Invalid mapping", "D/m.csv:4:15: Invalid mapping", "D/m.csv:5:1: Invalid mapping"}},
		{"conflicts", "198.51.100.9,2001:db8:6::9\n198.51.100.9,2001:db8:6::8\n# c\n198.51.100.7,2001:db8:6::9\n198.51.100.0/24,2001:db8:7::/120\n",
			// The /24 on line 5 covers every other entry; each is reported once.
			[]string{"D/a.hcl:3:3: Invalid mapping", "D/a.hcl:7:3: Invalid mapping", "D/m.csv:1:1: Invalid mapping", "D/m.csv:2:1: Invalid mapping", "D/m.csv:4:1: Invalid mapping"}},
		{"many", strings.Repeat("x\n", mapping.MaxReported+3),
			append(slices.Repeat([]string{"Invalid mapping"}, mapping.MaxReported), "D/a.hcl:11:19: More invalid mappings")},
		{"many conflicts", strings.Repeat("198.51.100.1,2001:db8:6::1\n", mapping.MaxReported+3),
			append(slices.Repeat([]string{"Invalid mapping"}, mapping.MaxReported), "D/a.hcl:2:12: More invalid mappings")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{"a.hcl": hcl, "m.csv": tc.csv})
			_, err := Load(filepath.Join(dir, "a.hcl"))
			got := diagPositions(t, err, dir)
			if len(got) != len(tc.want) {
				t.Fatalf("%d diagnostics, want %d:\n%s", len(got), len(tc.want), strings.Join(got, "\n"))
			}
			for i := range got {
				if !strings.HasSuffix(got[i], tc.want[i]) {
					t.Errorf("diagnostic %d = %q, want %q", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// TestOverlapOptIn: a more specific entry inside another is an error that
// says how to opt in; overlap = true on its block, or mappings_overlap for
// the file's entries, accepts it and the longest match wins.
func TestOverlapOptIn(t *testing.T) {
	outer := "mapping {\n    ipv4 = \"198.51.100.0/24\"\n    ipv6 = \"2001:db8:7::/120\"\n  }\n  "
	inner := func(extra string) string {
		return "mapping {\n    ipv4 = \"198.51.100.9\"\n    ipv6 = \"2001:db8:6::9\"\n    " + extra + "\n  }\n  "
	}
	for _, tc := range []struct {
		name, hcl, csv string
		err            string // "" for accepted
	}{
		{"block without", outer + inner(""), "", "bad.hcl:7:3: Invalid mapping: 198.51.100.9/32 = 2001:db8:6::9/128: overlapping"},
		{"block with", outer + inner("overlap = true"), "", ""},
		{"block with, inner first", inner("overlap = true") + outer, "", ""},
		{"outer opts in", "mapping {\n    ipv4 = \"198.51.100.0/24\"\n    ipv6 = \"2001:db8:7::/120\"\n    overlap = true\n  }\n  " + inner(""), "", "add overlap = true to its mapping block"},
		{"csv without", outer + "mappings_file = \"m.csv\"", "198.51.100.9,2001:db8:6::9\n", "m.csv:1:1: Invalid mapping"},
		{"csv without, hint", outer + "mappings_file = \"m.csv\"", "198.51.100.9,2001:db8:6::9\n", "set mappings_overlap = true"},
		{"csv with", outer + "mappings_file = \"m.csv\"\n  mappings_overlap = true", "198.51.100.9,2001:db8:6::9\n", ""},
		{"mappings_overlap without file", outer + "mappings_overlap = true", "", "bad.hcl:7:22: Invalid mappings_overlap"},
		{"overlap not bool", inner("overlap = \"yes\""), "", "bad.hcl:6:15: Incorrect attribute value type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{"bad.hcl": tr(tc.hcl), "m.csv": tc.csv})
			c, err := Load(filepath.Join(dir, "bad.hcl"))
			if tc.err != "" {
				if err == nil || !strings.Contains(strings.ReplaceAll(err.Error(), dir+"/", ""), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for v4, v6 := range map[string]string{"198.51.100.9": "2001:db8:6::9", "198.51.100.10": "2001:db8:7::a"} {
				got, _, _ := c.Snapshot().To6(netip.MustParseAddr(v4).As4())
				if netip.AddrFrom16(got) != netip.MustParseAddr(v6) {
					t.Errorf("To6(%s) = %v, want %s", v4, netip.AddrFrom16(got), v6)
				}
			}
		})
	}
}

// TestMappingOriginCSV: entries of the mappings file remember their line.
func TestMappingOriginCSV(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"a.hcl": tr("mapping {\n    ipv4 = \"198.51.100.1\"\n    ipv6 = \"2001:db8:6::1\"\n  }\n  mappings_file = \"m.csv\""),
		"m.csv": "# c\n198.51.100.2,2001:db8:6::2\n\n198.51.100.3,2001:db8:6::3\n",
	})
	c, err := Load(filepath.Join(dir, "a.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"a.hcl:3", "m.csv:2", "m.csv:4"} {
		f, l, ok := c.MappingOrigin(i)
		if got := fmt.Sprintf("%s:%d", filepath.Base(f), l); got != want || !ok {
			t.Errorf("MappingOrigin(%d) = %s, %v; want %s", i, got, ok, want)
		}
	}
}

// TestQuestionableValues: values that are valid but almost certainly a
// mistake give a warning at their position, and the file still loads.
func TestQuestionableValues(t *testing.T) {
	m := "mapping {\n    ipv4 = \"198.51.100.9\"\n    ipv6 = \"2001:db8:6::9\"\n  }\n  " // lines 3-6
	for _, tc := range []struct {
		name, src string
		want      []string // "line:col: summary" of each warning, file "q.hcl"
	}{
		{"clean", tr(m + "icmp_source_pool = [\"203.0.113.64/26\"]\n  deny_ipv4 = [\"192.0.2.0/24\"]"), nil},
		{"no mappings", tr(""), []string{"1:1: No mappings"}},
		{"multicast prefix", "translator {\n  prefix = \"ff0e::/96\"\n  " + m + "\n}\n", []string{"2:12: Questionable prefix"}},
		{"link-local prefix", "translator {\n  prefix = \"fe80::/64\"\n  " + m + "\n}\n", []string{"2:12: Questionable prefix"}},
		{"::/96 prefix", "translator {\n  prefix = \"::/96\"\n  " + m + "\n}\n", []string{"2:12: Questionable prefix"}},
		{"pool everything", tr(m + "icmp_source_pool = [\"203.0.113.64/26\", \"0.0.0.0/0\"]"), []string{"7:42: Questionable icmp_source_pool"}},
		{"pool private", tr(m + "icmp_source_pool = [\"172.20.0.0/24\", \"192.168.0.0/15\"]"), []string{"7:23: Questionable icmp_source_pool", "7:40: Questionable icmp_source_pool"}},
		{"deny cancels", tr(m + "deny_ipv4 = [\"192.0.2.0/24\", \"198.51.100.0/24\"]"), []string{"7:32: deny_ipv4 cancels a mapping"}},
		{"tun mtu below ipv4_mtu", tr(m + "ipv4_mtu = 9000\n  ipv6_mtu = 9020\n  tun {\n    mtu = 1500\n  }"), []string{"10:11: tun MTU below the link MTU"}},
		{"tun mtu fits", tr(m + "ipv4_mtu = 1500\n  tun {\n    mtu = 1520\n  }"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.src), "q.hcl")
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range c.Warnings {
				if w.Summary == "No IPv4 address for ICMP errors" {
					continue // TestWarnings covers it; these files have no IPv4 address on purpose
				}
				got = append(got, FormatDiagnostic(w))
			}
			if len(got) != len(tc.want) {
				t.Fatalf("warnings\n  %s\nwant %q", strings.Join(got, "\n  "), tc.want)
			}
			for i, w := range tc.want {
				if want := "q.hcl:" + strings.Replace(w, ": ", ": warning: ", 1); !strings.HasPrefix(got[i], want) {
					t.Errorf("warning %d = %q, want prefix %q", i, got[i], want)
				}
			}
		})
	}
	// The deny warning names the mapping and where it is.
	c, err := Parse([]byte(tr(m+"deny_ipv4 = [\"198.51.100.0/24\"]")), "q.hcl")
	if err != nil || len(c.Warnings) < 1 || !strings.Contains(c.Warnings[0].Detail, "198.51.100.9/32 = 2001:db8:6::9/128 at q.hcl:3:3") {
		t.Errorf("deny warning: %v %v", err, c.Warnings)
	}
}

// TestLongerIPv6Suffix: a mapping whose IPv6 suffix is longer than its
// IPv4 one loads (RFC 7757 section 3.2); a shorter one is refused at its
// block.
func TestLongerIPv6Suffix(t *testing.T) {
	c, err := Parse([]byte(tr("mapping {\n    ipv4 = \"198.51.100.0/30\"\n    ipv6 = \"2001:db8:6::/124\"\n  }")), "l.hcl")
	if err != nil {
		t.Fatal(err)
	}
	v6, _, _ := c.Snapshot().To6(netip.MustParseAddr("198.51.100.3").As4())
	if got := netip.AddrFrom16(v6); got != netip.MustParseAddr("2001:db8:6::c") {
		t.Errorf("198.51.100.3 -> %v, want 2001:db8:6::c", got)
	}
	_, err = Parse([]byte(tr("mapping {\n    ipv4 = \"198.51.100.0/24\"\n    ipv6 = \"2001:db8:6::/124\"\n  }")), "l.hcl")
	if err == nil || !strings.Contains(err.Error(), "l.hcl:3:3: Invalid mapping") || !strings.Contains(err.Error(), "needs at least as many") {
		t.Errorf("shorter IPv6 suffix: %v", err)
	}
}

// Issue 10, "Settings Jool has": traffic_class and tos (RFC 7915 sections
// 4.1 and 5.1), mtu_plateaus (section 4.2, RFC 1191 section 7) and the
// ICMP rate limit reach the engine's policy as written.
func TestJoolSettings(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       xlat.Policy // only the fields of these settings
	}{
		{"defaults", "", xlat.Policy{ICMPRate: 100, ICMPBurst: 100}},
		{"zero and fixed", `traffic_class = "zero"
  tos = 46`, xlat.Policy{TrafficClass: xlat.TOS{Reset: true}, TypeOfService: xlat.TOS{Reset: true, DSCP: 46}, ICMPRate: 100, ICMPBurst: 100}},
		{"explicit copy and dscp 0", `traffic_class = "copy"
  tos = 0`, xlat.Policy{TypeOfService: xlat.TOS{Reset: true}, ICMPRate: 100, ICMPBurst: 100}},
		{"plateaus in any order", `mtu_plateaus = [1400, 9000, 1280]`, xlat.Policy{MTUPlateaus: []int{1400, 9000, 1280}, ICMPRate: 100, ICMPBurst: 100}},
		{"rate, burst follows", `icmp_errors_per_second = 10`, xlat.Policy{ICMPRate: 10, ICMPBurst: 10}},
		{"rate and burst", `icmp_errors_per_second = 10
  icmp_errors_burst = 50`, xlat.Policy{ICMPRate: 10, ICMPBurst: 50}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tr(tc.body)), "j.hcl")
			if err != nil {
				t.Fatal(err)
			}
			x, err := c.Xlat()
			if err != nil {
				t.Fatal(err)
			}
			p := x.Policy
			got := xlat.Policy{TrafficClass: p.TrafficClass, TypeOfService: p.TypeOfService, MTUPlateaus: p.MTUPlateaus, ICMPRate: p.ICMPRate, ICMPBurst: p.ICMPBurst}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("policy %+v, want %+v", got, tc.want)
			}
			if _, err := xlat.NewEngine(x); err != nil {
				t.Errorf("the engine refuses it: %v", err)
			}
		})
	}
}

// TestInterfaceSides: the tun's lists come first, then the interface
// blocks of one family; a dual-stack or address-less block is on neither
// side; lists without routes warn that they add nothing.
func TestInterfaceSides(t *testing.T) {
	c, err := Parse([]byte(`translator {
  prefix = "2001:db8:64::/96"
  tun {
    ipv4_interfaces = ["up0", "eth0"]
    ipv6_interfaces = ["srv0"]
  }
}
interface "eth0" {
  addresses = ["192.0.2.1/24"]
}
interface "eth1" {
  addresses = ["2001:db8:6::1/64"]
}
interface "eth2" {
  addresses = ["203.0.113.1/28", "2001:db8:ffff::1/64"]
}
interface "eth3" {
  mtu = 1500
}
`), "s.hcl")
	if err != nil {
		t.Fatal(err)
	}
	v4, v6 := c.Sides()
	if !slices.Equal(v4, []string{"up0", "eth0"}) || !slices.Equal(v6, []string{"srv0", "eth1"}) {
		t.Errorf("sides %q, %q", v4, v6)
	}
	c, err = Parse([]byte(tr("tun {\n    routes = false\n    ipv6_interfaces = [\"eth1\"]\n  }")), "w.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) == 0 || !strings.HasPrefix(FormatDiagnostic(c.Warnings[0]), "w.hcl:5:23: warning: Interface sides without routes") {
		for _, w := range c.Warnings {
			t.Log(FormatDiagnostic(w))
		}
		t.Errorf("want the sides warning first")
	}
}

// TestBGPSendHoldTimeDefault: without send_hold_time the send hold timer
// takes RFC 9687 section 3.4's suggestion, the greater of 8 minutes and
// twice hold_time.
func TestBGPSendHoldTimeDefault(t *testing.T) {
	for _, tc := range []struct {
		attrs string
		want  int
	}{
		{"", 480},
		{"hold_time = 9", 480},
		{"hold_time = 240", 480},
		{"hold_time = 300", 600},
		{"hold_time = 65535", 131070},
		{"hold_time = 300\n  send_hold_time = 301", 301},
		{"send_hold_time = 91", 91},
	} {
		src := minimal + `bgp {
  local_as = 64512
  router_id = "203.0.113.1"
  ` + tc.attrs + `
  neighbor "203.0.113.14" { remote_as = 64500 }
}`
		c, err := Parse([]byte(src), "sendhold.hcl")
		if err != nil {
			t.Fatalf("%q: %v", tc.attrs, err)
		}
		if c.BGP.SendHoldTime != tc.want {
			t.Errorf("%q: send_hold_time %d, want %d", tc.attrs, c.BGP.SendHoldTime, tc.want)
		}
	}
}
