package bgp

import (
	"net/netip"
	"slices"
	"testing"
)

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func TestFamilies(t *testing.T) {
	for _, tc := range []struct {
		neighbor string
		extNH    bool
		want     []Family
	}{
		{"192.0.2.1", false, []Family{IPv4Unicast}},
		{"192.0.2.1", true, []Family{IPv4Unicast}},
		{"2001:db8::1", false, []Family{IPv6Unicast}},
		{"2001:db8::1", true, []Family{IPv4Unicast, IPv6Unicast}},
		{"::ffff:192.0.2.1", false, []Family{IPv4Unicast}},
	} {
		got := Families(netip.MustParseAddr(tc.neighbor), tc.extNH)
		if !slices.Equal(got, tc.want) {
			t.Errorf("Families(%s, %v) = %v, want %v", tc.neighbor, tc.extNH, got, tc.want)
		}
	}
}

func TestDesired(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ipv4, ipv6 []netip.Prefix
		healthy    bool
		want       []netip.Prefix
		wantErr    bool
	}{
		{
			name:    "healthy announces both families sorted",
			ipv4:    prefixes("203.0.113.0/25", "198.51.100.0/24"),
			ipv6:    prefixes("2001:db8:64::/96"),
			healthy: true,
			want:    prefixes("198.51.100.0/24", "203.0.113.0/25", "2001:db8:64::/96"),
		},
		{
			name:    "unhealthy announces nothing",
			ipv4:    prefixes("198.51.100.0/24"),
			ipv6:    prefixes("2001:db8:64::/96"),
			healthy: false,
			want:    nil,
		},
		{
			name:    "host bits are masked and duplicates removed",
			ipv4:    prefixes("198.51.100.7/24", "198.51.100.0/24", "198.51.100.10/32"),
			healthy: true,
			want:    prefixes("198.51.100.0/24", "198.51.100.10/32"),
		},
		{
			name:    "IPv6 prefix in the IPv4 list is an error",
			ipv4:    prefixes("2001:db8:64::/96"),
			healthy: true,
			wantErr: true,
		},
		{
			name:    "IPv4 prefix in the IPv6 list is an error even when unhealthy",
			ipv6:    prefixes("198.51.100.0/24"),
			healthy: false,
			wantErr: true,
		},
		{
			name:    "invalid prefix is an error",
			ipv4:    []netip.Prefix{{}},
			healthy: true,
			wantErr: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Desired(tc.ipv4, tc.ipv6, tc.healthy)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDiff(t *testing.T) {
	for _, tc := range []struct {
		name                string
		cur, want           []netip.Prefix
		wantAdd, wantDelete []netip.Prefix
	}{
		{"empty to some", nil, prefixes("198.51.100.0/24", "2001:db8:64::/96"), prefixes("198.51.100.0/24", "2001:db8:64::/96"), nil},
		{"some to empty", prefixes("198.51.100.0/24", "2001:db8:64::/96"), nil, nil, prefixes("198.51.100.0/24", "2001:db8:64::/96")},
		{"unchanged", prefixes("198.51.100.0/24"), prefixes("198.51.100.0/24"), nil, nil},
		{
			"reload swaps one prefix, keeps the rest",
			prefixes("198.51.100.0/24", "203.0.113.0/25", "2001:db8:64::/96"),
			prefixes("198.51.100.0/24", "203.0.113.128/25", "2001:db8:64::/96"),
			prefixes("203.0.113.128/25"),
			prefixes("203.0.113.0/25"),
		},
		{
			"same address, other length",
			prefixes("198.51.100.0/24"),
			prefixes("198.51.100.0/25"),
			prefixes("198.51.100.0/25"),
			prefixes("198.51.100.0/24"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			add, del := Diff(tc.cur, tc.want)
			if !slices.Equal(add, tc.wantAdd) || !slices.Equal(del, tc.wantDelete) {
				t.Errorf("Diff = +%v -%v, want +%v -%v", add, del, tc.wantAdd, tc.wantDelete)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	good := func() Config {
		return Config{
			LocalAS:  64496,
			RouterID: netip.MustParseAddr("192.0.2.2"),
			Neighbors: []Neighbor{
				{Address: netip.MustParseAddr("192.0.2.1"), RemoteAS: 64500},
			},
		}
	}
	if c := good(); c.Validate() != nil {
		t.Fatalf("good config rejected: %v", c.Validate())
	}
	for name, mut := range map[string]func(*Config){
		"no local AS":         func(c *Config) { c.LocalAS = 0 },
		"IPv6 router ID":      func(c *Config) { c.RouterID = netip.MustParseAddr("2001:db8::1") },
		"no router ID":        func(c *Config) { c.RouterID = netip.Addr{} },
		"keepalive >= hold":   func(c *Config) { c.HoldTime, c.Keepalive = 9e9, 9e9 },
		"hold below 3 s":      func(c *Config) { c.HoldTime = 2e9 },
		"neighbor without AS": func(c *Config) { c.Neighbors[0].RemoteAS = 0 },
		"duplicate neighbor":  func(c *Config) { c.Neighbors = append(c.Neighbors, c.Neighbors[0]) },
		"local address of other family": func(c *Config) {
			c.Neighbors[0].LocalAddress = netip.MustParseAddr("2001:db8::2")
		},
		"password too long": func(c *Config) { c.Neighbors[0].Password = string(make([]byte, 81)) },
	} {
		c := good()
		mut(&c)
		if c.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
