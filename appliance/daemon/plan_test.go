package daemon

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/netsetup"
)

func parse(t *testing.T, src string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(src), "test.hcl")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMakePlan(t *testing.T) {
	pfx := netip.MustParsePrefix
	for _, tc := range []struct {
		name   string
		src    string
		routes []string
		addrs  []netsetup.Addr
		ann4   []netip.Prefix
	}{
		{
			name: "aggregated EAM prefixes and the RFC 6052 prefix into the tun",
			src: `translator {
  prefix = "2001:db8:64::/96"
  mapping {
    ipv4 = "198.51.100.0/25"
    ipv6 = "2001:db8:6::/121"
  }
  mapping {
    ipv4 = "198.51.100.128/25"
    ipv6 = "2001:db8:7::/121"
  }
  mapping {
    ipv4 = "203.0.113.7"
    ipv6 = "2001:db8:6::1:7"
  }
}`,
			routes: []string{"198.51.100.0/24 dev map646 table 646", "203.0.113.7/32 dev map646 table 646", "2001:db8:64::/96 dev map646 table 646"},
			ann4:   []netip.Prefix{pfx("198.51.100.0/24"), pfx("203.0.113.7/32")},
		},
		{
			name: "routes = false leaves routing to the operator; announcements stay",
			src: `translator {
  prefix = "2001:db8:64::/96"
  mapping {
    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }
  tun {
    routes = false
  }
}`,
			ann4: []netip.Prefix{pfx("198.51.100.10/32")},
		},
		{
			name: "appliance mode: interface and route blocks",
			src: `translator {
  prefix = "2001:db8:64::/96"
  tun {
    name = "xl0"
  }
}
interface "eth0" {
  addresses = ["203.0.113.1/28", "2001:db8:ffff::1/64"]
  mtu = 1520
}
route {
  to  = "0.0.0.0/0"
  via = "203.0.113.14"
}
route {
  to  = "2001:db8:6::/64"
  via = "2001:db8:ffff::2"
  dev = "eth0"
}`,
			routes: []string{"2001:db8:64::/96 dev xl0 table 646", "0.0.0.0/0 via 203.0.113.14", "2001:db8:6::/64 via 2001:db8:ffff::2 dev eth0"},
			addrs:  []netsetup.Addr{{Dev: "eth0", Prefix: pfx("203.0.113.1/28")}, {Dev: "eth0", Prefix: pfx("2001:db8:ffff::1/64")}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := parse(t, tc.src)
			p := makePlan(c, c.Translator.Tun.Name)
			var routes []string
			for _, r := range p.routes {
				routes = append(routes, r.String())
			}
			if !slices.Equal(routes, tc.routes) {
				t.Errorf("routes\n%q\nwant\n%q", routes, tc.routes)
			}
			if !slices.Equal(p.addrs, tc.addrs) {
				t.Errorf("addresses %v, want %v", p.addrs, tc.addrs)
			}
			if !slices.Equal(p.ann.IPv4, tc.ann4) || !slices.Equal(p.ann.IPv6, []netip.Prefix{pfx("2001:db8:64::/96")}) {
				t.Errorf("announcement %+v", p.ann)
			}
		})
	}
}

func TestRestartOnlySettings(t *testing.T) {
	base := `translator {
  prefix = "2001:db8:64::/96"
  tun {
    name = "%s"
  }
}
metrics {
  listen = "%s"
}
`
	a := parse(t, sprintf(base, "map646", "[::1]:9646"))
	if _, got := applicable(a, parse(t, sprintf(base+"# a comment\n", "map646", "[::1]:9646"))); len(got) != 0 {
		t.Errorf("no restart-only change, got %v", got)
	}
	if _, got := applicable(a, parse(t, sprintf(base, "xl0", "[::1]:9647"))); !slices.Equal(got, []string{"translator.tun", "metrics.listen"}) {
		t.Errorf("got %v", got)
	}
	// The interface sides are policy rules: a reload changes them.
	sides := strings.Replace(base, "  tun {\n", "  tun {\n    ipv4_interfaces = [\"eth0\"]\n", 1)
	c, got := applicable(a, parse(t, sprintf(sides, "map646", "[::1]:9646")))
	if len(got) != 0 || !slices.Equal(c.Translator.Tun.IPv4Interfaces, []string{"eth0"}) {
		t.Errorf("changed interface sides: restart %v, applied sides %v; want no restart and eth0 applied", got, c.Translator.Tun.IPv4Interfaces)
	}
	// A tun change that needs a restart keeps the running tun but still
	// applies the file's sides.
	c, got = applicable(a, parse(t, sprintf(sides, "xl0", "[::1]:9646")))
	if !slices.Equal(got, []string{"translator.tun"}) || c.Translator.Tun.Name != "map646" || !slices.Equal(c.Translator.Tun.IPv4Interfaces, []string{"eth0"}) {
		t.Errorf("tun renamed and sides changed: restart %v, applied tun %q sides %v", got, c.Translator.Tun.Name, c.Translator.Tun.IPv4Interfaces)
	}
}

