// Package ra sends IPv6 Router Advertisements (RFC 4861) that carry a Route
// Information Option (RFC 4191) for the translation prefix, so that
// IPv6-only servers on a link learn the way back to IPv4 clients through
// every healthy translator, with a preference, and forget a translator at
// once when it says goodbye with lifetime 0.
package ra

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/mdlayher/ndp"
)

// Config is the router advertisement configuration of one interface.
type Config struct {
	Interface string
	// Preference is the RFC 4191 preference of the routes (and of the
	// router when RouterLifetime > 0): "low", "medium" or "high".
	Preference string
	// RouterLifetime > 0 also offers this translator as a default router;
	// 0 (the usual case) advertises only the routes (RFC 4191 section 3:
	// route information is processed even from a non-default router).
	RouterLifetime time.Duration
	// Interval between unsolicited advertisements; 0 means 30 s.
	Interval time.Duration
	// RouteLifetime of the Route Information Options; 0 means 3 × Interval,
	// so that a translator that dies silently is forgotten after three
	// missed advertisements.
	RouteLifetime time.Duration
}

// Defaults.
const (
	DefaultInterval = 30 * time.Second
	// maxLifetime is the largest lifetime the 16-bit router lifetime field
	// may carry (RFC 4861 section 4.2: 9000 s).
	maxRouterLifetime = 9000 * time.Second
)

// withDefaults fills in the zero values.
func (c Config) withDefaults() Config {
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.RouteLifetime == 0 {
		c.RouteLifetime = 3 * c.Interval
	}
	if c.Preference == "" {
		c.Preference = "medium"
	}
	return c
}

// Validate reports the first problem in c.
func (c Config) Validate() error {
	if c.Interface == "" {
		return fmt.Errorf("ra: no interface")
	}
	if _, err := ParsePreference(c.Preference); err != nil {
		return err
	}
	if c.Interval < 0 || (c.Interval > 0 && c.Interval < time.Second) {
		return fmt.Errorf("ra: %s: interval %v is below 1 s", c.Interface, c.Interval)
	}
	if c.RouterLifetime < 0 || c.RouterLifetime > maxRouterLifetime {
		return fmt.Errorf("ra: %s: router lifetime %v is outside 0..9000 s (RFC 4861 section 4.2)", c.Interface, c.RouterLifetime)
	}
	if c.RouteLifetime < 0 {
		return fmt.Errorf("ra: %s: negative route lifetime", c.Interface)
	}
	d := c.withDefaults()
	if d.RouteLifetime < d.Interval {
		return fmt.Errorf("ra: %s: route lifetime %v is shorter than the interval %v: routes would expire between advertisements", c.Interface, d.RouteLifetime, d.Interval)
	}
	return nil
}

// ParsePreference maps the configuration words to RFC 4191 values.
func ParsePreference(s string) (ndp.Preference, error) {
	switch strings.ToLower(s) {
	case "", "medium":
		return ndp.Medium, nil
	case "high":
		return ndp.High, nil
	case "low":
		return ndp.Low, nil
	}
	return 0, fmt.Errorf("ra: preference %q is not low, medium or high", s)
}

// Message builds one advertisement: a Route Information Option per prefix
// in routes with the configured lifetime, and one with lifetime 0 per prefix
// in gone (withdrawn since the last one). With goodbye, the router lifetime
// and every route lifetime are 0: the final advertisement of RFC 4861
// section 6.2.5, which makes hosts drop this router's routes at once.
func Message(c Config, routes, gone []netip.Prefix, mac net.HardwareAddr, goodbye bool) (*ndp.RouterAdvertisement, error) {
	c = c.withDefaults()
	pref, err := ParsePreference(c.Preference)
	if err != nil {
		return nil, err
	}
	ra := &ndp.RouterAdvertisement{RouterLifetime: c.RouterLifetime}
	if goodbye {
		ra.RouterLifetime = 0
	}
	// RFC 4191 section 2.2: with router lifetime 0 the preference MUST be
	// sent as medium (00).
	if ra.RouterLifetime > 0 {
		ra.RouterSelectionPreference = pref
	}
	if len(mac) > 0 {
		ra.Options = append(ra.Options, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac})
	}
	add := func(p netip.Prefix, lifetime time.Duration) error {
		if !p.Addr().Is6() || p.Addr().Is4In6() {
			return fmt.Errorf("ra: %v is not an IPv6 prefix", p)
		}
		p = p.Masked()
		ra.Options = append(ra.Options, &ndp.RouteInformation{
			PrefixLength:  uint8(p.Bits()),
			Preference:    pref,
			RouteLifetime: lifetime,
			Prefix:        p.Addr(),
		})
		return nil
	}
	for _, p := range routes {
		lt := c.RouteLifetime
		if goodbye {
			lt = 0
		}
		if err := add(p, lt); err != nil {
			return nil, err
		}
	}
	for _, p := range gone {
		if err := add(p, 0); err != nil {
			return nil, err
		}
	}
	return ra, nil
}
