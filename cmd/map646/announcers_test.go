//go:build !nobgp

package main

import (
	"context"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/map646/map646/appliance/bgp"
	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/daemon"
)

const announcerBase = `
translator {
  prefix = "2001:db8:64::/96"
  mapping {
    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }
}
`

func parseConfig(t *testing.T, src string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(src), "announcers.hcl")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAnnouncersAbsentWithoutBlocks(t *testing.T) {
	c := parseConfig(t, announcerBase)
	for name, f := range map[string]func(*config.Config, *slog.Logger) (daemon.Announcer, error){
		"bgp": newBGPAnnouncer, "ra": newRAAnnouncer,
	} {
		a, err := f(c, slog.New(slog.DiscardHandler))
		if a != nil || err != nil {
			t.Errorf("%s without its block: %v, %v; want nil, nil", name, a, err)
		}
	}
}

func TestBGPAnnouncer(t *testing.T) {
	// Dial-only, to a neighbor on loopback where nothing listens: the
	// session stays down, the announcements are still tracked.
	c := parseConfig(t, announcerBase+`
bgp {
  local_as  = 64496
  router_id = "192.0.2.2"
  neighbor "127.0.0.1" {
    remote_as = 64500
  }
}
`)
	a, err := newBGPAnnouncer(c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	err = a.Update(ctx, daemon.Announcement{
		IPv4:    []netip.Prefix{netip.MustParsePrefix("198.51.100.10/32")},
		IPv6:    []netip.Prefix{netip.MustParsePrefix("2001:db8:64::/96")},
		Healthy: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	st, ok := a.Status().(bgp.Status)
	if !ok || !slices.Equal(st.Announced, []string{"198.51.100.10/32", "2001:db8:64::/96"}) || st.LocalAS != 64496 ||
		len(st.Neighbors) != 1 || st.Neighbors[0].Address != "127.0.0.1" || st.Neighbors[0].Established {
		t.Errorf("status %+v", a.Status())
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRAAnnouncerBadInterface(t *testing.T) {
	c := parseConfig(t, announcerBase+`
router_advertisement "fo-nosuch0" {
  preference = "high"
}
`)
	if _, err := newRAAnnouncer(c, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "fo-nosuch0") {
		t.Errorf("err = %v, want one naming the interface", err)
	}
}

// TestAnnouncerSettingsAreTheirOwnBlock: a reload restarts an announcer
// only when its Settings change, so each kind's must follow its own block
// and nothing else (an RA-only change must not restart BGP sessions).
func TestAnnouncerSettingsAreTheirOwnBlock(t *testing.T) {
	const bgpBlock = "bgp {\n  local_as = 64512\n  router_id = \"203.0.113.1\"\n  neighbor \"203.0.113.14\" { remote_as = 64500 }\n}\n"
	base := parseConfig(t, announcerBase+bgpBlock)
	withRA := parseConfig(t, announcerBase+bgpBlock+"router_advertisement \"eth1\" {}\n")
	otherAS := parseConfig(t, announcerBase+strings.Replace(bgpBlock, "64500", "64501", 1)+"router_advertisement \"eth1\" {}\n")
	for _, k := range announcers() {
		same := map[string][2]bool{"bgp": {true, false}, "ra": {false, true}}[k.Name]
		if got := reflect.DeepEqual(k.Settings(base), k.Settings(withRA)); got != same[0] {
			t.Errorf("%s: settings equal after adding router_advertisement: %v, want %v", k.Name, got, same[0])
		}
		if got := reflect.DeepEqual(k.Settings(withRA), k.Settings(otherAS)); got != same[1] {
			t.Errorf("%s: settings equal after changing a neighbor's AS: %v, want %v", k.Name, got, same[1])
		}
	}
}
