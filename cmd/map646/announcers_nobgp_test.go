//go:build nobgp

package main

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/map646/map646/appliance/config"
)

func TestNoBGPRefusesBGPBlock(t *testing.T) {
	src := `
translator {
  prefix = "2001:db8:64::/96"
  mapping {
    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }
}
bgp {
  local_as  = 64496
  router_id = "192.0.2.2"
  neighbor "192.0.2.1" {
    remote_as = 64500
  }
}
`
	c, err := config.Parse([]byte(src), "nobgp.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newBGPAnnouncer(c, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "nobgp") {
		t.Errorf("err = %v, want a refusal naming the build tag", err)
	}
	c.BGP = nil
	if a, err := newBGPAnnouncer(c, slog.New(slog.DiscardHandler)); a != nil || err != nil {
		t.Errorf("without a bgp block: %v, %v", a, err)
	}
}