func sprintf(f string, a ...any) string { return fmt.Sprintf(f, a...) }

// TestPolicyRules: for each family the policy table, the appliance's own
// packets, the tun's translated packets and the unreachable rule, in that
// order (policyRules); only tun.routes asks for rules.
func TestPolicyRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
		want []string
	}{
		{
			name: "tun with routes",
			src:  `translator { prefix = "2001:db8:64::/96" }`,
			want: []string{
				"ipv4 6460: lookup 646", "ipv4 6461: iif lo lookup 254", "ipv4 6462: iif map646 lookup 254", "ipv4 6463: unreachable",
				"ipv6 6460: lookup 646", "ipv6 6461: iif lo lookup 254", "ipv6 6462: iif map646 lookup 254", "ipv6 6463: unreachable",
			},
		},
		{
			name: "named tun",
			src: `translator {
  prefix = "2001:db8:64::/96"
  tun {
    name = "xl0"
  }
}`,
			want: []string{
				"ipv4 6460: lookup 646", "ipv4 6461: iif lo lookup 254", "ipv4 6462: iif xl0 lookup 254", "ipv4 6463: unreachable",
				"ipv6 6460: lookup 646", "ipv6 6461: iif lo lookup 254", "ipv6 6462: iif xl0 lookup 254", "ipv6 6463: unreachable",
			},
		},
		{
			name: "interface blocks of one family are sides; a dual-stack one is neither",
			src: `translator { prefix = "2001:db8:64::/96" }
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
}`,
			want: []string{
				"ipv4 6459: iif eth1 unreachable",
				"ipv4 6460: lookup 646", "ipv4 6461: iif lo lookup 254", "ipv4 6462: iif map646 lookup 254", "ipv4 6463: unreachable",
				"ipv6 6459: iif eth0 unreachable",
				"ipv6 6460: lookup 646", "ipv6 6461: iif lo lookup 254", "ipv6 6462: iif map646 lookup 254", "ipv6 6463: unreachable",
			},
		},
		{
			name: "tun's interface lists first, then interface blocks, each once",
			src: `translator {
  prefix = "2001:db8:64::/96"
  tun {
    ipv4_interfaces = ["uplink0", "eth0"]
    ipv6_interfaces = ["srv0"]
  }
}
interface "eth0" {
  addresses = ["192.0.2.1/24"]
}
interface "eth1" {
  addresses = ["198.51.100.1/24"]
}`,
			want: []string{
				"ipv4 6459: iif srv0 unreachable",
				"ipv4 6460: lookup 646", "ipv4 6461: iif lo lookup 254", "ipv4 6462: iif map646 lookup 254", "ipv4 6463: unreachable",
				"ipv6 6459: iif uplink0 unreachable", "ipv6 6459: iif eth0 unreachable", "ipv6 6459: iif eth1 unreachable",
				"ipv6 6460: lookup 646", "ipv6 6461: iif lo lookup 254", "ipv6 6462: iif map646 lookup 254", "ipv6 6463: unreachable",
			},
		},
		{
			name: "routes = false: no rules",
			src: `translator {
  prefix = "2001:db8:64::/96"
  tun {
    routes = false
  }
}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := parse(t, tc.src)
			p := makePlan(c, c.Translator.Tun.Name)
			var got []string
			for _, r := range p.rules {
				got = append(got, r.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("rules\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

// TestUnguardedSides: the start warning names each family that the policy
// rules cannot keep off the other side, and only with policy rules.
func TestUnguardedSides(t *testing.T) {
	const both = "IPv6 to the prefix from every interface|IPv4 to the mapped addresses from every interface"
	for _, tc := range []struct {
		name, src, want string
	}{
		{"no side known", `translator { prefix = "2001:db8:64::/96" }`, both},
		{"dual-stack interface tells no side", `translator { prefix = "2001:db8:64::/96" }
interface "eth0" {
  addresses = ["192.0.2.1/24", "2001:db8:6::1/64"]
}`, both},
		{"IPv4 side only", `translator {
  prefix = "2001:db8:64::/96"
  tun {
    ipv4_interfaces = ["eth0"]
  }
}`, "IPv4 to the mapped addresses from every interface"},
		{"IPv6 side from an interface block", `translator { prefix = "2001:db8:64::/96" }
interface "eth1" {
  addresses = ["2001:db8:6::1/64"]
}`, "IPv6 to the prefix from every interface"},
		{"both sides", `translator { prefix = "2001:db8:64::/96" }
interface "eth0" {
  addresses = ["192.0.2.1/24"]
}
interface "eth1" {
  addresses = ["2001:db8:6::1/64"]
}`, ""},
		{"routes = false: no rules, nothing to warn of", `translator {
  prefix = "2001:db8:64::/96"
  tun {
    routes = false
  }
}`, ""},
		{"NIC mode", `translator {
  prefix = "2001:db8:64::/96"
  nic {
    ipv4 = "eth0"
  }
}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(unguardedSides(parse(t, tc.src)), "|"); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
