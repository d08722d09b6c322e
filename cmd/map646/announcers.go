package main

import (
	"context"
	"log/slog"

	"github.com/map646/map646/appliance/bgp"
	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/daemon"
	"github.com/map646/map646/appliance/ra"
)

// The daemon announces the translator's prefixes through every announcer
// registered here whose configuration block is present: the BGP speaker
// (the mapped IPv4 prefixes and the /96 towards routers) and router
// advertisements (the /96 towards the servers' link).
func init() {
	daemon.RegisterAnnouncer("bgp", newBGPAnnouncer)
	daemon.RegisterAnnouncer("ra", newRAAnnouncer)
}

type bgpAnnouncer struct{ s *bgp.Speaker }

func newBGPAnnouncer(cfg *config.Config, log *slog.Logger) (daemon.Announcer, error) {
	if cfg.BGP == nil {
		return nil, nil
	}
	bc, err := bgp.FromConfig(cfg.BGP)
	if err != nil {
		return nil, err
	}
	s, err := bgp.New(context.Background(), bc, log)
	if err != nil {
		return nil, err
	}
	return bgpAnnouncer{s}, nil
}

func (b bgpAnnouncer) Update(ctx context.Context, a daemon.Announcement) error {
	return b.s.Update(ctx, a.IPv4, a.IPv6, a.Healthy)
}
func (b bgpAnnouncer) Status() any                     { return b.s.Status() }
func (b bgpAnnouncer) Close(ctx context.Context) error { return b.s.Close(ctx) }

type raAnnouncer struct{ s *ra.Set }

func newRAAnnouncer(cfg *config.Config, log *slog.Logger) (daemon.Announcer, error) {
	if len(cfg.RouterAdvertisements) == 0 {
		return nil, nil
	}
	s, err := ra.StartSet(ra.FromConfig(cfg.RouterAdvertisements), log)
	if err != nil {
		return nil, err
	}
	return raAnnouncer{s}, nil
}

// Update advertises the RFC 6052 prefix: the IPv4 prefixes are of no use
// to hosts on the IPv6 side.
func (r raAnnouncer) Update(_ context.Context, a daemon.Announcement) error {
	return r.s.Update(a.IPv6, a.Healthy)
}
func (r raAnnouncer) Status() any                 { return r.s.Status() }
func (r raAnnouncer) Close(context.Context) error { return r.s.Close() }
