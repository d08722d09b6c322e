//go:build nobgp

package main

import (
	"errors"
	"log/slog"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/daemon"
)

// Built with -tags nobgp, map646 leaves GoBGP out (about 13 MB of the
// binary) and refuses a configuration that asks for BGP rather than run
// without announcing.
func newBGPAnnouncer(cfg *config.Config, _ *slog.Logger) (daemon.Announcer, error) {
	if cfg.BGP == nil {
		return nil, nil
	}
	return nil, errors.New("this map646 was built without BGP (-tags nobgp); remove the bgp block or use a full build")
}
