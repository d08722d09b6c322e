package bgp

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/map646/map646/appliance/config"
)

func TestFromConfig(t *testing.T) {
	src := `
translator {
  prefix = "2001:db8:64::/96"
  mapping {
    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }
}
bgp {
  local_as          = 64496
  router_id         = "192.0.2.2"
  listen_port       = 179
  hold_time         = 9
  send_hold_time    = 60
  connect_retry     = 5
  ipv4_nexthop_ipv6 = true
  neighbor "192.0.2.1" {
    remote_as     = 64500
    password      = "doc-example-secret"
    local_address = "192.0.2.2"
  }
  neighbor "2001:db8:ff::1" {
    remote_as = 64500
  }
}
`
	c, err := config.Parse([]byte(src), "test.hcl")
	if err != nil {
		t.Fatal(err)
	}
	got, err := FromConfig(c.BGP)
	if err != nil {
		t.Fatal(err)
	}
	if got.LocalAS != 64496 || got.RouterID != netip.MustParseAddr("192.0.2.2") || got.ListenPort != 179 ||
		got.HoldTime != 9*time.Second || got.Keepalive != 3*time.Second || got.SendHoldTime != time.Minute || got.ConnectRetry != 5*time.Second || !got.IPv4NextHopIPv6 {
		t.Errorf("global %+v", got)
	}
	if len(got.Neighbors) != 2 {
		t.Fatalf("neighbors %+v", got.Neighbors)
	}
	n := got.Neighbors[0]
	if n.Address != netip.MustParseAddr("192.0.2.1") || n.RemoteAS != 64500 || n.Password != "doc-example-secret" || n.LocalAddress != netip.MustParseAddr("192.0.2.2") {
		t.Errorf("neighbor %+v", n)
	}

	c.BGP.HoldTime, c.BGP.Keepalive = 0, 0
	if _, err := FromConfig(c.BGP); err == nil || !strings.Contains(err.Error(), "hold_time") {
		t.Errorf("hold_time 0: err = %v", err)
	}
	if _, err := FromConfig(nil); err == nil {
		t.Error("nil block accepted")
	}
}
