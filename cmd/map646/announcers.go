package main

import (
	"context"
	"log/slog"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/daemon"
	"github.com/map646/map646/appliance/ra"
)

// announcers are the announcers the daemon starts when their
// configuration block is present: the BGP speaker (the mapped IPv4
// prefixes and the /96 towards routers) and router advertisements (the
// /96 towards the servers' link).
func announcers() []daemon.AnnouncerKind {
	return []daemon.AnnouncerKind{
		{Name: "bgp", New: newBGPAnnouncer, // announcers_bgp.go or announcers_nobgp.go
			Settings: func(c *config.Config) any { return c.BGP }},
		{Name: "ra", New: newRAAnnouncer,
			Settings: func(c *config.Config) any { return c.RouterAdvertisements }},
	}
}

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
