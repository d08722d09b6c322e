//go:build !nobgp

package main

import (
	"context"
	"log/slog"

	"github.com/map646/map646/appliance/bgp"
	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/daemon"
)

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
