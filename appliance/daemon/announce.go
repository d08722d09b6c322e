package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	"github.com/map646/map646/appliance/config"
)

// Announcement is what the translator asks the network to route to it:
// the mapped IPv4 prefixes (aggregated) towards the IPv4 side and the
// RFC 6052 prefix towards the servers. Healthy is false while the data
// path is not forwarding; announcers withdraw then, so that traffic moves
// to the other translators.
type Announcement struct {
	IPv4, IPv6 []netip.Prefix
	Healthy    bool
}

// Equal reports whether two announcements say the same.
func (a Announcement) Equal(b Announcement) bool {
	return a.Healthy == b.Healthy && slices.Equal(a.IPv4, b.IPv4) && slices.Equal(a.IPv6, b.IPv6)
}

// Announcer tells routers about the translator: a BGP speaker, router
// advertisements. The daemon calls Update at start, after every reload
// and whenever the data path's health changes, and Close at shutdown,
// before it removes its routes.
type Announcer interface {
	Update(ctx context.Context, a Announcement) error
	Status() any
	Close(ctx context.Context) error
}

// AnnouncerFactory builds an announcer from the configuration. It returns
// nil, nil when its configuration block is absent.
type AnnouncerFactory func(cfg *config.Config, log *slog.Logger) (Announcer, error)

// AnnouncerKind is one kind of announcer the daemon may start.
type AnnouncerKind struct {
	Name string
	New  AnnouncerFactory
}

// runningAnnouncer is an announcer the daemon started, with its name.
type runningAnnouncer struct {
	name string
	a    Announcer
}

// startAnnouncers builds every announcer of kinds whose configuration is
// present. On error the ones already built are closed.
func startAnnouncers(ctx context.Context, kinds []AnnouncerKind, cfg *config.Config, log *slog.Logger) ([]runningAnnouncer, error) {
	var out []runningAnnouncer
	for _, k := range kinds {
		a, err := k.New(cfg, log.With("announcer", k.Name))
		if err != nil {
			closeAnnouncers(ctx, out, log)
			return nil, fmt.Errorf("announcer %s: %w", k.Name, err)
		}
		if a != nil {
			out = append(out, runningAnnouncer{k.Name, a})
		}
	}
	return out, nil
}

func closeAnnouncers(ctx context.Context, as []runningAnnouncer, log *slog.Logger) {
	for i := len(as) - 1; i >= 0; i-- {
		if err := as[i].a.Close(ctx); err != nil {
			log.Warn("closing announcer", "announcer", as[i].name, "err", err)
		}
	}
}
