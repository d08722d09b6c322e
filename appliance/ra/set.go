package ra

import (
	"errors"
	"log/slog"
	"net/netip"
	"time"

	"github.com/map646/map646/appliance/config"
)

// FromConfig converts the `router_advertisement` blocks of the appliance
// configuration.
func FromConfig(blocks []config.RouterAdvertisement) []Config {
	out := make([]Config, 0, len(blocks))
	for _, b := range blocks {
		out = append(out, Config{
			Interface:      b.Interface,
			Preference:     b.Preference,
			RouterLifetime: time.Duration(b.RouterLifetime) * time.Second,
			Interval:       time.Duration(b.Interval) * time.Second,
			RouteLifetime:  time.Duration(b.RouteLifetime) * time.Second,
		})
	}
	return out
}

// Set is the advertisers of all configured interfaces, driven together.
type Set struct {
	advs []*Advertiser
}

// StartSet starts one advertiser per configuration; if one fails, those
// already started are closed again.
func StartSet(cfgs []Config, log *slog.Logger) (*Set, error) {
	s := &Set{}
	for _, c := range cfgs {
		a, err := Start(c, log)
		if err != nil {
			return nil, errors.Join(err, s.Close())
		}
		s.advs = append(s.advs, a)
	}
	return s, nil
}

// Update advertises routes on every interface (see Advertiser.Update).
func (s *Set) Update(routes []netip.Prefix, healthy bool) error {
	var errs []error
	for _, a := range s.advs {
		errs = append(errs, a.Update(routes, healthy))
	}
	return errors.Join(errs...)
}

// Close says goodbye on every interface.
func (s *Set) Close() error {
	var errs []error
	for _, a := range s.advs {
		errs = append(errs, a.Close())
	}
	return errors.Join(errs...)
}

// Status returns one Status per interface.
func (s *Set) Status() Statuses {
	out := make(Statuses, 0, len(s.advs))
	for _, a := range s.advs {
		out = append(out, a.Status())
	}
	return out
}
