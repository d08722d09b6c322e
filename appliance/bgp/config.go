package bgp

import (
	"errors"
	"time"

	"github.com/map646/map646/appliance/config"
)

// FromConfig converts the `bgp` block of the appliance configuration.
func FromConfig(c *config.BGP) (Config, error) {
	if c == nil {
		return Config{}, errors.New("bgp: no bgp block")
	}
	if c.HoldTime == 0 {
		// GoBGP reads a zero hold time as "use the default (90 s)", so the
		// RFC 4271 "no keepalives" setting cannot be honoured: say so.
		return Config{}, errors.New("bgp: hold_time = 0 is not supported by the embedded speaker")
	}
	out := Config{
		LocalAS:         c.LocalAS,
		RouterID:        c.RouterID,
		ListenPort:      c.ListenPort,
		HoldTime:        time.Duration(c.HoldTime) * time.Second,
		Keepalive:       time.Duration(c.Keepalive) * time.Second,
		SendHoldTime:    time.Duration(c.SendHoldTime) * time.Second,
		ConnectRetry:    time.Duration(c.ConnectRetry) * time.Second,
		IPv4NextHopIPv6: c.IPv4NextHopIPv6,
	}
	for _, n := range c.Neighbors {
		out.Neighbors = append(out.Neighbors, Neighbor{
			Address:      n.Address,
			RemoteAS:     n.RemoteAS,
			Password:     n.Password,
			LocalAddress: n.LocalAddress,
			MaxPrefixes:  uint32(n.MaxPrefixes),
		})
	}
	return out, out.Validate()
}
