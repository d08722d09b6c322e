package ra

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/map646/map646/appliance/config"
	"github.com/mdlayher/ndp"
)

var mac = net.HardwareAddr{0x02, 0, 0x5e, 0, 0x53, 0x01}

// rios returns the Route Information Options of m by prefix.
func rios(m *ndp.RouterAdvertisement) map[netip.Prefix]*ndp.RouteInformation {
	out := map[netip.Prefix]*ndp.RouteInformation{}
	for _, o := range m.Options {
		if ri, ok := o.(*ndp.RouteInformation); ok {
			out[netip.PrefixFrom(ri.Prefix, int(ri.PrefixLength))] = ri
		}
	}
	return out
}

func TestMessage(t *testing.T) {
	p96 := netip.MustParsePrefix("2001:db8:64::/96")
	p64 := netip.MustParsePrefix("2001:db8:65::/64")
	type rio struct {
		pref     ndp.Preference
		lifetime time.Duration
	}
	for _, tc := range []struct {
		name           string
		cfg            Config
		routes, gone   []netip.Prefix
		goodbye        bool
		wantRouterLife time.Duration
		wantRouterPref ndp.Preference
		want           map[netip.Prefix]rio
	}{
		{
			name:   "defaults: medium, 3 x 30 s, not a default router",
			cfg:    Config{Interface: "eth1"},
			routes: []netip.Prefix{p96},
			want:   map[netip.Prefix]rio{p96: {ndp.Medium, 90 * time.Second}},
		},
		{
			name:   "high preference and explicit lifetime",
			cfg:    Config{Interface: "eth1", Preference: "high", Interval: 10 * time.Second, RouteLifetime: 45 * time.Second},
			routes: []netip.Prefix{p96},
			want:   map[netip.Prefix]rio{p96: {ndp.High, 45 * time.Second}},
		},
		{
			name:           "default router carries the router preference",
			cfg:            Config{Interface: "eth1", Preference: "low", RouterLifetime: 1800 * time.Second},
			routes:         []netip.Prefix{p96},
			wantRouterLife: 1800 * time.Second,
			wantRouterPref: ndp.Low,
			want:           map[netip.Prefix]rio{p96: {ndp.Low, 90 * time.Second}},
		},
		{
			name:   "withdrawn route is sent with lifetime 0",
			cfg:    Config{Interface: "eth1", Preference: "high"},
			routes: []netip.Prefix{p64},
			gone:   []netip.Prefix{p96},
			want:   map[netip.Prefix]rio{p64: {ndp.High, 90 * time.Second}, p96: {ndp.High, 0}},
		},
		{
			name:    "goodbye zeroes every lifetime",
			cfg:     Config{Interface: "eth1", Preference: "high", RouterLifetime: 600 * time.Second},
			routes:  []netip.Prefix{p96, p64},
			goodbye: true,
			want:    map[netip.Prefix]rio{p64: {ndp.High, 0}, p96: {ndp.High, 0}},
		},
		{
			name:   "host bits are cleared",
			cfg:    Config{Interface: "eth1"},
			routes: []netip.Prefix{netip.MustParsePrefix("2001:db8:64::1/96")},
			want:   map[netip.Prefix]rio{p96: {ndp.Medium, 90 * time.Second}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Message(tc.cfg, tc.routes, tc.gone, mac, tc.goodbye)
			if err != nil {
				t.Fatal(err)
			}
			// Through the wire format and back, so that what is checked is
			// what a host receives.
			b, err := ndp.MarshalMessage(m)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := ndp.ParseMessage(b)
			if err != nil {
				t.Fatal(err)
			}
			got := parsed.(*ndp.RouterAdvertisement)
			if got.RouterLifetime != tc.wantRouterLife || got.RouterSelectionPreference != tc.wantRouterPref {
				t.Errorf("router lifetime %v pref %v, want %v %v", got.RouterLifetime, got.RouterSelectionPreference, tc.wantRouterLife, tc.wantRouterPref)
			}
			r := rios(got)
			if len(r) != len(tc.want) {
				t.Errorf("RIOs %v, want %v", r, tc.want)
			}
			for p, w := range tc.want {
				ri, ok := r[p]
				if !ok {
					t.Errorf("no RIO for %v", p)
					continue
				}
				if ri.Preference != w.pref || ri.RouteLifetime != w.lifetime {
					t.Errorf("%v: pref %v lifetime %v, want %v %v", p, ri.Preference, ri.RouteLifetime, w.pref, w.lifetime)
				}
			}
			var sawMAC bool
			for _, o := range got.Options {
				if l, ok := o.(*ndp.LinkLayerAddress); ok && l.Direction == ndp.Source && l.Addr.String() == mac.String() {
					sawMAC = true
				}
			}
			if !sawMAC {
				t.Error("no source link-layer address option")
			}
		})
	}
}

func TestMessageRejectsIPv4(t *testing.T) {
	if _, err := Message(Config{Interface: "eth1"}, []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, nil, nil, false); err == nil {
		t.Error("IPv4 prefix accepted")
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{Interface: "eth1"}, true},
		{Config{Interface: "eth1", Preference: "HIGH", Interval: 4 * time.Second, RouteLifetime: 12 * time.Second}, true},
		{Config{}, false},
		{Config{Interface: "eth1", Preference: "urgent"}, false},
		{Config{Interface: "eth1", Interval: 500 * time.Millisecond}, false},
		{Config{Interface: "eth1", RouterLifetime: 9001 * time.Second}, false},
		{Config{Interface: "eth1", Interval: 60 * time.Second, RouteLifetime: 30 * time.Second}, false},
		{Config{Interface: "eth1", RouteLifetime: -time.Second}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v, want ok=%v", tc.cfg, err, tc.ok)
		}
	}
}

func TestFromConfig(t *testing.T) {
	got := FromConfig([]config.RouterAdvertisement{
		{Interface: "eth1", Preference: "high", RouterLifetime: 0, Interval: 10, RouteLifetime: 30},
	})
	want := Config{Interface: "eth1", Preference: "high", Interval: 10 * time.Second, RouteLifetime: 30 * time.Second}
	if len(got) != 1 || got[0] != want {
		t.Errorf("FromConfig = %+v, want %+v", got, want)
	}
	if err := got[0].Validate(); err != nil {
		t.Error(err)
	}
}

func TestStartSetBadInterface(t *testing.T) {
	s, err := StartSet([]Config{{Interface: "fo-nosuch0"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "fo-nosuch0") {
		t.Errorf("StartSet = %v, %v; want an error naming the interface", s, err)
	}
	if _, err := StartSet([]Config{{Interface: "eth1", Preference: "urgent"}}, nil); err == nil {
		t.Error("invalid configuration accepted")
	}
}
